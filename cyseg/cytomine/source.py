"""Where a job reads pixels: the slide file itself (`OpenSlideSource`) when this machine can see it,
else the Cytomine window API (one request per tile), in the pipeline's level coordinates
(`cyseg.pipeline.source`)."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import openslide
from PIL import Image

from cyseg.cytomine.connection import get_bytes
from cyseg.pipeline.source import OpenSlideSource, TileSource, rgb_array

log = logging.getLogger(__name__)

ROOTS_VARIABLE = "CYSEG_SLIDE_ROOTS"  # folders (os.pathsep-separated) where slide files may be found
WINDOW_FORMAT = "png"  # lossless, so the model sees the slide's own pixels


def _fit(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """`pixels` cropped or edge-padded to exactly height × width (servers may round sizes by a pixel)."""
    pixels = pixels[:height, :width]
    pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return pixels


class WindowSource(TileSource):
    """An image instance read through the Cytomine window API, one request per tile."""

    def __init__(self, image_id: int, full_width: int, full_height: int, zoom_level: int) -> None:
        super().__init__(full_width, full_height, zoom_level)
        self.image_id = image_id

    @property
    def description(self) -> str:
        return f"the window API of image {self.image_id}"

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        fx, fy = x * self.factor, y * self.factor
        fw = min(width * self.factor, self.full_width - fx)
        fh = min(height * self.factor, self.full_height - fy)
        params = {"zoom": self.zoom_level} if self.zoom_level else None
        data = get_bytes(f"imageinstance/{self.image_id}/window-{fx}-{fy}-{fw}-{fh}.{WINDOW_FORMAT}", params)
        return _fit(rgb_array(Image.open(io.BytesIO(data))), width, height)

    def thumbnail(self, max_size: int) -> np.ndarray:
        data = get_bytes(f"imageinstance/{self.image_id}/thumb.png", {"maxSize": max_size})
        return rgb_array(Image.open(io.BytesIO(data)))


def slide_roots() -> list[Path]:
    """The folders named by $CYSEG_SLIDE_ROOTS."""
    return [Path(p) for p in os.environ.get(ROOTS_VARIABLE, "").split(os.pathsep) if p]


def local_slide(image: Any, roots: Iterable[Path]) -> Path | None:
    """The slide file of an image instance when this machine can read it: its `fullPath` as is, or its
    `fullPath` or file name under one of `roots`; it must open with OpenSlide at the instance's size."""
    names = [getattr(image, key, None) for key in ("fullPath", "path", "filename", "originalFilename")]
    names = [str(name) for name in names if name]
    candidates = [Path(name) for name in names if Path(name).is_absolute()]
    candidates += [root / name.lstrip("/") for root in roots for name in names]
    for candidate in candidates:
        try:
            if not candidate.is_file() or not openslide.OpenSlide.detect_format(candidate):
                continue
            with openslide.OpenSlide(candidate) as slide:
                if slide.dimensions == (image.width, image.height):
                    return candidate
        except (OSError, openslide.OpenSlideError):
            continue
    return None


def open_source(image: Any, zoom_level: int, roots: Iterable[Path] | None = None) -> TileSource:
    """The fastest source for an image instance: its local slide file, else the window API."""
    path = local_slide(image, slide_roots() if roots is None else roots)
    source: TileSource = (OpenSlideSource(path, zoom_level) if path
                          else WindowSource(image.id, image.width, image.height, zoom_level))
    log.info("image %s: reading pixels from %s", image.id, source.description)
    return source
