"""QuPath's GeoJSON conventions, so that a pathologist can drag cyseg's results onto the slide in QuPath.

QuPath reads a FeatureCollection whose features each hold one geometry in pixels of the
full-resolution image, origin at the top-left (x = column, y = row), and QuPath's object in
`properties`: `objectType` (`detection` for nuclei: small, many, not edited by hand),
`classification` (the class name and an RGB colour) and `measurements` (name -> number; the
score goes there). Other properties are kept as they are (QuPath ignores them).
"""
from __future__ import annotations

import zlib
from typing import Any

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

DETECTION = "detection"
NUCLEUS_COLOUR = (230, 25, 75)


def class_colour(name: str) -> list[int]:
    """A stable RGB colour per class name (nuclei in Cytomine's default Nucleus red)."""
    if name.casefold() == "nucleus":
        return list(NUCLEUS_COLOUR)
    digest = zlib.crc32(name.encode())
    return [64 + (digest >> shift & 0xFF) * 191 // 255 for shift in (0, 8, 16)]


def detection(geometry: BaseGeometry, class_name: str, measurements: dict[str, float | None],
              **extra: Any) -> dict[str, Any]:
    """One QuPath detection: `geometry` in top-left full-resolution pixels, its class and its
    measurements (those without a value are left out: QuPath's measurements are numbers)."""
    properties = {"objectType": DETECTION,
                  "classification": {"name": class_name, "color": class_colour(class_name)},
                  "measurements": {key: value for key, value in measurements.items() if value is not None},
                  **extra}
    return {"type": "Feature", "geometry": mapping(geometry), "properties": properties}
