"""Region pictures: slide pixels, optionally masked by annotations (Cytomine's crop / mask / alphamask)."""
from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from functools import lru_cache

import shapely
from PIL import Image as PilImage

from cyseg.server import render
from cyseg.server.geometry import to_raster
from cyseg.server.records import Annotation, Image
from cyseg.server.regions import Region, thumbnail
from cyseg.server.slides import SlideLibrary


class Mode(Enum):
    CROP = "crop"  # the slide pixels
    MASK = "mask"  # white inside the annotations, black outside
    ALPHA = "alphamask"  # the slide pixels, transparent outside the annotations


def picture(slides: SlideLibrary, image: Image, region: Region, mode: Mode,
            annotations: Iterable[Annotation] = ()) -> PilImage.Image:
    """The picture of `region` of `image` in `mode`; masks are drawn from `annotations`."""
    if mode is Mode.CROP:
        return slides.read(image.path, *region.box, region.size)
    geometries = [to_raster(shapely.from_wkt(a.location), image.height) for a in annotations]
    drawn = render.mask(geometries, region.box, region.size)
    if mode is Mode.MASK:
        return drawn
    pixels = slides.read(image.path, *region.box, region.size).convert("RGBA")
    pixels.putalpha(drawn)
    return pixels


@lru_cache(maxsize=64)
def thumbnail_picture(slides: SlideLibrary, image: Image, max_size: int) -> PilImage.Image:
    """The whole image fitted into `max_size`, cached (slides do not change while served); do not modify it."""
    return picture(slides, image, thumbnail(image, max_size), Mode.CROP)
