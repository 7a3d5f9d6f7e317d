"""From binary masks to instance label images (background 0, instances 1..N, uint16)."""
from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from ._validation import check_labels, check_mask

logger = logging.getLogger(__name__)

#: 8-connectivity: diagonal neighbours belong to the same object.
CONNECTIVITY = np.ones((3, 3), dtype=bool)
MAX_LABEL = int(np.iinfo(np.uint16).max)
#: Sigma (pixels) of the Gaussian that smooths the distance transform before peak finding.
DISTANCE_SMOOTHING = 1.0


def _to_uint16(labels: np.ndarray, n: int) -> np.ndarray:
    if n > MAX_LABEL:
        raise ValueError(f"too many instances for uint16 labels: {n} > {MAX_LABEL}")
    return labels.astype(np.uint16)


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids present in `labels` to 1..N in increasing order; returns uint16."""
    labels = check_labels(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
    lut[ids] = np.arange(1, ids.size + 1)
    return _to_uint16(lut[labels], ids.size)


def connected_components(mask: np.ndarray) -> np.ndarray:
    """Label the 8-connected components of a 2-D mask as 1..N (uint16, 0 = background)."""
    labels, n = ndimage.label(check_mask(mask), structure=CONNECTIVITY)
    return _to_uint16(labels, n)


def _markers(relief: np.ndarray, components: np.ndarray, peaks: np.ndarray, min_depth: float) -> np.ndarray:
    """Watershed markers (ids 1..M) from the peaks: a component with one peak gets that pixel; in a
    component with several, each h-maximum (depth `min_depth`) holding a peak becomes a marker."""
    markers = np.zeros(components.shape, dtype=np.int64)
    peak_component = components[tuple(peaks.T)]
    n_peaks = np.bincount(peak_component, minlength=int(components.max()) + 1)
    single = peaks[n_peaks[peak_component] == 1]
    markers[tuple(single.T)] = np.arange(1, len(single) + 1)
    next_id = len(single) + 1
    boxes = ndimage.find_objects(components)
    for component in np.flatnonzero(n_peaks >= 2):
        box = boxes[component - 1]
        own = components[box] == component
        maxima, _ = ndimage.label(h_maxima(relief[box] * own, min_depth).astype(bool) & own, CONNECTIVITY)
        local = peaks[peak_component == component] - [box[0].start, box[1].start]
        kept = np.unique(maxima[tuple(local.T)])
        kept = kept[kept > 0]
        in_kept = np.isin(maxima, kept)
        markers[box][in_kept] = next_id + np.searchsorted(kept, maxima[in_kept])
        next_id += kept.size
    return markers


def split_touching(mask: np.ndarray, min_distance: int = 5, footprint: np.ndarray | None = None,
                   prob: np.ndarray | None = None, compactness: float = 0.0,
                   min_depth: float = 0.5) -> np.ndarray:
    """Split touching objects with a marker-controlled watershed on the distance transform.

    The relief is the Euclidean distance transform of the mask, weighted by `prob` when given
    (deepening the valleys at uncertain borders between touching objects) and smoothed with a
    Gaussian of sigma 1 px. Markers are its local maxima at least `min_distance` px apart
    (`peak_local_max`, per connected component) that stand at least `min_depth` px above the
    pass to any higher maximum (h-maxima); a maximum that is a plateau or ridge, as along a thin
    elongated nucleus, is one marker. A component left without a marker keeps one at its deepest
    point, so it survives whole. The flood is restricted to the mask. Returns uint16 labels 1..N.
    """
    mask = check_mask(mask)
    if min_distance < 1:
        raise ValueError(f"expected min_distance >= 1, got {min_distance}")
    if min_depth <= 0:
        raise ValueError(f"expected min_depth > 0, got {min_depth}")
    components = connected_components(mask)
    n_components = int(components.max())
    if n_components == 0:
        return components
    distance = ndimage.distance_transform_edt(mask)
    if prob is not None:
        prob = np.asarray(prob, dtype=np.float64)
        if prob.shape != mask.shape:
            raise ValueError(f"expected prob of shape {mask.shape}, got {prob.shape}")
        distance = distance * prob
    relief = ndimage.gaussian_filter(distance, DISTANCE_SMOOTHING) * mask
    peaks = peak_local_max(relief, min_distance=min_distance, footprint=footprint, labels=components,
                           exclude_border=False)
    markers = _markers(relief, components, peaks, min_depth)
    orphans = np.setdiff1d(np.arange(1, n_components + 1), components[markers > 0])
    if orphans.size:
        deepest = np.asarray(ndimage.maximum_position(distance, components, orphans)).reshape(-1, 2)
        markers[tuple(deepest.T)] = markers.max() + np.arange(1, orphans.size + 1)
    labels = watershed(-relief, markers, mask=mask, compactness=compactness)
    labels = relabel_consecutive(labels)
    logger.debug("split %d components into %d instances", n_components, int(labels.max()))
    return labels


def instance_scores(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Mean of `prob` inside each instance, for ids 1..labels.max() (an absent id scores 0)."""
    labels = check_labels(labels)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.shape != labels.shape:
        raise ValueError(f"expected prob of shape {labels.shape}, got {prob.shape}")
    n = int(labels.max(initial=0))
    flat = labels.ravel()
    sums = np.bincount(flat, weights=prob.ravel(), minlength=n + 1)[1:]
    counts = np.bincount(flat, minlength=n + 1)[1:]
    return np.divide(sums, counts, out=np.zeros(n), where=counts > 0).astype(np.float32)


def touching_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object that touch a different object (8-neighbourhood): the seams that keep
    touching objects apart when a label image is reduced to a mask."""
    labels = np.asarray(labels)
    background_high = np.where(labels == 0, np.iinfo(labels.dtype).max if labels.dtype.kind in "iu"
                               else np.inf, labels)
    lowest = ndimage.minimum_filter(background_high, size=3)
    highest = ndimage.maximum_filter(labels, size=3)
    return (labels > 0) & ((lowest != labels) | (highest != labels))
