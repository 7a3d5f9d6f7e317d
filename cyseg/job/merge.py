"""Merging the polygons of overlapping tiles into one polygon per object.

`Merger` is the step's interface; `SemanticTileMerger` is SLDC's semantic merger: polygons of the
same class from neighbouring tiles that overlap or touch (closer than `tolerance`) become one.
It relies on the model keeping touching nuclei apart by a one-pixel seam; an instance-aware
merger (which decides per object which tile owns it) can replace it behind the same interface.
"""
from __future__ import annotations

from typing import Protocol

import sldc
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from cyseg.job.tiles import TilePolygons


class Merger(Protocol):
    def merge(self, found: TilePolygons, topology: sldc.TileTopology) -> tuple[list[Polygon], list[int]]:
        """One polygon per object (region coordinates) and its class label."""


def polygon_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The valid, non-empty polygons a geometry is made of."""
    if geometry.is_empty:
        return []
    if not geometry.is_valid:
        geometry = geometry.buffer(0)
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    return [part for part in getattr(geometry, "geoms", []) if isinstance(part, Polygon) and not part.is_empty]


class SemanticTileMerger:
    """SLDC's `SemanticMerger`: same-class polygons closer than `tolerance` across tile seams are fused."""

    def __init__(self, tolerance: float = 1.0) -> None:
        self.tolerance = tolerance

    def merge(self, found: TilePolygons, topology: sldc.TileTopology) -> tuple[list[Polygon], list[int]]:
        if not any(found.polygons):
            return [], []
        merged, labels = sldc.SemanticMerger(self.tolerance).merge(found.tile_ids, found.polygons, topology,
                                                                    labels=found.labels)
        polygons: list[Polygon] = []
        kept_labels: list[int] = []
        for geometry, label in zip(merged, labels):
            for part in polygon_parts(geometry):
                polygons.append(part)
                kept_labels.append(int(label))
        return polygons, kept_labels
