"""Box detection metrics: IoU, greedy matching by score, AP per class and mAP (PASCAL VOC style)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .detection import average_precision


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N × 4: x0, y0, x1, y1) with every box of `b` (M × 4): N × M."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(pred: np.ndarray, scores: Sequence[float], true: np.ndarray,
                iou_threshold: float = 0.5) -> np.ndarray:
    """Per prediction, whether it is a true positive: by decreasing score, each takes the unmatched
    true box it overlaps most, if that IoU reaches `iou_threshold`."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) != len(np.asarray(pred).reshape(-1, 4)):
        raise ValueError(f"expected one score per box, got {len(scores)} scores for {len(pred)} boxes")
    iou = box_iou(pred, true)
    taken = np.zeros(iou.shape[1], dtype=bool)
    is_tp = np.zeros(len(scores), dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        if not iou.shape[1]:
            break
        candidates = np.where(taken, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            taken[j], is_tp[i] = True, True
    return is_tp


@dataclass
class BoxDetections:
    """One image's predicted and true boxes with their classes (1-based) and predicted scores."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    true_boxes: np.ndarray
    true_classes: np.ndarray


def average_precision_per_class(images: Sequence[BoxDetections], class_names: Sequence[str],
                                iou_threshold: float = 0.5) -> dict[str, float]:
    """AP at `iou_threshold` per class (keyed by name; index 0 = background is skipped) and "mAP"."""
    result: dict[str, float] = {}
    for index, name in enumerate(class_names):
        if index == 0:
            continue
        scores, hits, n_true = [], [], 0
        for image in images:
            mine = np.asarray(image.classes) == index
            truth = np.asarray(image.true_classes) == index
            scores.append(np.asarray(image.scores)[mine])
            hits.append(match_boxes(np.asarray(image.boxes).reshape(-1, 4)[mine], scores[-1],
                                    np.asarray(image.true_boxes).reshape(-1, 4)[truth], iou_threshold))
            n_true += int(truth.sum())
        result[name] = average_precision(np.concatenate(scores), np.concatenate(hits), n_true)
    result["mAP"] = float(np.mean([result[name] for name in class_names[1:]]))
    return result
