"""Which shipped model suits an image: brightfield (stained tissue on a bright background) or
fluorescence (bright objects on a dark background), decided from the image itself.

Brightfield light passes through the slide, so glass and empty areas are near white and stains
absorb; in fluorescence the background is dark and only labelled structures emit. The median
intensity (most of a thumbnail is background or tissue, rarely the objects themselves) tells
them apart; the colour saturation of stained tissue backs the call when the view is full of tissue.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUTO = "auto"
MODELS = {"brightfield": "he", "fluorescence": "default"}  # modality -> shipped model
BRIGHT_BACKGROUND = 0.5  # median intensity (0..1) above which the background is bright
STAINED_SATURATION = 0.15  # mean saturation of stained tissue (H&E, IHC) that fills the view
TISSUE_FLOOR = 0.3  # ... when its median intensity is at least this (fluorescence backgrounds are far darker)


@dataclass(frozen=True)
class ModelChoice:
    """The model `auto` picked for an image, and why."""

    model: str
    modality: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return dict(model=self.model, modality=self.modality, reason=self.reason)


def unit_intensity(image: np.ndarray) -> np.ndarray:
    """The image as float in 0..1: integers by their type's range (so a dim 16-bit fluorescence
    field stays dim), floats by their own maximum."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected a non-empty H×W or H×W×C image, got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    if image.dtype == bool:
        return image.astype(np.float32)
    x = np.nan_to_num(image.astype(np.float32))
    peak = float(x.max())
    return x / peak if peak > 0 else x


def choose_model(image: np.ndarray) -> ModelChoice:
    """The shipped model for `image` (a thumbnail or a whole field, grey or RGB, any dtype)."""
    x = unit_intensity(image)
    grey = x.mean(axis=2) if x.ndim == 3 else x
    median = float(np.median(grey))
    saturation = 0.0
    if x.ndim == 3 and x.shape[2] == 3:
        high, low = x.max(axis=2), x.min(axis=2)
        saturation = float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)))
    colour = f"mean saturation {saturation:.3f}" + (" (stained)" if saturation >= STAINED_SATURATION else " (grey)")
    if median >= BRIGHT_BACKGROUND:
        modality, why = "brightfield", f"bright background (median intensity {median:.2f} ≥ {BRIGHT_BACKGROUND})"
    elif saturation >= STAINED_SATURATION and median >= TISSUE_FLOOR:
        modality, why = "brightfield", f"stained tissue filling the view (median intensity {median:.2f})"
    else:
        modality, why = "fluorescence", f"dark background (median intensity {median:.2f} < {BRIGHT_BACKGROUND})"
    return ModelChoice(MODELS[modality], modality, f"{modality}: {why}, {colour}")
