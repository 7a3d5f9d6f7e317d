"""Merging the objects of overlapping tiles into one polygon per object.

`Merger` is the step's interface; `needs_instances` says which tile results it merges:

- `SemanticTileMerger` (class masks): SLDC's semantic merger. Polygons of the same class from
  neighbouring tiles that overlap or touch become one, so touching nuclei of one class that cross
  a tile seam are fused.
- `InstanceMerger` (instances): each object is kept exactly once, from the tile responsible for it,
  and touching objects are never fused (see the class for the rules).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np
import shapely
import sldc
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry

from cyseg.pipeline.tiles import TilePolygons, polygon_parts, region_size, tile_box

SAME_OBJECT = 0.5  # intersection over the smaller area above which two objects of two tiles are one
AGREEMENT = 0.5  # IoU, where their tiles meet, above which two cut pieces are parts of one object


@dataclass(frozen=True)
class MergedObject:
    """One object of a region (region coordinates): its outline, class label and score (None when
    the segmenter gives no scores)."""

    polygon: Polygon
    label: int
    score: float | None = None


class Merger(Protocol):
    needs_instances: bool  # True: merges an instance segmenter's objects (scores, cut flags)

    def merge(self, found: TilePolygons, topology: sldc.TileTopology) -> list[MergedObject]:
        """One object per object found in the tiles of `topology`."""


class SemanticTileMerger:
    """SLDC's `SemanticMerger`: same-class polygons closer than `tolerance` across tile seams are fused."""

    needs_instances = False

    def __init__(self, tolerance: float = 1.0) -> None:
        self.tolerance = tolerance

    def merge(self, found: TilePolygons, topology: sldc.TileTopology) -> list[MergedObject]:
        if not any(found.polygons):
            return []
        merged, labels = sldc.SemanticMerger(self.tolerance).merge(found.tile_ids, found.polygons, topology,
                                                                    labels=found.labels)
        return [MergedObject(part, int(label)) for geometry, label in zip(merged, labels)
                for part in polygon_parts(geometry)]


def tile_core(tile: tuple[int, int, int, int], size: tuple[int, int], overlap: float) -> tuple[float, ...]:
    """The part of a tile (left, top, right, bottom) it is responsible for: without half the overlap on
    each side shared with a neighbour, up to the border on the region's sides. The cores of a
    topology's tiles partition the region (as half-open boxes)."""
    left, top, right, bottom = tile
    half = overlap / 2
    return (left + half if left > 0 else left, top + half if top > 0 else top,
            right - half if right < size[0] else right, bottom - half if bottom < size[1] else bottom)


