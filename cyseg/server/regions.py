"""Which full-resolution region, at which output size, a window, thumbnail or tile request asks for.

Windows are (x, y, w, h) in full-resolution pixels from the top-left, shrunk by 2^zoom and then
to fit `maxSize`. Tiles follow the IIP/PIMS convention: 256-pixel tiles numbered row by row,
zoom levels counted from the smallest (0, the whole slide in one tile) to the full resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from cyseg.server.errors import BadRequest, NotFound
from cyseg.server.records import Image

TILE_SIZE = 256
MAX_OUTPUT_PIXELS = 8192 * 8192


@dataclass(frozen=True, slots=True)
class Region:
    x: int
    y: int
    width: int
    height: int
    size: tuple[int, int]  # output (width, height)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


def max_zoom(width: int, height: int) -> int:
    """Cytomine's `zoom` of an image: the number of halvings until it fits one tile."""
    return max(0, math.ceil(math.log2(max(width, height) / TILE_SIZE)))


def window(image: Image, x: int, y: int, width: int, height: int, zoom: int | None = None,
           max_size: int | None = None) -> Region:
    """A window of `image`; 400 when it starts outside the image or its output is too large."""
    if width < 1 or height < 1:
        raise BadRequest(f"window size {width}x{height} must be at least 1x1")
    if not (0 <= x < image.width and 0 <= y < image.height):
        raise BadRequest(f"window origin ({x}, {y}) lies outside image {image.id} ({image.width}x{image.height})")
    if zoom is not None and zoom < 0:
        raise BadRequest(f"zoom must be >= 0, got {zoom}")
    if max_size is not None and max_size < 1:
        raise BadRequest(f"maxSize must be >= 1, got {max_size}")
    factor = 2 ** (zoom or 0)
    out_w, out_h = max(1, round(width / factor)), max(1, round(height / factor))
    if max_size is not None and max(out_w, out_h) > max_size:
        shrink = max_size / max(out_w, out_h)
        out_w, out_h = max(1, round(out_w * shrink)), max(1, round(out_h * shrink))
    if out_w * out_h > MAX_OUTPUT_PIXELS:
        raise BadRequest(f"window output {out_w}x{out_h} exceeds the limit of {MAX_OUTPUT_PIXELS} pixels; "
                         "use zoom or maxSize")
    return Region(x, y, width, height, (out_w, out_h))


def thumbnail(image: Image, max_size: int) -> Region:
    """The whole image, fitted into `max_size`."""
    return window(image, 0, 0, image.width, image.height, max_size=max_size)


def tile(image: Image, zoom: int, column: int, row: int) -> Region:
    """Tile (column, row) at IIP zoom level `zoom`; 404 outside the pyramid."""
    top = max_zoom(image.width, image.height)
    if not 0 <= zoom <= top:
        raise NotFound(f"zoom level {zoom} not found (image {image.id} has levels 0..{top})")
    factor = 2 ** (top - zoom)
    level_w, level_h = max(1, image.width // factor), max(1, image.height // factor)
    columns, rows = math.ceil(level_w / TILE_SIZE), math.ceil(level_h / TILE_SIZE)
    if not (0 <= column < columns and 0 <= row < rows):
        raise NotFound(f"tile ({column}, {row}) not found at zoom {zoom} ({columns}x{rows} tiles)")
    out_w = min(TILE_SIZE, level_w - column * TILE_SIZE)
    out_h = min(TILE_SIZE, level_h - row * TILE_SIZE)
    return Region(column * TILE_SIZE * factor, row * TILE_SIZE * factor, out_w * factor, out_h * factor,
                  (out_w, out_h))


def tile_by_index(image: Image, zoom: int, index: int) -> Region:
    """Tile number `index` (row-major) at zoom level `zoom`."""
    top = max_zoom(image.width, image.height)
    if not 0 <= zoom <= top:
        raise NotFound(f"zoom level {zoom} not found (image {image.id} has levels 0..{top})")
    columns = math.ceil(max(1, image.width // 2 ** (top - zoom)) / TILE_SIZE)
    if index < 0:
        raise NotFound(f"tile index {index} not found")
    return tile(image, zoom, index % columns, index // columns)
