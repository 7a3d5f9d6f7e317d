"""Running a model at the pixel size it was trained at.

A model trained at `p` µm/px sees nuclei of a known size in pixels; an image at another pixel size
is resampled by `zoom = image µm/px / p` before the model and its results brought back to the image's
pixels (labels by nearest neighbour, probabilities bilinearly), so objects come back at full
resolution. Where the image's pixel size is unknown, `estimate_pixel_size` measures it the way
Cellpose estimates cell diameters (Stringer et al., Nat. Methods 2021): segment once at the model's
own scale, compare the median object diameter with the training data's (recorded in the checkpoint
as `training.data.median_diameter_px`), and deduce the pixel size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint
from segmenter.registry import from_checkpoint

log = logging.getLogger(__name__)

SCALE_TOLERANCE = 0.1  # relative pixel-size difference below which images are used as they are
PIXEL_SIZE_RANGE_UM = (0.1, 2.0)  # estimates are clipped to this range (100× to 5× objectives)
MIN_OBJECTS = 10  # fewer objects found at the model's scale: the estimate keeps the model's own scale


def _resize(array: np.ndarray, rows: int, cols: int, interpolation: int) -> np.ndarray:
    """A H×W or H×W×C array resized to rows × cols (channels kept)."""
    resized = cv2.resize(array, (cols, rows), interpolation=interpolation)
    return resized[..., None] if array.ndim == 3 and resized.ndim == 2 else resized


def _relabelled(labels: np.ndarray, found: Instances) -> Instances:
    """Instances whose labels were resized: objects that vanished are dropped, the others renumbered."""
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(int(found.labels.max()) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, len(present) + 1)
    return Instances(lookup[labels], found.scores[present - 1], found.classes[present - 1], found.extra)


class Rescaled(Segmenter):
    """A segmenter run on images resampled by `zoom` (model px per image px), results at the image's size."""

    name = "rescaled"

    def __init__(self, inner: Segmenter, zoom: float) -> None:
        super().__init__(inner.class_names, device=inner.device)
        if not zoom > 0:
            raise ValueError(f"zoom must be positive, got {zoom}")
        self.inner, self.zoom = inner, float(zoom)

    @property
    def backend(self) -> str:
        return self.inner.backend

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None, *,
                        pixel_size_um: float, **options: Any) -> Segmenter:
        """The checkpoint's segmenter for images of `pixel_size_um`, resampled only when that differs from
        the model's own pixel size by more than SCALE_TOLERANCE (or the model's is unknown: never)."""
        inner = from_checkpoint(checkpoint, device=device, **options)
        zoom = zoom_for(checkpoint.pixel_size_um, pixel_size_um)
        return inner if zoom == 1.0 else cls(inner, zoom)

    def _scaled(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image in images:
            image = np.asarray(image, dtype=np.float32)
            rows, cols = (max(1, round(n * self.zoom)) for n in image.shape[:2])
            out.append(_resize(image, rows, cols, cv2.INTER_AREA if self.zoom < 1 else cv2.INTER_LINEAR))
        return out

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        probas = self.inner.predict_proba_batch(self._scaled(images))
        return [np.stack([cv2.resize(channel, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
                          for channel in proba]) for proba, image in zip(probas, images)]

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        results = []
        for found, image in zip(self.inner.instances_batch(self._scaled(images)), images):
            labels = cv2.resize(found.labels.astype(np.int32), (image.shape[1], image.shape[0]),
                                interpolation=cv2.INTER_NEAREST_EXACT)
            results.append(_relabelled(labels, found))
        return results


def zoom_for(model_pixel_size_um: float | None, image_pixel_size_um: float | None) -> float:
    """Model px per image px (1 when either size is unknown or they are within SCALE_TOLERANCE)."""
    if not model_pixel_size_um or not image_pixel_size_um:
        return 1.0
    if image_pixel_size_um <= 0:
        raise ValueError(f"pixel size must be positive, got {image_pixel_size_um} µm/px")
    zoom = image_pixel_size_um / model_pixel_size_um
    return 1.0 if abs(zoom - 1.0) <= SCALE_TOLERANCE else zoom


def median_diameter(labels: np.ndarray) -> float:
    """The equivalent diameter (px) of the median-area object of a label image (0 without objects)."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(4 * np.median(areas) / np.pi)) if areas.size else 0.0


@dataclass(frozen=True)
class PixelSizeEstimate:
    """An image's pixel size as measured from its objects, and how."""

    pixel_size_um: float | None
    reason: str


def estimate_pixel_size(model: Segmenter, checkpoint: Checkpoint, image: np.ndarray) -> PixelSizeEstimate:
    """The pixel size at which `image`'s objects have the training data's median diameter (None, with the
    reason, when the model records no pixel size or diameter, or too few objects are found)."""
    training_diameter = checkpoint.training.get("data", {}).get("median_diameter_px")
    if not checkpoint.pixel_size_um or not training_diameter:
        return PixelSizeEstimate(None, "the model records no pixel size or object diameter")
    labels = model.instances(image).labels
    count = int(labels.max()) if labels.size else 0
    if count < MIN_OBJECTS:
        return PixelSizeEstimate(None, f"only {count} objects at the model's scale (fewer than {MIN_OBJECTS})")
    diameter = median_diameter(labels)
    low, high = PIXEL_SIZE_RANGE_UM
    size = float(np.clip(checkpoint.pixel_size_um * training_diameter / diameter, low, high))
    return PixelSizeEstimate(size, f"median object diameter {diameter:.1f} px at the model's scale "
                                   f"vs {training_diameter:.1f} px in training: ≈{size:.2f} µm/px")
