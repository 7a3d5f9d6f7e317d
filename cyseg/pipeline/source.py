"""Where the pipeline reads pixels: a `TileSource`; here the slide file itself, read with OpenSlide
(`cyseg.cytomine.source` adds the Cytomine window API and picks between the two for a job).

Coordinates are level coordinates: pixels of the image at the job's zoom level (full resolution
divided by 2^zoom), origin top-left. Reads are thread-safe, so tiles can be fetched ahead in threads.
"""
from __future__ import annotations

import abc
import math
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

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


def rgb_array(picture: Image.Image) -> np.ndarray:
    """A picture's pixels as an RGB uint8 array."""
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
            return rgb_array(self.slide.read_region(origin, self.level, (width, height)))
        size = (math.ceil(width * scale), math.ceil(height * scale))
        region = self.slide.read_region(origin, self.level, size).convert("RGB")
        return rgb_array(region.resize((width, height), Image.Resampling.LANCZOS))

    def thumbnail(self, max_size: int) -> np.ndarray:
        return rgb_array(self.slide.get_thumbnail((max_size, max_size)))

    def close(self) -> None:
        self.slide.close()
