"""Annotation geometry: WKT validation against its image and the flip to raster coordinates.

Cytomine geometries are WKT in full-resolution pixels with the origin at the bottom-left
(y grows upwards); rasters have it at the top-left. `to_raster` is the one place that flips.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.errors import ShapelyError
from shapely.geometry.base import BaseGeometry

from cyseg.server.errors import BadRequest
from cyseg.server.records import Image


@dataclass(frozen=True, slots=True)
class Measures:
    area: float  # pixels²
    perimeter: float  # pixels
    centroid_x: float
    centroid_y: float


def parse_location(wkt: object, image: Image, label: str) -> BaseGeometry:
    """The geometry of `wkt`, which must be non-empty and lie within `image`; 400 naming `label` otherwise."""
    if not isinstance(wkt, str) or not wkt.strip():
        raise BadRequest(f"{label}: 'location' must be a WKT string")
    try:
        geometry = shapely.from_wkt(wkt)
    except (ShapelyError, ValueError) as error:
        raise BadRequest(f"{label}: invalid WKT: {error}") from error
    if geometry is None or geometry.is_empty:
        raise BadRequest(f"{label}: invalid WKT: empty geometry")
    bounds = np.asarray(geometry.bounds)
    if (not np.isfinite(bounds).all() or bounds[0] < 0 or bounds[1] < 0
            or bounds[2] > image.width or bounds[3] > image.height):
        raise BadRequest(
            f"{label}: geometry with bounds ({', '.join(f'{b:g}' for b in bounds)}) lies outside image "
            f"{image.id}, whose bounds are (0, 0, {image.width}, {image.height})")
    return geometry


def measure(geometry: BaseGeometry) -> Measures:
    """Area, perimeter and centroid (of the repaired geometry when it is self-intersecting)."""
    valid = geometry if geometry.is_valid else shapely.make_valid(geometry)
    centroid = valid.centroid if not valid.is_empty else geometry.centroid
    return Measures(float(valid.area), float(valid.length), float(centroid.x), float(centroid.y))


def to_raster(geometry: BaseGeometry | np.ndarray, image_height: int) -> BaseGeometry | np.ndarray:
    """The same geometry (or array of geometries) with the origin at the top-left (y pointing down)."""
    return shapely.transform(geometry, lambda xy: np.column_stack([xy[:, 0], image_height - xy[:, 1]]))
