"""The task's image input: one file without its extension (the App Engine renames it after the
parameter), so its format is recognised from its content. Whole-slide formats OpenSlide reads
(SVS, NDPI, SCN, pyramidal or tiled TIFF, ...) are read in place; pictures only Pillow reads (PNG,
JPEG, plain TIFF) are first written as a tiled pyramidal TIFF, so the pipeline's `OpenSlideSource`
reads every input the same way."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import openslide
import tifffile
from PIL import Image, UnidentifiedImageError

from cyseg.pipeline.source import OpenSlideSource
from cyseg.task.io import ParameterError

log = logging.getLogger(__name__)

TILE = 256
SMALLEST_LEVEL = 512  # pixels on the longer side of the pyramid's last level


def as_pyramid(path: Path, picture: Image.Image, target: Path) -> Path:
    """`picture` (from `path`) written at `target` as a tiled pyramidal RGB TIFF."""
    pixels = np.asarray(picture.convert("RGB"))
    with tifffile.TiffWriter(target) as tiff:
        level = 0
        while level == 0 or max(pixels.shape[:2]) >= SMALLEST_LEVEL:
            tiff.write(pixels, tile=(TILE, TILE), photometric="rgb", compression="zlib", subfiletype=1 if level else 0)
            pixels, level = pixels[::2, ::2], level + 1
    log.info("%s: %s picture %dx%d, read as a %d-level tiled TIFF", path, picture.format, *picture.size, level)
    return target


def open_image(path: Path, scratch: Path, zoom_level: int) -> OpenSlideSource:
    """The pixels of the image input at `path`; ParameterError naming the input when it is not an image.
    `scratch`: a folder for the converted copy of a picture."""
    if openslide.OpenSlide.detect_format(path):
        log.info("%s: %s slide", path, openslide.OpenSlide.detect_format(path))
        return OpenSlideSource(path, zoom_level)
    try:
        with Image.open(path) as picture:
            converted = as_pyramid(path, picture, scratch / "image.tif")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        raise ParameterError(f"input image: not an image OpenSlide or Pillow can read ({error})") from None
    return OpenSlideSource(converted, zoom_level)
