"""The BNS family (blur-robust nucleus segmentation, seed 002): a U-Net with a Y-forked decoder.

One encoder feeds two decoders: a 3-class segmentation head (background, nucleus interior,
nucleus boundary: the outlines plus the seams between touching nuclei) and a deblurring head
that predicts the clean normalised image as a residual over the (blurred) normalised input.
Both branches are plain `segmenter.unet.UNet`s sharing one encoder module, so each branch alone
is an ordinary U-Net: the segmentation branch runs through `UNetSegmenter` (every backend, the
speed of a plain U-Net of the same width) and the deblurring branch only when `deblur` is called.

Instances come from a boundary-aware marker watershed (`BoundaryWatershed`). A quality-control
switch, the FocusLiteNN focus classifier embedded in the checkpoint, calls each tile sharp or
blurry, and the tile gets the matching set of post-processing values.

Checkpoint (family "bns"): `state_dict` holds the network's weights ("segmentation.…" and
"restoration.…", the shared encoder under both) and the classifier's ("focus.…", its metadata in
`children["focus"]`); `postprocess` is {"sharp": {...}, "blurry": {...}} of `BoundaryWatershed`
fields; `architecture["focus_threshold"]` overrides the classifier's threshold when set.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import watershed
from torch import nn

from segmenter.backend import MAX_BATCH, build_runner
from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint, ModelLoadError
from segmenter.focus import FocusClassifier
from segmenter.focus_gated import FocusDecision, unpack_child
from segmenter.inputs import as_image_list, padded_batch, to_channels
from segmenter.unet import UNet
from segmenter.unet_segmenter import UNetSegmenter
from transforms import (connected_components, fill_holes, instance_scores, relabel_consecutive,
                        remove_large_objects, remove_small_objects, touching_borders)
from transforms._validation import from_known_fields

CLASSES = ["background", "interior", "boundary"]
SETS = ("sharp", "blurry")  # the post-processing sets, by the focus classifier's call


def encode(unet: UNet, x: torch.Tensor) -> list[torch.Tensor]:
    """`unet`'s encoder: the feature map of every level, finest first (the last is the bottleneck)."""
    features = []
    for level, block in enumerate(unet.encoder):
        x = block(x if level == 0 else unet.pool(x))
        features.append(x)
    return features


def decode(unet: UNet, features: list[torch.Tensor]) -> torch.Tensor:
    """`unet`'s decoder and head on the feature maps of `encode`."""
    x = features[-1]
    for skip, up, block in zip(reversed(features[:-1]), unet.up, unet.decoder):
        x = block(torch.cat([skip, up(x)], dim=1))
    return unet.head(x)


class BNSNet(nn.Module):
    """Shared encoder, a 3-class segmentation decoder and a deblurring decoder; `forward` returns
    (segmentation logits N×3×H×W, deblurred image N×C×H×W)."""

    def __init__(self, in_channels: int = 1, depth: int = 4, n_filters: int = 16, batch_norm: bool = True):
        super().__init__()
        self.architecture = dict(in_channels=in_channels, depth=depth, n_filters=n_filters, batch_norm=batch_norm)
        self.segmentation = UNet(in_channels, len(CLASSES), depth, n_filters, batch_norm)
        self.restoration = UNet(in_channels, in_channels, depth, n_filters, batch_norm)
        self.restoration.encoder = self.segmentation.encoder
        start_as_identity(self.restoration)

    @property
    def multiple(self) -> int:
        return self.segmentation.multiple

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = encode(self.segmentation, x)
        return decode(self.segmentation, features), x + decode(self.restoration, features)


def start_as_identity(restoration: UNet) -> None:
    """Zero the residual branch's last convolution, so the deblurred image starts as the input."""
    nn.init.zeros_(restoration.head.weight)
    nn.init.zeros_(restoration.head.bias)


def boundary_classes(labels: np.ndarray) -> np.ndarray:
    """The 3-class target of an instance label image (int64): 0 background, 1 interior, 2 boundary
    (each nucleus's one-pixel outline and the seams where nuclei touch)."""
    labels = np.asarray(labels)
    inside = labels > 0
    target = inside.astype(np.int64)
    target[inside & ~ndimage.binary_erosion(inside, border_value=1) | touching_borders(labels)] = 2
    return target


