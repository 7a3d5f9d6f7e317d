"""One-to-one matching of predicted and true instances by intersection over union (IoU)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts.

    With neither predictions nor true instances (tp = fp = fn = 0) all three are 1.0: nothing
    was to be found and nothing was wrongly found. Any other 0/0 is 0.0.
    """
    if tp == fp == fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


@dataclass
class Matching:
    """The outcome of `match_instances`.

    `pairs` lists (pred_id, true_id, iou) by increasing pred_id; `pred_matched[i]` says whether
    predicted id i + 1 is matched (ids absent from the prediction are False and are not counted
    in n_pred). precision, recall and F1 follow `precision_recall_f1` (1.0 when there are
    neither predictions nor true instances, 0.0 for any other 0/0).
    """

    tp: int
    fp: int
    fn: int
    pairs: list[tuple[int, int, float]]
    pred_matched: np.ndarray
    n_pred: int
    n_true: int

    @property
    def precision(self) -> float:
        return precision_recall_f1(self.tp, self.fp, self.fn)[0]

    @property
    def recall(self) -> float:
        return precision_recall_f1(self.tp, self.fp, self.fn)[1]

    @property
    def f1(self) -> float:
        return precision_recall_f1(self.tp, self.fp, self.fn)[2]


def _check_labels(name: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected {name} as an integer label image, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"expected non-negative {name}, got minimum {labels.min()}")
    return labels.ravel().astype(np.int64)


def _overlaps(pred_labels: np.ndarray, true_labels: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred_id, true_id, iou) for every overlapping pair, plus the areas indexed by id.

    Built from the contingency table of overlapping pixels, so the cost grows with the number
    of pixels, not with the number of instance pairs.
    """
    if np.shape(pred_labels) != np.shape(true_labels):
        raise ValueError(f"expected label images of one shape, got {np.shape(pred_labels)} and {np.shape(true_labels)}")
    p = _check_labels("pred_labels", pred_labels)
    t = _check_labels("true_labels", true_labels)
    area_p = np.bincount(p, minlength=1)
    area_t = np.bincount(t, minlength=1)
    both = (p > 0) & (t > 0)
    stride = area_t.size
    codes, inter = np.unique(p[both] * stride + t[both], return_counts=True)
    pi, ti = np.divmod(codes, stride)
    iou = inter / (area_p[pi] + area_t[ti] - inter)
    return pi, ti, iou, area_p, area_t


def match_instances(pred_labels: np.ndarray, true_labels: np.ndarray, iou_threshold: float = 0.5) -> Matching:
    """Match predicted to true instances one-to-one among pairs with IoU >= `iou_threshold`.

    Above 0.5 an instance can overlap at most one partner that much, so matches are unique; for
    lower thresholds the matching is the maximum-total-IoU assignment (Hungarian algorithm),
    solved separately on each connected group of candidate pairs.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"expected iou_threshold in [0, 1], got {iou_threshold}")
    pi, ti, iou, area_p, area_t = _overlaps(pred_labels, true_labels)
    ok = iou >= iou_threshold
    pi, ti, iou = pi[ok], ti[ok], iou[ok]
    n_pred = int(np.count_nonzero(area_p[1:]))
    n_true = int(np.count_nonzero(area_t[1:]))

    chosen = np.zeros(pi.size, dtype=bool)
    if pi.size:
        # Bipartite graph of candidates: nodes 0..P-1 are pred ids, P.. are true ids.
        n_p, n_t = int(pi.max()) + 1, int(ti.max()) + 1
        graph = sparse.coo_matrix((np.ones(pi.size), (pi, n_p + ti)), shape=(n_p + n_t,) * 2)
        _, node_group = connected_components(graph, directed=False)
        group = node_group[pi]
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
        for members in np.split(order, starts[1:]):
            if members.size == 1:
                chosen[members] = True
                continue
            rows, row_idx = np.unique(pi[members], return_inverse=True)
            cols, col_idx = np.unique(ti[members], return_inverse=True)
            weights = np.zeros((rows.size, cols.size))
            weights[row_idx, col_idx] = iou[members]
            r, c = linear_sum_assignment(weights, maximize=True)
            picked = {(int(rows[a]), int(cols[b])) for a, b in zip(r, c) if weights[a, b] > 0}
            chosen[members] = [(int(pi[m]), int(ti[m])) in picked for m in members]

    pairs = sorted((int(a), int(b), float(v)) for a, b, v in zip(pi[chosen], ti[chosen], iou[chosen]))
    pred_matched = np.zeros(area_p.size - 1, dtype=bool)
    pred_matched[[a - 1 for a, _, _ in pairs]] = True
    tp = len(pairs)
    return Matching(tp=tp, fp=n_pred - tp, fn=n_true - tp, pairs=pairs, pred_matched=pred_matched,
                    n_pred=n_pred, n_true=n_true)
