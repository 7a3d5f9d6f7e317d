"""Slide files: finding them in a folder, reading their metadata and reading regions as RGB.

OpenSlide reads the whole-slide formats (SVS, NDPI, MRXS, pyramidal or tiled TIFF, ...);
anything else Pillow can open (plain TIFF, PNG, JPEG) is read through `openslide.ImageSlide`.
Regions are flattened onto white, so pixels outside the slide are white, as in Cytomine.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import openslide
from PIL import Image

from cyseg.server.errors import BadRequest, NotFound

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
                  ".png", ".jpg", ".jpeg")
MAX_READ_PIXELS = 1 << 26  # pixels read from one pyramid level for one request (64 Mpx)
WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class SlideInfo:
    width: int
    height: int
    resolution: float | None  # micrometres per pixel at full resolution
    magnification: int | None


def find_slides(folder: Path) -> list[Path]:
    """Files under `folder` (recursively, hidden ones skipped) whose suffix names a slide format, sorted."""
    return sorted(path for path in folder.rglob("*")
                  if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on white, whatever the mode (transparency composited, grey and palette expanded)."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")


def open_slide(path: Path) -> openslide.AbstractSlide:
    """An OpenSlide handle, or an in-memory `ImageSlide` for formats OpenSlide does not read."""
    if openslide.OpenSlide.detect_format(path):
        return openslide.OpenSlide(path)
    with Image.open(path) as image:
        image.load()
        return openslide.ImageSlide(image.copy() if image.mode == "RGB" else _flatten(image))


def _float_property(slide: openslide.AbstractSlide, key: str) -> float | None:
    try:
        return float(slide.properties[key])
    except (KeyError, ValueError):
        return None


def probe(path: Path) -> SlideInfo:
    """Size, resolution and magnification of a slide; OSError or OpenSlideError when unreadable."""
    slide = open_slide(path)
    try:
        width, height = slide.dimensions
        magnification = _float_property(slide, openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        return SlideInfo(width, height, _float_property(slide, openslide.PROPERTY_NAME_MPP_X),
                         round(magnification) if magnification else None)
    finally:
        slide.close()


class SlideLibrary:
    """Open slides, kept open for the server's lifetime (OpenSlide handles are thread-safe)."""

    def __init__(self) -> None:
        self._slides: dict[str, openslide.AbstractSlide] = {}
        self._lock = threading.Lock()

    def _slide(self, path: str) -> openslide.AbstractSlide:
        with self._lock:
            slide = self._slides.get(path)
            if slide is None:
                try:
                    slide = open_slide(Path(path))
                except (OSError, openslide.OpenSlideError) as error:
                    log.warning("cannot open slide %s: %s", path, error)
                    raise NotFound(f"slide file {Path(path).name} is missing or unreadable") from error
                self._slides[path] = slide
            return slide

    def read(self, path: str, x: int, y: int, width: int, height: int,
             size: tuple[int, int]) -> Image.Image:
        """The full-resolution region (x, y, width, height) (origin top-left) resampled to `size`, RGB."""
        slide = self._slide(path)
        downsample = max(width / size[0], height / size[1])
        # A 1% tolerance so a level whose downsample is 2.0005 still serves a request for 2.
        level = slide.get_best_level_for_downsample(downsample * 1.01) if downsample > 1 else 0
        level_downsample = slide.level_downsamples[level]
        read_size = (max(1, math.ceil(width / level_downsample)), max(1, math.ceil(height / level_downsample)))
        if read_size[0] * read_size[1] > MAX_READ_PIXELS:
            raise BadRequest(f"region {width}x{height} at this zoom needs {read_size[0]}x{read_size[1]} pixels "
                             f"read from the slide, more than {MAX_READ_PIXELS}")
        region = _flatten(slide.read_region((x, y), level, read_size))
        if region.size == size:
            return region
        return region.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

    def close(self) -> None:
        with self._lock:
            for slide in self._slides.values():
                slide.close()
            self._slides.clear()
