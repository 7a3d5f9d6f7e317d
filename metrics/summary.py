"""Per-image results pooled into dataset metrics, overall and per blur level."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .counting import count_mape
from .detection import average_precision
from .matching import match_instances, precision_recall_f1
from .overlap import dice, jaccard


def nhm(f1_sharp: float, f1_blurry: float) -> float:
    """Harmonic mean of the sharp and blurry F1 (0 when either is 0): high only if both are."""
    for name, v in (("f1_sharp", f1_sharp), ("f1_blurry", f1_blurry)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"expected {name} in [0, 1], got {v}")
    if f1_sharp == 0 or f1_blurry == 0:
        return 0.0
    return 2 * f1_sharp * f1_blurry / (f1_sharp + f1_blurry)


@dataclass
class ImageResult:
    """What one image contributes: matching counts, foreground overlap, and one detection score
    and matched flag per predicted instance (for AP)."""

    level: float
    tp: int
    fp: int
    fn: int
    n_pred: int
    n_true: int
    dice: float
    jaccard: float
    scores: list[float] = field(default_factory=list)
    is_tp: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tp + self.fp != self.n_pred or self.tp + self.fn != self.n_true:
            raise ValueError(f"inconsistent counts: tp={self.tp}, fp={self.fp}, fn={self.fn}, "
                             f"n_pred={self.n_pred}, n_true={self.n_true}")
        if len(self.scores) != self.n_pred or len(self.is_tp) != self.n_pred:
            raise ValueError(f"expected {self.n_pred} scores and is_tp flags (one per prediction), "
                             f"got {len(self.scores)} and {len(self.is_tp)}")
        if sum(bool(v) for v in self.is_tp) != self.tp:
            raise ValueError(f"expected {self.tp} true is_tp flags, got {sum(bool(v) for v in self.is_tp)}")


def evaluate_image(pred_labels: np.ndarray, true_labels: np.ndarray, scores: Sequence[float] | None = None,
                   level: float = 0.0, iou_threshold: float = 0.5) -> ImageResult:
    """Match instances and measure foreground overlap for one image.

    `scores[i]` is the detection score of predicted id i + 1 (e.g. `transforms.instance_scores`);
    None scores every prediction 1.0. Ids absent from `pred_labels` are skipped.
    """
    m = match_instances(pred_labels, true_labels, iou_threshold)
    present = np.flatnonzero(np.bincount(np.asarray(pred_labels).ravel(), minlength=1)[1:])
    if scores is None:
        scores = np.ones(m.pred_matched.size)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size < m.pred_matched.size:
        raise ValueError(f"expected a score for each predicted id up to {m.pred_matched.size}, got {scores.size}")
    pred_fg, true_fg = np.asarray(pred_labels) > 0, np.asarray(true_labels) > 0
    return ImageResult(level=level, tp=m.tp, fp=m.fp, fn=m.fn, n_pred=m.n_pred, n_true=m.n_true,
                       dice=dice(pred_fg, true_fg), jaccard=jaccard(pred_fg, true_fg),
                       scores=scores[present].tolist(), is_tp=m.pred_matched[present].tolist())


def _pooled_f1(results: Sequence[ImageResult]) -> float:
    return precision_recall_f1(sum(r.tp for r in results), sum(r.fp for r in results),
                               sum(r.fn for r in results))[2]


def summarize(results: Iterable[ImageResult]) -> dict[str, Any]:
    """Pool image results: precision/recall/F1 from summed tp/fp/fn, AP@0.5 from all detections
    ranked together, Dice/Jaccard averaged over images, count MAPE over images with objects."""
    results = list(results)
    if not results:
        raise ValueError("expected at least one ImageResult")
    tp, fp, fn = (sum(getattr(r, k) for r in results) for k in ("tp", "fp", "fn"))
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    n_true = sum(r.n_true for r in results)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ap50": average_precision([s for r in results for s in r.scores], [t for r in results for t in r.is_tp],
                                  n_true),
        "dice": float(np.mean([r.dice for r in results])),
        "jaccard": float(np.mean([r.jaccard for r in results])),
        "count_mape": count_mape([r.n_pred for r in results], [r.n_true for r in results]),
        "n_images": len(results),
        "tp": tp, "fp": fp, "fn": fn,
        "n_pred": sum(r.n_pred for r in results),
        "n_true": n_true,
    }


def level_key(level: float) -> str:
    """The per-level dictionary key: 2 and 2.0 both give "2", 1.5 gives "1.5"."""
    return f"{float(level):g}"


def summarize_by_level(results: Iterable[ImageResult], sharp_levels: Sequence[float] = (0,)) -> dict[str, Any]:
    """`{"overall": ..., "per_level": {level_key: ...}, "nhm": ...}` (levels in increasing order).

    A level is sharp when it is 0 or in `sharp_levels`, blurry otherwise. When both kinds were
    evaluated, "nhm" is the harmonic mean of the sharp F1 and the blurry F1, each pooled over all
    images of its kind, and "f1_sharp" / "f1_blurry" give the two; otherwise the three are absent.
    """
    results = list(results)
    by_level: dict[float, list[ImageResult]] = {}
    for r in results:
        by_level.setdefault(float(r.level), []).append(r)
    out: dict[str, Any] = {
        "overall": summarize(results),
        "per_level": {level_key(lv): summarize(by_level[lv]) for lv in sorted(by_level)},
    }
    sharp_set = {0.0, *map(float, sharp_levels)}
    sharp = [r for r in results if float(r.level) in sharp_set]
    blurry = [r for r in results if float(r.level) not in sharp_set]
    if sharp and blurry:
        out["f1_sharp"] = _pooled_f1(sharp)
        out["f1_blurry"] = _pooled_f1(blurry)
        out["nhm"] = nhm(out["f1_sharp"], out["f1_blurry"])
    return out
