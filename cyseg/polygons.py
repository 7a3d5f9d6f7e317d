"""Label images to polygons (rasterio + shapely) and polygons to GeoJSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from rasterio import features
from shapely.geometry import Polygon, mapping, shape


def label_polygons(labels: np.ndarray, offset: tuple[int, int] = (0, 0)) -> dict[int, Polygon]:
    """One polygon per label id (pixel-edge outlines, numpy top-left coordinates: x = column,
    y = row), shifted by `offset` = (x, y). An object cut into pieces keeps its largest piece."""
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {labels.shape}")
    labels = labels.astype(np.int32, copy=False)
    pieces: dict[int, list[Polygon]] = {}
    for geometry, value in features.shapes(labels, mask=labels > 0, connectivity=4):
        pieces.setdefault(int(value), []).append(shape(geometry))
    dx, dy = offset
    polygons = {}
    for label, parts in pieces.items():
        polygon = max(parts, key=lambda p: p.area)
        polygons[label] = Polygon(np.asarray(polygon.exterior.coords) + (dx, dy),
                                  [np.asarray(ring.coords) + (dx, dy) for ring in polygon.interiors])
    return dict(sorted(polygons.items()))


def feature_collection(items: Iterable[tuple[Polygon, dict[str, Any]]]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of (polygon, properties) pairs."""
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": mapping(polygon), "properties": props}
                         for polygon, props in items]}


def write_geojson(path: str | Path, collection: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(collection))
    return path
