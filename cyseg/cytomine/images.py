"""A Cytomine project's image instances: which to segment, their names, zoom levels and pixel size."""
from __future__ import annotations

import math
from typing import Any

from cytomine.models import ImageInstance, ImageInstanceCollection

from cyseg.cytomine.connection import call
from cyseg.errors import CysegError

TILE_PIXELS = 256  # Cytomine's pyramid tile size, which defines its zoom levels


def max_zoom_level(image: ImageInstance) -> int:
    """The image's lowest resolution as a zoom level (Cytomine's `zoom`; computed when absent)."""
    if image.zoom is not None:
        return int(image.zoom)
    return max(0, math.ceil(math.log2(max(image.width, image.height) / TILE_PIXELS)))


def image_name(image: ImageInstance) -> str:
    return str(getattr(image, "instanceFilename", None) or getattr(image, "originalFilename", None) or image.id)


def cytomine_pixel_size_um(image: ImageInstance) -> float | None:
    """The µm per full-resolution pixel of an image as Cytomine records it (None when it does not)."""
    size = getattr(image, "physicalSizeX", None) or getattr(image, "resolution", None)
    return float(size) if size else None


def project_images(project: Any, wanted: tuple[int, ...]) -> list[ImageInstance]:
    """The images to segment, in the order asked (all the project's when none are)."""
    images = call(f"listing the images of project {project.id}",
                  lambda: ImageInstanceCollection().fetch_with_filter("project", project.id))
    by_id = {image.id: image for image in images}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise CysegError(f"image(s) {', '.join(map(str, missing))} not in project {project.id} "
                         f"(its images: {', '.join(map(str, sorted(by_id))) or 'none'})")
    chosen = [by_id[i] for i in dict.fromkeys(wanted)] if wanted else list(images)
    if not chosen:
        raise CysegError(f"project {project.id} has no images to segment")
    return chosen
