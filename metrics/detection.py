"""Ranked-detection metrics: precision-recall curve and average precision (AP).

Detections are ranked by decreasing score; ties keep their input order.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _cumulative(scores: Sequence[float], is_tp: Sequence[bool], n_true: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each of the ranked detections."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    hits = np.asarray(is_tp, dtype=bool).ravel()
    if scores.shape != hits.shape:
        raise ValueError(f"expected one is_tp flag per score, got {scores.size} scores and {hits.size} flags")
    if n_true < 0:
        raise ValueError(f"expected n_true >= 0, got {n_true}")
    if hits.sum() > n_true:
        raise ValueError(f"more true positives ({int(hits.sum())}) than true instances ({n_true})")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    precision = tp / np.arange(1, tp.size + 1)
    recall = tp / n_true if n_true else np.zeros(tp.size)
    return precision, recall


def precision_recall_curve(scores: Sequence[float], is_tp: Sequence[bool],
                           n_true: int) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) after each detection in ranked order (raw points, for plotting)."""
    return _cumulative(scores, is_tp, n_true)


def average_precision(scores: Sequence[float], is_tp: Sequence[bool], n_true: int) -> float:
    """Area under the precision-recall curve with the monotone precision envelope.

    All-point interpolation (PASCAL VOC 2010+ style): at each recall step the precision is the
    best precision at that or any higher recall. With no true instances AP is 1.0 when there
    are no detections either and 0.0 otherwise.
    """
    precision, recall = _cumulative(scores, is_tp, n_true)
    if n_true == 0:
        return 1.0 if precision.size == 0 else 0.0
    if precision.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(recall, prepend=0.0)
    return float((steps * envelope).sum())
