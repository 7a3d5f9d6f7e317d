"""The detection family of the Segmenter interface: one star-convex polygon per object, with a
score and a class.

Why this design. A U-Net mask split by watershed (the "unet" family) guesses where one nucleus
ends and the next begins from the mask's shape, so clusters are under- or over-split. Here the
network says it directly: our U-Net (same encoder and decoder, so nuclei weights transfer) ends
in three heads,

- per class an **object-probability map** (StarDist: Schmidt et al. 2018, "Cell detection with
  star-convex polygons"): a pixel's distance to its object's boundary over the object's largest,
  so it peaks at each object's centre; the peak's height is the object's score, the channel its class
  (one object per cell, as in CenterNet's "objects as points", Zhou et al. 2019);
- **star-convex distances** along `n_rays` rays from the pixels near a centre to the object's
  boundary, which give each peak an outline (boxes, the minimum, are its bounding box);
- a **foreground** probability that, when the model was trained with masks, trims the polygons to
  the object's pixels.

Decoding needs no anchors or box regression (and no torchvision): local maxima of the probability
above `score_threshold`, their polygons, greedy polygon non-maximum suppression (`nms_iou`), and
rasterisation in increasing score order (an object left with less than `min_visible` of its polygon
is a duplicate that better ones covered).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segmenter.backend import MAX_BATCH, build_runner, runner_device
from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint
from segmenter.inputs import as_image_list, padded_batch, to_channels
from segmenter.star import polygon_vertices, rasterize, suppress, to_polygon
from segmenter.unet import UNet
from transforms import Normalization
from transforms._validation import from_known_fields

PEAK_WINDOW = 3  # a peak is the maximum of its PEAK_WINDOW × PEAK_WINDOW neighbourhood
MAX_CANDIDATES = 5000  # best-scoring peaks per image kept for suppression (bounds the cost on noise)


@dataclass(frozen=True)
class Heads:
    """Where each head lives among the network's output channels: class probability maps, then rays,
    then foreground; ray outputs are distances divided by `ray_scale`."""

    n_classes: int
    n_rays: int = 32
    ray_scale: float = 16.0

    @property
    def channels(self) -> int:
        return self.n_classes + self.n_rays + 1

    @property
    def rays(self) -> slice:
        return slice(self.n_classes, self.n_classes + self.n_rays)

    @property
    def foreground(self) -> int:
        return self.n_classes + self.n_rays


@dataclass(frozen=True)
class Decoding:
    """How heads become objects (stored as the checkpoint's `postprocess`)."""

    score_threshold: float = 0.5
    nms_iou: float = 0.3
    foreground_refine: bool = True
    min_size: int = 10
    min_visible: float = 0.5  # share of its polygon an object must keep after better ones are drawn over it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decoding":
        return from_known_fields(cls, d)


def build_network(architecture: dict[str, Any]) -> tuple[UNet, Heads]:
    """The U-Net and its head layout from a checkpoint's `architecture`."""
    heads = Heads(architecture["n_classes"], architecture["n_rays"], architecture["ray_scale"])
    network = UNet(architecture["in_channels"], heads.channels, architecture["depth"],
                   architecture["n_filters"], architecture["batch_norm"])
    network.heads = heads
    return network, heads


@dataclass
class HeadMaps:
    """One image's decoded head outputs: class object probabilities (K×H×W), ray distances in pixels
    (R×H×W), foreground probability (H×W), and the heat-map peaks (P×2 row, col)."""

    heat: np.ndarray
    rays: np.ndarray
    foreground: np.ndarray
    peaks: np.ndarray


class DetectionSegmenter(Segmenter):
    """Objects as star-convex polygons found from centre peaks; see the module docstring. `backend`,
    `precision` and `batch_size` as for `UNetSegmenter`."""

    name = "detection"

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device | None = None,
                 batch_size: int | None = None, threshold: float | None = None, backend: str = "torch",
                 precision: str = "fp32", tta: bool = False):
        if tta:
            raise ValueError("the detection model has no test-time augmentation (its ray distances are not "
                             "averaged over flips); run it without tta")
        super().__init__(checkpoint.class_names, runner_device(backend, device))
        self.checkpoint = checkpoint
        self.network, self.heads = build_network(checkpoint.architecture)
        self.network.load_state_dict(checkpoint.state_dict)
        self.network.to(self.device).eval()
        self.runner = build_runner(self.network, self.device, backend, precision)
        self.in_channels = checkpoint.in_channels
        self.normalization = Normalization.from_dict(checkpoint.normalization)
        decoding = Decoding.from_dict(checkpoint.postprocess)
        if threshold is not None:
            decoding = Decoding(**{**decoding.to_dict(), "score_threshold": float(threshold)})
        self.decoding = decoding
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None,
                        **options: Any) -> "DetectionSegmenter":
        return cls(checkpoint, device=device, **options)

    def head_maps_batch(self, images: np.ndarray | Sequence[np.ndarray],
                        peak_threshold: float | None = None) -> list[HeadMaps]:
        """The decoded heads of each image (peaks above `peak_threshold`, default the model's)."""
        threshold = self.decoding.score_threshold if peak_threshold is None else peak_threshold
        images = [self.normalization(to_channels(image, self.in_channels)) for image in as_image_list(images)]
        maps: list[HeadMaps] = []
        step = self.batch_size or MAX_BATCH
        for start in range(0, len(images), step):
            maps.extend(self._forward(images[start:start + step], threshold))
        return maps

    def _forward(self, images: list[np.ndarray], threshold: float) -> list[HeadMaps]:
        heads = self.heads
        with torch.inference_mode():
            out = self.runner(padded_batch(images, self.network.multiple), split=self.batch_size is None)
            heat = torch.sigmoid(out[:, :heads.n_classes])
            best = heat.amax(dim=1, keepdim=True)
            is_peak = (best == F.max_pool2d(best, PEAK_WINDOW, 1, PEAK_WINDOW // 2)) & (best > threshold)
            rays = torch.relu(out[:, heads.rays]) * heads.ray_scale
            foreground = torch.sigmoid(out[:, heads.foreground])
            heat, rays, foreground, is_peak = (t.float().cpu().numpy() for t in (heat, rays, foreground, is_peak))
        maps = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            maps.append(HeadMaps(heat[i, :, :h, :w], rays[i, :, :h, :w], foreground[i, :h, :w],
                                 np.argwhere(is_peak[i, 0, :h, :w])))
        return maps

    def instances_from_maps(self, maps: HeadMaps, decoding: Decoding | None = None) -> Instances:
        """Objects of one image's head maps: peaks -> polygons -> suppression -> label image."""
        decoding = decoding or self.decoding
        shape = maps.foreground.shape
        rows, cols = maps.peaks[:, 0], maps.peaks[:, 1]
        scores = maps.heat[:, rows, cols].max(axis=0) if len(maps.peaks) else np.zeros(0, np.float32)
        keep = np.flatnonzero(scores > decoding.score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")[:MAX_CANDIDATES]]
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
        classes = maps.heat[:, rows, cols].argmax(axis=0) + 1 if len(rows) else np.zeros(0, np.int64)
        vertices = [polygon_vertices((r, c), np.maximum(maps.rays[:, r, c], 0.5)) for r, c in zip(rows, cols)]
        kept = suppress([to_polygon(v) for v in vertices], scores, decoding.nms_iou) if vertices else []
        kept.sort(key=lambda i: (scores[i], -i))  # drawn weakest first: the best score wins shared pixels
        labels, areas = rasterize([vertices[i] for i in kept], shape)
        if decoding.foreground_refine:
            labels[maps.foreground < 0.5] = 0
        sizes = np.bincount(labels.ravel(), minlength=len(kept) + 1)[1:]
        present = np.flatnonzero((sizes >= max(1, decoding.min_size)) & (sizes >= decoding.min_visible * areas))
        relabel = np.zeros(len(kept) + 1, dtype=np.int32)
        relabel[present + 1] = np.arange(1, len(present) + 1)
        chosen = np.asarray(kept, dtype=np.int64)[present]
        return Instances(labels=relabel[labels], scores=scores[chosen].astype(np.float32),
                         classes=classes[chosen].astype(np.int32))

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        return [self.instances_from_maps(maps) for maps in self.head_maps_batch(images)]

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per class, the score of the object covering each pixel (background: one minus that)."""
        probas = []
        for found in self.instances_batch(images):
            proba = np.zeros((len(self.class_names),) + found.labels.shape, dtype=np.float32)
            score = np.concatenate([[0.0], found.scores]).astype(np.float32)[found.labels]
            cls = np.concatenate([[0], found.classes])[found.labels]
            for c in range(1, len(self.class_names)):
                proba[c] = np.where(cls == c, score, 0.0)
            proba[0] = 1.0 - proba[1:].sum(axis=0)
            probas.append(proba)
        return probas

    def segment_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Class masks of the objects, seams between touching objects set to background."""
        masks = [found.class_mask() for found in self.instances_batch(images)]
        return np.stack(masks) if isinstance(images, np.ndarray) else masks