def shared_zone(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> BaseGeometry | None:
    """Where two tiles meet: the box both cover, or the seam line between them when they do not
    overlap; None when they share at most a corner point."""
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    if right > left and bottom > top:
        return box(left, top, right, bottom)
    if (right > left and bottom == top) or (bottom > top and right == left):
        return LineString([(left, top), (right, bottom)])
    return None


def agree_in_zone(a: Polygon, b: Polygon, zone: BaseGeometry) -> float:
    """IoU of two polygons inside `zone` (by area, or by length when the zone is a line)."""
    measure = shapely.area if zone.area > 0 else shapely.length
    part_a, part_b = a.intersection(zone), b.intersection(zone)
    common = float(measure(part_a.intersection(part_b)))
    union = float(measure(part_a)) + float(measure(part_b)) - common
    return common / union if union > 0 else 0.0


class InstanceMerger:
    """Each object of an instance segmenter kept exactly once across overlapping tiles.

    After StarDist's tiled prediction ("big"), each tile is responsible for its *core* (`tile_core`):

    1. An object that does not touch an inner edge of its tile (it is whole) and whose centroid lies
       in the tile's core is *owned* by that tile.
    2. Objects are visited owned first, then the other whole ones, each by decreasing score (then
       tile, then position in the tile). One is dropped when it overlaps an object kept from another
       tile by more than `same_object` of the smaller area (intersection over the smaller area, not
       IoU: a cut piece lies inside the whole object, so it scores near 1 however small it is, while
       two distinct instances overlap at most along their outlines and score near 0).
    3. Cut pieces (touching an inner edge) that overlap no kept object this way are the objects
       seen whole in no tile (larger than the overlap, or whose other tiles were not segmented).
       Pieces of the same class from two tiles are parts of one object when they agree where the
       tiles meet (`shared_zone`): IoU above `agreement` inside the box both tiles cover, or along
       the seam line when the overlap is 0. Each group of parts becomes the union of its pieces (its
       score the area-weighted mean), dropped like any object when it overlaps a kept one.

    Distinct objects that merely touch are never fused: tiles only fuse pieces that coincide where
    both tiles see them. With overlap 0 nothing tells an object cut by a seam from two objects
    touching exactly along it; both are unioned. The result is deterministic.
    """

    needs_instances = True

    def __init__(self, same_object: float = SAME_OBJECT, agreement: float = AGREEMENT) -> None:
        self.same_object = same_object
        self.agreement = agreement

    def merge(self, found: TilePolygons, topology: sldc.TileTopology) -> list[MergedObject]:
        if found.scores is None or found.cut is None:
            raise ValueError("the instance merger needs the objects of a segmenter that returns instances")
        polygons = np.array([p for tile in found.polygons for p in tile], dtype=object)
        if not len(polygons):
            return []
        tiles = np.array([t for t, tile in zip(found.tile_ids, found.polygons) for _ in tile])
        labels = np.array([label for tile in found.labels for label in tile])
        scores = np.array([score for tile in found.scores for score in tile], dtype=float)
        cut = np.array([flag for tile in found.cut for flag in tile], dtype=bool)
        boxes = {t: tile_box(topology.tile(t)) for t in set(tiles.tolist())}
        areas = shapely.area(polygons)

        owned = ~cut & self._in_core(polygons, tiles, boxes, region_size(topology), topology.overlap)
        tier = np.where(owned, 0, np.where(cut, 2, 1))
        order = np.lexsort((np.arange(len(polygons)), tiles, -scores, tier))
        tree = shapely.STRtree(polygons)
        first, second = tree.query(polygons, predicate="intersects")
        across = (first < second) & (tiles[first] != tiles[second])
        first, second = first[across], second[across]
        common = shapely.area(shapely.intersection(polygons[first], polygons[second]))
        same = common > self.same_object * np.minimum(areas[first], areas[second])
        conflicts: dict[int, list[int]] = {}
        for i, j in zip(first[same].tolist(), second[same].tolist()):
            conflicts.setdefault(i, []).append(j)
            conflicts.setdefault(j, []).append(i)

        kept = np.zeros(len(polygons), dtype=bool)
        for i in order[tier[order] < 2].tolist():
            kept[i] = not any(kept[j] for j in conflicts.get(i, ()))
        pieces = [i for i in order[tier[order] == 2].tolist() if not any(kept[j] for j in conflicts.get(i, ()))]
        merged = [MergedObject(polygons[i], int(labels[i]), float(scores[i])) for i in order.tolist() if kept[i]]

        groups = self._groups(pieces, zip(first.tolist(), second.tolist()), polygons, labels, tiles, boxes)
        joined: list[Polygon] = []
        for group in groups:
            parts = polygon_parts(shapely.union_all(polygons[group]))
            polygon = max(parts, key=lambda p: p.area)
            nearby = [polygons[j] for j in tree.query(polygon, predicate="intersects").tolist() if kept[j]]
            if any(self._same(polygon, other) for other in nearby + joined):
                continue
            joined.append(polygon)
            score = float(np.average(scores[group], weights=areas[group]))
            merged.append(MergedObject(polygon, int(labels[group[0]]), score))
        return merged

    @staticmethod
    def _in_core(polygons: np.ndarray, tiles: np.ndarray, boxes: dict[int, tuple[int, int, int, int]],
                 size: tuple[int, int], overlap: int) -> np.ndarray:
        """Whether each polygon's centroid lies in its tile's core (half-open: left/top edges included)."""
        centroids = shapely.centroid(polygons)
        x, y = shapely.get_x(centroids), shapely.get_y(centroids)
        cores = np.array([tile_core(boxes[t], size, overlap) for t in tiles.tolist()])
        return (cores[:, 0] <= x) & (x < cores[:, 2]) & (cores[:, 1] <= y) & (y < cores[:, 3])

    def _same(self, a: Polygon, b: Polygon) -> bool:
        return a.intersection(b).area > self.same_object * min(a.area, b.area)

    def _groups(self, pieces: list[int], pairs: Iterable[tuple[int, int]], polygons: np.ndarray, labels: np.ndarray,
                tiles: np.ndarray, boxes: dict[int, tuple[int, int, int, int]]) -> list[list[int]]:
        """The pieces grouped by object (union-find over pieces of the same class that agree where their
        tiles meet), each group in the order of `pieces`, groups by their first piece."""
        position = {piece: n for n, piece in enumerate(pieces)}
        parent = list(range(len(pieces)))

        def root(n: int) -> int:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for i, j in pairs:
            if i not in position or j not in position or labels[i] != labels[j]:
                continue
            zone = shared_zone(boxes[tiles[i]], boxes[tiles[j]])
            if zone is not None and agree_in_zone(polygons[i], polygons[j], zone) > self.agreement:
                a, b = sorted((root(position[i]), root(position[j])))
                parent[b] = a
        groups: dict[int, list[int]] = {}
        for n, piece in enumerate(pieces):
            groups.setdefault(root(n), []).append(piece)
        return list(groups.values())
