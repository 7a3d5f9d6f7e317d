"""Training targets of the detection heads, from instance labels or from boxes.

Per object (StarDist's object probability, Schmidt et al. 2018): in its class's map, its pixels'
distance to its boundary divided by the largest such distance, so 1 at its most interior pixel
(its centre, inside even a crescent) and falling to 0 at its edge; a box's distance is to its
sides. At the pixels in the inner part of an object (probability > `RAY_REGION`; where boxes
overlap, a pixel belongs to the object it is deepest in) the distances along each ray to the
object's own boundary, weighted by the probability. With labels, the foreground target is the
objects minus the seams between touching ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from segmenter.star import box_distances, label_distances
from transforms import touching_borders

RAY_REGION = 0.4


@dataclass
class Targets:
    heat: np.ndarray  # K × H × W in [0, 1]
    rays: np.ndarray  # R × H × W, pixels
    ray_weight: np.ndarray  # H × W
    foreground: np.ndarray | None  # H × W bool, None without masks


def _add_object(heat: np.ndarray, owner: np.ndarray, best: np.ndarray, index: int,
                window: tuple[slice, slice], depth: np.ndarray, full_depth: float | None = None) -> None:
    """Draw one object's depth (H×W of its `window`) divided by its deepest value `full_depth` (default:
    the deepest in the window) into `heat` (its class map), and claim the pixels of its inner part that
    no deeper object holds."""
    top = float(depth.max()) if full_depth is None else full_depth
    if top <= 0:
        return
    prob = np.clip(depth / top, 0, 1).astype(np.float32)
    np.maximum(heat[window], prob, out=heat[window])
    region = (prob > RAY_REGION) & (prob > best[window])
    owner[window][region] = index
    best[window][region] = prob[region]


def _ray_targets(owner: np.ndarray, n_rays: int,
                 distances: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """R × H × W ray targets: at each owned pixel, `distances(points, owners)` (P × R), zero elsewhere."""
    rays = np.zeros((n_rays,) + owner.shape, dtype=np.float32)
    points = np.argwhere(owner >= 0)
    if len(points):
        rays[:, points[:, 0], points[:, 1]] = distances(points, owner[points[:, 0], points[:, 1]]).T
    return rays


def label_targets(labels: np.ndarray, n_rays: int, max_distance: float) -> Targets:
    """Targets of an instance label image (one class)."""
    heat = np.zeros((1,) + labels.shape, dtype=np.float32)
    owner = np.full(labels.shape, -1, dtype=np.int64)
    best = np.zeros(labels.shape, dtype=np.float32)
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is not None:
            depth = ndimage.distance_transform_edt(np.pad(labels[window] == index, 1))[1:-1, 1:-1]
            _add_object(heat[0], owner, best, index, window, depth)
    rays = _ray_targets(owner, n_rays, lambda points, owners: label_distances(labels, points, owners, n_rays,
                                                                              max_distance))
    foreground = (labels > 0) & ~touching_borders(labels)
    return Targets(heat, rays, np.where(owner >= 0, best, 0.0).astype(np.float32), foreground)


def box_targets(boxes: np.ndarray, classes: np.ndarray, shape: tuple[int, int], n_classes: int,
                n_rays: int) -> Targets:
    """Targets of class boxes (x0, y0, x1, y1; classes 1-based); no foreground target."""
    heat = np.zeros((n_classes,) + shape, dtype=np.float32)
    owner = np.full(shape, -1, dtype=np.int64)
    best = np.zeros(shape, dtype=np.float32)
    for index, ((x0, y0, x1, y1), cls) in enumerate(zip(boxes, classes)):
        r0, r1 = max(0, int(np.floor(y0))), min(shape[0], int(np.ceil(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(shape[1], int(np.ceil(x1)))
        if r0 >= r1 or c0 >= c1:
            continue
        rows, cols = np.arange(r0, r1)[:, None] + 0.5, np.arange(c0, c1)[None, :] + 0.5
        depth = np.minimum(np.minimum(rows - y0, y1 - rows), np.minimum(cols - x0, x1 - cols)).clip(min=0)
        _add_object(heat[int(cls) - 1], owner, best, index, (slice(r0, r1), slice(c0, c1)), depth,
                    full_depth=min(x1 - x0, y1 - y0) / 2)
    rays = _ray_targets(owner, n_rays, lambda points, owners: box_distances(points, boxes[owners], n_rays))
    return Targets(heat, rays, np.where(owner >= 0, best, 0.0).astype(np.float32), None)
