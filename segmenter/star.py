"""Star-convex outlines: rays from a point to an object's boundary, and back to polygons.

An object seen from a point inside it is described by the distances to its boundary along `n_rays`
equally spaced directions (Schmidt et al., "Cell detection with star-convex polygons",
MICCAI 2018). Directions start along +x (columns) and turn towards +y (rows).
"""
from __future__ import annotations

import numpy as np
from shapely import STRtree
from shapely.geometry import Polygon
from skimage.draw import polygon as fill_polygon

RAY_STEP = 1.0  # pixels between samples when marching along a ray


def directions(n_rays: int) -> np.ndarray:
    """n_rays × 2 unit vectors (dy, dx)."""
    angles = 2 * np.pi * np.arange(n_rays) / n_rays
    return np.stack([np.sin(angles), np.cos(angles)], axis=1)


def label_distances(labels: np.ndarray, points: np.ndarray, owners: np.ndarray, n_rays: int,
                    max_distance: float) -> np.ndarray:
    """Distances from each (row, col) point to where its owner label ends, along each ray.

    points: P × 2 integer pixels; owners: P labels (the object each point describes). Leaving the
    image counts as leaving the object. Returns P × n_rays float32 (capped at `max_distance`).
    """
    steps = np.arange(RAY_STEP, max_distance + RAY_STEP, RAY_STEP, dtype=np.float32)
    distances = np.full((len(points), n_rays), max_distance, dtype=np.float32)
    height, width = labels.shape
    for k, (dy, dx) in enumerate(directions(n_rays)):
        rows = np.rint(points[:, :1] + dy * steps[None]).astype(np.int64)
        cols = np.rint(points[:, 1:] + dx * steps[None]).astype(np.int64)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        same = np.zeros(rows.shape, dtype=bool)
        same[inside] = labels[rows[inside], cols[inside]] == np.broadcast_to(owners[:, None], rows.shape)[inside]
        left = ~same
        first = left.argmax(axis=1)
        has_left = left.any(axis=1)
        distances[has_left, k] = steps[first[has_left]]
    return distances


def box_distances(points: np.ndarray, boxes: np.ndarray, n_rays: int) -> np.ndarray:
    """Distances from each (row, col) point to the boundary of its box (x0, y0, x1, y1), per ray."""
    rows, cols = points[:, :1].astype(np.float32), points[:, 1:].astype(np.float32)
    x0, y0, x1, y1 = (boxes[:, i:i + 1].astype(np.float32) for i in range(4))
    dy, dx = directions(n_rays).T.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(dx > 1e-6, (x1 - cols) / dx, np.where(dx < -1e-6, (x0 - cols) / dx, np.inf))
        ty = np.where(dy > 1e-6, (y1 - rows) / dy, np.where(dy < -1e-6, (y0 - rows) / dy, np.inf))
    return np.maximum(np.minimum(tx, ty), 0.0).astype(np.float32)


def polygon_vertices(center: tuple[float, float], distances: np.ndarray) -> np.ndarray:
    """n_rays × 2 (row, col) vertices of the star polygon around `center`."""
    return np.asarray(center, dtype=np.float64)[None] + distances[:, None] * directions(len(distances))


def to_polygon(vertices: np.ndarray) -> Polygon:
    """A valid shapely polygon (x = col, y = row) from (row, col) vertices."""
    polygon = Polygon(vertices[:, ::-1])
    return polygon if polygon.is_valid else polygon.buffer(0)


def suppress(polygons: list[Polygon], scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first; a polygon is dropped when
    its IoU with a kept one exceeds `iou_threshold`."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    tree = STRtree(polygons)
    dropped = np.zeros(len(polygons), dtype=bool)
    kept: list[int] = []
    for i in order:
        if dropped[i]:
            continue
        kept.append(int(i))
        for j in tree.query(polygons[i]):
            if j == i or dropped[j]:
                continue
            inter = polygons[i].intersection(polygons[j]).area
            union = polygons[i].area + polygons[j].area - inter
            if union > 0 and inter / union > iou_threshold:
                dropped[j] = True
    return kept


def rasterize(vertices: list[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An int32 label image where polygon i (row, col vertices) gets label i + 1, later polygons drawn
    over earlier ones, and each polygon's own area in pixels (before anything is drawn over it)."""
    labels = np.zeros(shape, dtype=np.int32)
    areas = np.zeros(len(vertices), dtype=np.int64)
    for index, polygon in enumerate(vertices, start=1):
        rows, cols = fill_polygon(polygon[:, 0], polygon[:, 1], shape)
        labels[rows, cols] = index
        areas[index - 1] = len(rows)
    return labels, areas
