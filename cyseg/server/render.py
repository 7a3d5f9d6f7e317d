"""Pictures the server draws: image encoding, annotation masks and outline overlays (Pillow)."""
from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import shapely
from PIL import Image, ImageDraw
from shapely.geometry.base import BaseGeometry

from cyseg.server.errors import BadRequest

# extension -> (Pillow format, media type). PNG is lossless, so windows compare exactly with OpenSlide.
FORMATS = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "jpeg": ("JPEG", "image/jpeg"),
           "tif": ("TIFF", "image/tiff"), "tiff": ("TIFF", "image/tiff")}
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # lossless either way; level 1 encodes several times faster than the default 6


def media_type(extension: str) -> str:
    """The media type of an image extension; 400 for formats the server does not write."""
    if extension.lower() not in FORMATS:
        raise BadRequest(f"unsupported image format '{extension}' (one of {', '.join(FORMATS)})")
    return FORMATS[extension.lower()][1]


def encode(image: Image.Image, extension: str) -> bytes:
    """`image` in the format its extension names (JPEG cannot hold transparency: 400)."""
    media_type(extension)
    name = FORMATS[extension.lower()][0]
    if name == "JPEG" and image.mode in ("RGBA", "LA"):
        raise BadRequest("a transparent (alpha mask) image needs the png format")
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": JPEG_QUALITY}, "PNG": {"compress_level": PNG_COMPRESS_LEVEL}}.get(name, {})
    image.save(buffer, name, **options)
    return buffer.getvalue()


def _rings(geometry: BaseGeometry, offset: tuple[float, float], scale: tuple[float, float]
           ) -> Iterable[tuple[str, list[tuple[float, float]]]]:
    """(kind, pixel coordinates) of each part: 'shell' / 'hole' of polygons, 'line', 'point'."""
    def pixels(coords: np.ndarray) -> list[tuple[float, float]]:
        return [((x - offset[0]) * scale[0], (y - offset[1]) * scale[1]) for x, y in coords[:, :2]]

    for part in shapely.get_parts(geometry):
        if isinstance(part, shapely.Polygon):
            yield "shell", pixels(np.asarray(part.exterior.coords))
            for interior in part.interiors:
                yield "hole", pixels(np.asarray(interior.coords))
        elif isinstance(part, (shapely.LineString, shapely.LinearRing)):
            yield "line", pixels(np.asarray(part.coords))
        elif isinstance(part, shapely.Point):
            yield "point", pixels(np.asarray(part.coords))
        else:  # a nested collection
            yield from _rings(part, offset, scale)


def mask(geometries: Iterable[BaseGeometry], window: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """A binary (0/255, mode L) mask of `size` of the raster-coordinate `geometries` over `window` (x, y, w, h)."""
    x, y, width, height = window
    scale = (size[0] / width, size[1] / height)
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for geometry in geometries:
        for kind, points in _rings(geometry, (x, y), scale):
            if kind == "shell":
                draw.polygon(points, fill=255)
            elif kind == "hole":
                draw.polygon(points, fill=0)
            elif kind == "line":
                draw.line(points, fill=255, width=1)
            else:
                draw.point(points, fill=255)
    return canvas


def outlines(base: Image.Image, shapes: Iterable[tuple[BaseGeometry, str]], scale: float) -> Image.Image:
    """A copy of `base` with each (raster-coordinate geometry, colour) outlined, coordinates times `scale`."""
    picture = base.convert("RGB")
    draw = ImageDraw.Draw(picture)
    radius = 2
    for geometry, color in shapes:
        for kind, points in _rings(geometry, (0, 0), (scale, scale)):
            if kind == "point":
                (px, py), = points
                draw.ellipse((px - radius, py - radius, px + radius, py + radius), outline=color, width=1)
            else:
                draw.line(points, fill=color, width=2 if kind == "shell" else 1)
    return picture