@dataclass(frozen=True)
class BoundaryWatershed:
    """3-class probabilities (background, interior, boundary; 3×H×W) -> uint16 instance labels.

    Nuclei: interior + boundary > `foreground_threshold`, holes filled. Markers: the connected
    regions of interior - boundary > `marker_threshold` of at least `min_marker_size` px; a
    nucleus region without a marker is one object. The markers flood the nuclei over the
    boundary-minus-interior relief, so touching nuclei meet on their predicted seam. Objects under
    `min_size` px (and over `max_size`, when set) are removed.
    """

    foreground_threshold: float = 0.5
    marker_threshold: float = 0.3
    min_marker_size: int = 10
    min_size: int = 20
    max_size: int | None = None

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba)
        if proba.ndim != 3 or proba.shape[0] != len(CLASSES):
            raise ValueError(f"expected 3×H×W probabilities ({', '.join(CLASSES)}), got shape {proba.shape}")
        interior, boundary = proba[1], proba[2]
        nuclei = fill_holes(interior + boundary > self.foreground_threshold)
        seeds = connected_components((interior - boundary > self.marker_threshold) & nuclei)
        markers = remove_small_objects(seeds, self.min_marker_size).astype(np.int64)
        regions = connected_components(nuclei).astype(np.int64)
        unmarked = nuclei & ~np.isin(regions, regions[markers > 0])
        markers[unmarked] = markers.max() + regions[unmarked]
        labels = remove_small_objects(watershed(boundary - interior, markers, mask=nuclei), self.min_size)
        if self.max_size is not None:
            labels = remove_large_objects(labels, self.max_size)
        return relabel_consecutive(labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BoundaryWatershed":
        return from_known_fields(cls, d)


def branch(checkpoint: Checkpoint, name: str) -> Checkpoint:
    """One branch of a BNS checkpoint ("segmentation" or "restoration") as a plain U-Net checkpoint."""
    prefix = f"{name}."
    architecture = {key: value for key, value in checkpoint.architecture.items() if key != "focus_threshold"}
    architecture["out_channels"] = len(CLASSES) if name == "segmentation" else checkpoint.in_channels
    return Checkpoint(family=UNetSegmenter.name, architecture=architecture, class_names=CLASSES,
                      in_channels=checkpoint.in_channels, normalization=checkpoint.normalization,
                      state_dict={k[len(prefix):]: v for k, v in checkpoint.state_dict.items() if k.startswith(prefix)})


class BNSSegmenter(Segmenter):
    """Nuclei from the segmentation branch by `BoundaryWatershed`, with the post-processing set the
    focus classifier picks per tile (recorded in `Instances.extra["focus"]`); `deblur` runs the
    deblurring branch. `batch_size`, `backend`, `precision` and `tta` (segmentation only) as for
    `UNetSegmenter`; `threshold` replaces the nuclei threshold of both sets."""

    name = "bns"

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device | None = None,
                 batch_size: int | None = None, threshold: float | None = None, backend: str = "torch",
                 precision: str = "fp32", tta: bool = False):
        missing = [name for name in SETS if name not in checkpoint.postprocess]
        if missing:
            raise ModelLoadError(f"'{self.name}' checkpoint lacks the {' and '.join(missing)} post-processing")
        self.segmentation = UNetSegmenter(branch(checkpoint, "segmentation"), device=device, batch_size=batch_size,
                                          backend=backend, precision=precision, tta=tta)
        super().__init__(["background", "nucleus"], self.segmentation.device)
        self.checkpoint = checkpoint
        self.postprocess = {}
        for name in SETS:
            values = BoundaryWatershed.from_dict(checkpoint.postprocess[name])
            self.postprocess[name] = values if threshold is None else \
                dataclasses.replace(values, foreground_threshold=float(threshold))
        self.classifier = FocusClassifier.from_checkpoint(unpack_child(checkpoint, "focus"), device=self.device) \
            if "focus" in checkpoint.children else None
        focus_threshold = checkpoint.architecture.get("focus_threshold")
        self.focus_threshold = float(focus_threshold if focus_threshold is not None
                                     else self.classifier.threshold if self.classifier else math.inf)
        self.batch_size, self._runner_options = batch_size, (backend, precision)
        self._restoration = None

    @property
    def backend(self) -> str:
        return self.segmentation.backend

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None,
                        **options: Any) -> "BNSSegmenter":
        return cls(checkpoint, device=device, **options)

    @staticmethod
    def build_checkpoint(network: BNSNet, normalization: dict[str, Any], postprocess: dict[str, dict[str, Any]],
                         focus: Checkpoint | None, training: dict[str, Any] | None = None,
                         metrics: dict[str, Any] | None = None, pixel_size_um: float | None = None) -> Checkpoint:
        """The checkpoint of a network, its post-processing sets and (optionally) the focus classifier."""
        copies: dict[int, torch.Tensor] = {}  # one copy per tensor, so the shared encoder is stored once
        state = {k: copies.setdefault(v.data_ptr(), v.detach().cpu().clone()) for k, v in network.state_dict().items()}
        if focus is not None:
            state |= {f"focus.{k}": v for k, v in focus.state_dict.items()}
        return Checkpoint(
            family=BNSSegmenter.name, class_names=["background", "nucleus"],
            in_channels=network.architecture["in_channels"],
            architecture={**network.architecture, "focus_threshold": None},
            normalization=normalization, postprocess={name: dict(postprocess[name]) for name in SETS},
            threshold=postprocess["sharp"]["foreground_threshold"], pixel_size_um=pixel_size_um, state_dict=state,
            children={} if focus is None else {"focus": {**focus.to_dict(), "state_dict": {}}},
            training=training or {}, metrics=metrics or {})

    def decide_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[FocusDecision]:
        """Per image, the focus classifier's call (sharp without a classifier or without content)."""
        images = as_image_list(images)
        if self.classifier is None:
            return [FocusDecision(math.nan, False) for _ in images]
        return [FocusDecision(float(score), bool(score > self.focus_threshold))
                for score in self.classifier.score_batch(images)]

    def class_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, the 3×H×W probabilities of background, interior and boundary."""
        return self.segmentation.predict_proba_batch(images)

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Background and nucleus (interior + boundary) probabilities."""
        return [np.stack([proba[0], proba[1] + proba[2]]) for proba in self.class_proba_batch(images)]

    def instances_from_proba(self, proba: np.ndarray, decision: FocusDecision) -> Instances:
        """The instances of 3-class probabilities, post-processed with the set of `decision`."""
        labels = self.postprocess[decision.model](proba)
        return Instances(labels=labels, scores=instance_scores(labels, 1 - proba[0]),
                         classes=np.ones(int(labels.max()), dtype=np.int32), extra={"focus": decision.to_dict()})

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        images = as_image_list(images)
        return [self.instances_from_proba(proba, decision)
                for proba, decision in zip(self.class_proba_batch(images), self.decide_batch(images))]

    def segment_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Class masks of the instances, seams between touching nuclei set to background."""
        masks = [found.class_mask() for found in self.instances_batch(images)]
        return np.stack(masks) if isinstance(images, np.ndarray) else masks

    def deblur_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, the deblurred image in the model's normalised range (float32, H×W for a grey
        model, H×W×3 for a colour one)."""
        if self._restoration is None:
            restoration = branch(self.checkpoint, "restoration")
            network = UNet(**restoration.architecture)
            network.load_state_dict(restoration.state_dict)
            network.to(self.device).eval()
            self._restoration = network, build_runner(network, self.device, *self._runner_options)
        network, runner = self._restoration
        normalize = self.segmentation.normalization
        images = [normalize(to_channels(image, self.checkpoint.in_channels)) for image in as_image_list(images)]
        out: list[np.ndarray] = []
        step = self.batch_size or MAX_BATCH
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            batch = padded_batch(chunk, network.multiple)
            with torch.inference_mode():
                deblurred = batch + runner(batch, split=self.batch_size is None).cpu().numpy()
            out.extend(d[:, :image.shape[0], :image.shape[1]].transpose(1, 2, 0) for d, image in zip(deblurred, chunk))
        return [d[..., 0] if d.shape[2] == 1 else d for d in out]

    def deblur(self, image: np.ndarray) -> np.ndarray:
        return self.deblur_batch([image])[0]
