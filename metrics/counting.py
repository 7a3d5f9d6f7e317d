"""Counting error: how far the number of detected objects is from the truth."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def count_mape(pred_counts: Sequence[float], true_counts: Sequence[float]) -> float:
    """Mean absolute percentage error of counts: mean of 100 |p - t| / t over images with t > 0.

    Images with no true object are left out (their relative error is undefined); NaN when no
    image has a true object.
    """
    p = np.asarray(pred_counts, dtype=np.float64).ravel()
    t = np.asarray(true_counts, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"expected as many predicted as true counts, got {p.size} and {t.size}")
    if (p < 0).any() or (t < 0).any():
        raise ValueError("expected non-negative counts")
    keep = t > 0
    if not keep.any():
        logger.warning("count MAPE undefined: no image has a true object")
        return float("nan")
    return float(100.0 * np.mean(np.abs(p[keep] - t[keep]) / t[keep]))
