"""The segmenter for each image: the model a user named, or for `auto` the shipped model of the image's
modality (`segmenter.modality`), run at the image's pixel size (given, or estimated from the image
when the model records its own, `segmenter.scale`). Models are loaded once and shared by all images."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segmenter.base import Segmenter
from segmenter.checkpoint import Checkpoint
from segmenter.modality import AUTO, ModelChoice, choose_model
from segmenter.registry import from_checkpoint, model_path
from segmenter.scale import Rescaled, estimate_pixel_size, zoom_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Picked:
    """The segmenter chosen for one image, and why."""

    model: Segmenter
    name: str  # the shipped model name or checkpoint path
    choice: ModelChoice | None  # how `auto` chose (None when the model was named)
    pixel_size_um: float | None  # the image's pixel size the model runs at (None: the model's own scale)
    scale_reason: str
    warning: str = ""  # a named model that does not suit the image's modality (`modality_warning`)

    def describe(self) -> str:
        """One line for logs and reports: which model, why, at which scale (and a warning, if any)."""
        why = f" ({self.choice.reason})" if self.choice else ""
        return f"model {self.name}{why}; scale: {self.scale_reason}" + (f"; WARNING: {self.warning}" if self.warning else "")

    def to_dict(self) -> dict[str, Any]:
        return dict(model=self.name, modality=self.choice.modality if self.choice else None,
                    reason=self.choice.reason if self.choice else "named by the user",
                    pixel_size_um=self.pixel_size_um, scale=self.scale_reason, warning=self.warning or None)


def modality_warning(name: str, checkpoint: Checkpoint, looks: ModelChoice) -> str:
    """Why a named network model does not suit an image that `looks` like one modality ("" if it does): a
    grey model (fluorescence) on a brightfield image finds the gaps between stained tissue, not its nuclei;
    a colour model (brightfield) on a fluorescence image reads it inverted. No network, no warning."""
    if not checkpoint.state_dict:
        return ""
    reads = "fluorescence" if checkpoint.in_channels == 1 else "brightfield"
    if reads == looks.modality:
        return ""
    return (f"{Path(name).name} is a {reads} model, but the image looks {looks.reason}; its objects are likely wrong "
            f"(model auto would pick {looks.model})")


class ModelPicker:
    """Picks and loads the segmenter of each image for a `model` spec (a shipped name, a path, or `auto`)."""

    def __init__(self, spec: str, device: Any = None, **options: Any) -> None:
        """`options` go to every model (threshold, batch_size, backend, ...)."""
        self.spec, self.device, self.options = spec, device, options
        self._loaded: dict[str, tuple[Checkpoint, Segmenter]] = {}
        if spec != AUTO:
            self.load(spec)  # a bad name fails now, before any image is read

    def load(self, name: str) -> tuple[Checkpoint, Segmenter]:
        """The checkpoint and segmenter (at the model's own scale) of a model name or path, loaded once."""
        if name not in self._loaded:
            checkpoint = Checkpoint.load(model_path(name))
            self._loaded[name] = checkpoint, from_checkpoint(checkpoint, device=self.device, **self.options)
        return self._loaded[name]

    def pick(self, image: np.ndarray, pixel_size_um: float | None = None,
             overview: np.ndarray | None = None) -> Picked:
        """The segmenter for `image` (a field, or a tile standing for a slide) whose pixel size is
        `pixel_size_um` (None: unknown, estimated when the model records its own); `overview` (e.g. a
        slide's thumbnail) decides the modality for `auto` (default: the image itself)."""
        looks = choose_model(image if overview is None else overview)
        choice = looks if self.spec == AUTO else None
        name = choice.model if choice else self.spec
        checkpoint, model = self.load(name)
        warning = "" if choice else modality_warning(name, checkpoint, looks)
        if warning:
            log.warning("%s", warning)
        if not checkpoint.pixel_size_um:
            return Picked(model, name, choice, None, "the model records no pixel size: images used as they are",
                          warning)
        if pixel_size_um is None:
            estimate = estimate_pixel_size(model, checkpoint, image)
            if estimate.pixel_size_um is None:
                return Picked(model, name, choice, None, f"pixel size unknown, not estimated ({estimate.reason}): "
                                                         f"the image is taken to be at the model's "
                                                         f"{checkpoint.pixel_size_um:g} µm/px", warning)
            pixel_size_um, how = estimate.pixel_size_um, f"pixel size estimated ({estimate.reason})"
        else:
            how = f"pixel size {pixel_size_um:g} µm/px"
        zoom = zoom_for(checkpoint.pixel_size_um, pixel_size_um)
        scaled = model if zoom == 1.0 else Rescaled(model, zoom)
        return Picked(scaled, name, choice, pixel_size_um,
                      f"{how}, model at {checkpoint.pixel_size_um:g} µm/px: resampled ×{zoom:.2f}"
                      if zoom != 1.0 else f"{how}, the model's own scale", warning)
