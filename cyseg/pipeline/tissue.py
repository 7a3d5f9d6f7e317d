"""Where the tissue is, from a thumbnail, so that tiles of empty glass are not segmented.

The background is the most common grey level of the thumbnail, provided it is near black
(fluorescence) or near white (brightfield); tissue is whatever differs from it clearly, grown by a
few thumbnail pixels so that faint object edges stay in. When the most common level is neither
(tissue covers the whole slide), everything counts as tissue: skipping is only ever an optimisation.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 2048
EXTREME = 64  # a background level must be within this of black or white
MIN_CONTRAST = 12  # grey levels
NOISE_SIGMAS = 4.0
GROW = 2  # thumbnail pixels


@dataclass(frozen=True)
class TissueMask:
    """Tissue pixels of a thumbnail and the thumbnail's scale: one thumbnail pixel covers `scale`
    level pixels in each direction."""

    mask: np.ndarray
    scale: float

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def covers(self, x: int, y: int, width: int, height: int) -> bool:
        """Whether the level-coordinate box (x, y, width, height) contains any tissue."""
        r0, c0 = int(y / self.scale), int(x / self.scale)
        r1, c1 = math.ceil((y + height) / self.scale), math.ceil((x + width) / self.scale)
        return bool(self.mask[max(r0, 0):r1, max(c0, 0):c1].any())


def everywhere(width: int, height: int) -> TissueMask:
    """A mask that keeps every tile (tissue detection off)."""
    return TissueMask(np.ones((1, 1), dtype=bool), float(max(width, height)))


def detect_tissue(thumbnail: np.ndarray, level_width: int) -> TissueMask:
    """The tissue of an RGB thumbnail of an image whose width at the job's level is `level_width`."""
    grey = ndimage.uniform_filter(thumbnail.astype(np.float32).mean(axis=2), size=3)
    scale = level_width / thumbnail.shape[1]
    histogram = np.bincount(np.clip(grey, 0, 255).astype(np.uint8).ravel(), minlength=256)
    background = int(histogram.argmax())
    if EXTREME <= background <= 255 - EXTREME:
        log.info("no clear background (most common grey level %d): every tile counts as tissue", background)
        return TissueMask(np.ones(grey.shape, dtype=bool), scale)
    near = np.abs(grey - background) <= MIN_CONTRAST
    noise = float(grey[near].std()) if near.any() else 0.0
    tissue = np.abs(grey - background) > max(MIN_CONTRAST, NOISE_SIGMAS * noise)
    tissue = ndimage.binary_dilation(tissue, iterations=GROW)
    mask = TissueMask(tissue, scale)
    log.info("background grey level %d (noise %.1f): tissue on %.0f%% of the thumbnail", background, noise,
             100 * mask.fraction)
    return mask
