"""Annotation geometry: WKT validation against its image and the flip to raster coordinates.

Cytomine geometries are WKT in full-resolution pixels with the origin at the bottom-left
(y grows upwards); rasters have it at the top-left. `to_raster` is the one place that flips.
"""
from __future__ import annotations

from collections.abc import Sequence
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


def parse_locations(wkts: Sequence[object], images: Sequence[Image], labels: Sequence[str]) -> np.ndarray:
    """The geometries of `wkts` (parsed and checked together), each of which must be non-empty and lie within its
    image; a 400 naming the first bad one's label otherwise."""
    for wkt, label in zip(wkts, labels):
        if not isinstance(wkt, str) or not wkt.strip():
            raise BadRequest(f"{label}: 'location' must be a WKT string")
    geometries = shapely.from_wkt(np.array(wkts, dtype=object), on_invalid="ignore")
    if (index := _first(shapely.is_missing(geometries))) is not None:
        try:
            shapely.from_wkt(wkts[index])  # again, alone, for GEOS's message
        except (ShapelyError, ValueError) as error:
            raise BadRequest(f"{labels[index]}: invalid WKT: {error}") from error
    if (index := _first(shapely.is_empty(geometries))) is not None:
        raise BadRequest(f"{labels[index]}: invalid WKT: empty geometry")
    bounds = shapely.bounds(geometries)
    sizes = np.array([(image.width, image.height) for image in images], dtype=float).reshape(-1, 2)
    outside = ~np.isfinite(bounds).all(axis=1) | (bounds[:, :2] < 0).any(axis=1) | (bounds[:, 2:] > sizes).any(axis=1)
    if (index := _first(outside)) is not None:
        image = images[index]
        raise BadRequest(
            f"{labels[index]}: geometry with bounds ({', '.join(f'{b:g}' for b in bounds[index])}) lies outside image "
            f"{image.id}, whose bounds are (0, 0, {image.width}, {image.height})")
    return geometries


def _first(mask: np.ndarray) -> int | None:
    """The index of the first true value of `mask`, None when there is none."""
    found = np.flatnonzero(mask)
    return int(found[0]) if found.size else None


def measures(geometries: Sequence[BaseGeometry] | np.ndarray) -> list[Measures]:
    """Area, perimeter and centroid of each geometry (of the repaired geometry when it is self-intersecting)."""
    geometries = np.asarray(geometries, dtype=object)
    valid = geometries.copy()
    broken = ~shapely.is_valid(geometries)
    valid[broken] = shapely.make_valid(geometries[broken])
    centroids = shapely.centroid(valid)
    collapsed = shapely.is_empty(valid)  # repaired into nothing: the centroid of the geometry as sent
    centroids[collapsed] = shapely.centroid(geometries[collapsed])
    columns = (shapely.area(valid), shapely.length(valid), shapely.get_x(centroids), shapely.get_y(centroids))
    return [Measures(*values) for values in zip(*(column.tolist() for column in columns))]


def to_raster(geometry: BaseGeometry | np.ndarray, image_height: int) -> BaseGeometry | np.ndarray:
    """The same geometry (or array of geometries) with the origin at the top-left (y pointing down)."""
    return shapely.transform(geometry, lambda xy: np.column_stack([xy[:, 0], image_height - xy[:, 1]]))
