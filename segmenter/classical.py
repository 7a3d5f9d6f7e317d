"""The classical baseline as a Segmenter: Otsu's threshold and a distance-transform watershed, no network.

It answers "is the model worth it?" in the same `cyseg evaluate` run as the models (shipped as
`otsu`). Grey images are used as they are; RGB brightfield images through their hematoxylin
optical density (scikit-image's `rgb2hed`, Ruifrok & Johnston 2001). The signal is
percentile-normalised, thresholded at Otsu's level of that image, then split and cleaned by the
checkpoint's `PostProcess` (its own threshold is ignored).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint
from transforms import Normalization, PostProcess

#: Options every family accepts that mean nothing without a network.
_NETWORK_OPTIONS = {"backend", "precision", "batch_size", "tta"}


def nuclear_signal(image: np.ndarray) -> np.ndarray:
    """Float H×W where nuclei are bright: the grey image, or the hematoxylin optical density of an RGB one."""
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return image.reshape(image.shape[:2]).astype(np.float32)
    if image.ndim == 3 and image.shape[2] == 3:
        return rgb2hed(image)[..., 0].astype(np.float32)
    raise ValueError(f"expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")


class OtsuWatershed(Segmenter):
    """Otsu's threshold per image, then `postprocess`'s watershed split and size limits."""

    name = "otsu"

    def __init__(self, postprocess: PostProcess, normalization: Normalization | None = None,
                 device: str | torch.device | None = None):
        super().__init__(["background", "nucleus"], device=device)
        self.postprocess = postprocess
        self.normalization = normalization or Normalization(kind="percentile", low=1.0, high=99.8)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None,
                        **options: Any) -> "OtsuWatershed":
        unknown = set(options) - _NETWORK_OPTIONS
        if unknown:
            raise ValueError(f"the {cls.name} baseline takes no options {sorted(unknown)}")
        return cls(PostProcess.from_dict(checkpoint.postprocess), Normalization.from_dict(checkpoint.normalization),
                   device=device)

    def _unit(self, image: np.ndarray) -> np.ndarray:
        return np.clip(self.normalization(nuclear_signal(image)[..., None])[..., 0], 0.0, 1.0)

    def _labels(self, image: np.ndarray) -> np.ndarray:
        unit = self._unit(image)
        level = float(threshold_otsu(unit)) if np.ptp(unit) > 0 else 1.0
        return dataclasses.replace(self.postprocess, threshold=level)(unit)

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        masks = [(self._labels(image) > 0).astype(np.float32) for image in images]
        return [np.stack([1 - mask, mask]) for mask in masks]

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        out = []
        for image in images:
            labels = self._labels(image)
            n = int(labels.max())
            out.append(Instances(labels, np.ones(n, np.float32), np.ones(n, np.int64)))
        return out

    def to_checkpoint(self) -> Checkpoint:
        """The checkpoint `from_checkpoint` rebuilds this baseline from (no weights)."""
        return Checkpoint(family=self.name, architecture={}, class_names=self.class_names, in_channels=1,
                          normalization=self.normalization.to_dict(), state_dict={},
                          postprocess=self.postprocess.to_dict())
