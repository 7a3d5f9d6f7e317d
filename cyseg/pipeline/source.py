"""Where a job reads pixels: the slide file itself (OpenSlide) when this machine can see it, else
the Cytomine window API (one request per tile).

Coordinates are level coordinates: pixels of the image at the job's zoom level (full resolution
divided by 2^zoom), origin top-left. Reads are thread-safe, so tiles can be fetched ahead in threads.
"""
from __future__ import annotations

import abc
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import openslide
from PIL import Image

from cyseg.job.connection import get_bytes

log = logging.getLogger(__name__)

ROOTS_VARIABLE = "CYSEG_SLIDE_ROOTS"  # folders (os.pathsep-separated) where slide files may be found
WINDOW_FORMAT = "png"  # lossless, so the model sees the slide's own pixels


class TileSource(abc.ABC):
    """The pixels of one image at one zoom level."""

    def __init__(self, full_width: int, full_height: int, zoom_level: int,
                 full_pixel_size_um: float | None = None) -> None:
        """`full_pixel_size_um`: µm per full-resolution pixel, when the image says (None otherwise)."""
        self.full_width = full_width
        self.full_height = full_height
        self.zoom_level = zoom_level
        self.factor = 2 ** zoom_level
        self.full_pixel_size_um = full_pixel_size_um

    @property
    def width(self) -> int:
        return self.full_width // self.factor

    @property
    def height(self) -> int:
        return self.full_height // self.factor

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the pixels come from, for logs."""

    @abc.abstractmethod
    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The RGB uint8 (height × width × 3) region at (x, y) in level coordinates."""

    @abc.abstractmethod
    def thumbnail(self, max_size: int) -> np.ndarray:
        """The whole image as RGB uint8, at most `max_size` pixels on its longer side."""

    def close(self) -> None:
        """Release what the source holds."""

    def __enter__(self) -> "TileSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fit(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """`pixels` cropped or edge-padded to exactly height × width (servers may round sizes by a pixel)."""
    pixels = pixels[:height, :width]
    pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return pixels


def _rgb(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"))


class OpenSlideSource(TileSource):
    """A slide file read directly (no network)."""

    def __init__(self, path: Path, zoom_level: int) -> None:
        self.path = path
        self.slide = openslide.OpenSlide(path)
        mpp = self.slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        super().__init__(*self.slide.dimensions, zoom_level, float(mpp) if mpp and float(mpp) > 0 else None)
        self.level = self.slide.get_best_level_for_downsample(self.factor * 1.001)
        self.level_downsample = self.slide.level_downsamples[self.level]

    @property
    def description(self) -> str:
        return f"slide file {self.path}"

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        origin = (x * self.factor, y * self.factor)
        scale = self.factor / self.level_downsample
        if abs(scale - 1) < 1e-3:
            return _rgb(self.slide.read_region(origin, self.level, (width, height)))
        size = (math.ceil(width * scale), math.ceil(height * scale))
        region = self.slide.read_region(origin, self.level, size).convert("RGB")
        return _rgb(region.resize((width, height), Image.Resampling.LANCZOS))

    def thumbnail(self, max_size: int) -> np.ndarray:
        return _rgb(self.slide.get_thumbnail((max_size, max_size)))

    def close(self) -> None:
        self.slide.close()


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
        return _fit(_rgb(Image.open(io.BytesIO(data))), width, height)

    def thumbnail(self, max_size: int) -> np.ndarray:
        data = get_bytes(f"imageinstance/{self.image_id}/thumb.png", {"maxSize": max_size})
        return _rgb(Image.open(io.BytesIO(data)))


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
