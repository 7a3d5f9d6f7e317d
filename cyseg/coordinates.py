"""The one conversion between image coordinates and Cytomine's.

Image (numpy, OpenSlide, SLDC) coordinates: x = column, y = row, origin at the top-left, y down.
Cytomine annotation coordinates: full-resolution pixels, origin at the bottom-left, y up.
Both use pixel edges: pixel (row r, column c) covers x in [c, c+1], y in [r, r+1] (top-left), i.e.
y in [H-r-1, H-r] in Cytomine's frame. The flip is its own inverse, so the same affine map serves
both directions; two names keep call sites readable.
"""
from __future__ import annotations

from typing import TypeVar

from shapely import affinity
from shapely.geometry.base import BaseGeometry

G = TypeVar("G", bound=BaseGeometry)


def _flip(geometry: G, image_height: float) -> G:
    # x' = x, y' = image_height - y
    return affinity.affine_transform(geometry, [1, 0, 0, -1, 0, image_height])


def to_cytomine(geometry: G, image_height: float) -> G:
    """Full-resolution image coordinates (origin top-left) -> Cytomine coordinates (origin bottom-left)."""
    return _flip(geometry, image_height)


def from_cytomine(geometry: G, image_height: float) -> G:
    """Cytomine coordinates (origin bottom-left) -> full-resolution image coordinates (origin top-left)."""
    return _flip(geometry, image_height)
