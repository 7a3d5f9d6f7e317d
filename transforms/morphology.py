"""Post-processing of probability maps and masks: smoothing, thresholding, morphology, size filters.

Binary operations use disk structuring elements. Erosion treats the outside of the image as
foreground, so objects cut by a tile border are not eaten away from that border.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

from ._validation import check_labels, check_mask
from .instances import connected_components

_OPS = ("open", "close", "erode", "dilate")


def smooth(prob: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (reflect boundary) of a 2-D map; sigma 0 returns a float32 copy."""
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob.shape}")
    if sigma < 0:
        raise ValueError(f"expected sigma >= 0, got {sigma}")
    if sigma == 0:
        return prob.astype(np.float32)
    return ndimage.gaussian_filter(prob.astype(np.float32), sigma, mode="reflect")


def threshold(prob: np.ndarray, value: float = 0.5) -> np.ndarray:
    """Foreground where `prob` is strictly above `value`."""
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob.shape}")
    return prob > value


def erode_dilate(mask: np.ndarray, radius: int = 1, op: str = "open") -> np.ndarray:
    """Binary opening, closing, erosion or dilation with a disk of `radius` px (0 = no-op)."""
    mask = check_mask(mask)
    if op not in _OPS:
        raise ValueError(f"unknown morphological op {op!r}, expected one of {_OPS}")
    if radius < 0:
        raise ValueError(f"expected radius >= 0, got {radius}")
    if radius == 0:
        return mask.copy()
    se = disk(radius).astype(bool)

    def erode(m: np.ndarray) -> np.ndarray:
        return ndimage.binary_erosion(m, se, border_value=1)

    def dilate(m: np.ndarray) -> np.ndarray:
        return ndimage.binary_dilation(m, se, border_value=0)

    steps = {"open": (erode, dilate), "close": (dilate, erode), "erode": (erode,), "dilate": (dilate,)}[op]
    for step in steps:
        mask = step(mask)
    return mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border."""
    return ndimage.binary_fill_holes(check_mask(mask))


def _filter_by_area(mask_or_labels: np.ndarray, keep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero the objects whose area fails `keep(areas)`; bool masks are labelled first."""
    arr = np.asarray(mask_or_labels)
    is_mask = arr.dtype == bool
    labels = connected_components(arr) if is_mask else check_labels(arr)
    areas = np.bincount(labels.ravel())
    kept = keep(areas)
    kept[0] = False
    out = np.where(kept[labels], labels, 0)
    return out.astype(bool) if is_mask else out.astype(labels.dtype)


def remove_small_objects(mask_or_labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects with fewer than `min_size` pixels.

    A bool mask is split into 8-connected components and a bool mask is returned; an integer
    label image keeps the ids (and dtype) of the surviving instances.
    """
    if min_size < 0:
        raise ValueError(f"expected min_size >= 0, got {min_size}")
    return _filter_by_area(mask_or_labels, lambda areas: areas >= min_size)


def remove_large_objects(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Remove objects with more than `max_size` pixels (label ids and dtype kept; bool masks too)."""
    if max_size < 0:
        raise ValueError(f"expected max_size >= 0, got {max_size}")
    return _filter_by_area(labels, lambda areas: areas <= max_size)
