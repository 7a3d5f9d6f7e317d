"""From merged objects to the objects a job uploads: full resolution, inside the region of interest,
within the area bounds, simplified, in Cytomine's coordinates."""
from __future__ import annotations

from dataclasses import dataclass

from shapely import affinity
from shapely.geometry import Polygon
from shapely.prepared import prep

from cyseg.coordinates import to_cytomine
from cyseg.pipeline.merge import MergedObject
from cyseg.pipeline.tiles import polygon_parts


@dataclass(frozen=True)
class DetectedObject:
    """One object: its outline in Cytomine coordinates (full-resolution pixels, origin bottom-left),
    its area in full-resolution pixels², its class label (index into the model's classes) and its
    score (None when the segmenter gives none)."""

    polygon: Polygon
    area: float
    label: int
    score: float | None = None

    @property
    def centroid(self) -> tuple[float, float]:
        point = self.polygon.centroid
        return point.x, point.y


@dataclass(frozen=True)
class ObjectFilter:
    """How polygons become objects (sizes and tolerances in full-resolution pixels)."""

    min_area: float
    max_area: float
    simplify_tolerance: float


def finalize(merged: list[MergedObject], *, offset: tuple[int, int], factor: int, image_height: int,
             rules: ObjectFilter, roi: Polygon | None = None) -> list[DetectedObject]:
    """The objects `merged` in a region at `offset` of the level image (downsampled by `factor`).

    `roi` (full-resolution image coordinates) keeps only the objects whose centroid lies inside it.
    Objects come sorted top to bottom, then left to right (in image coordinates).
    """
    inside = prep(roi) if roi is not None else None
    kept: list[tuple[tuple[float, float], DetectedObject]] = []
    for obj in merged:
        full = affinity.scale(affinity.translate(obj.polygon, *offset), factor, factor, origin=(0, 0))
        if not (rules.min_area <= full.area <= rules.max_area):
            continue
        centroid = full.centroid
        if inside is not None and not inside.contains(centroid):
            continue
        parts = polygon_parts(full.simplify(rules.simplify_tolerance, preserve_topology=True)
                              if rules.simplify_tolerance else full)
        if not parts:
            continue
        outline = max(parts, key=lambda p: p.area)
        kept.append(((centroid.y, centroid.x),
                     DetectedObject(to_cytomine(outline, image_height), float(full.area), obj.label, obj.score)))
    return [obj for _, obj in sorted(kept, key=lambda item: item[0])]
