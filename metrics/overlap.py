"""Pixel overlap between two binary masks."""
from __future__ import annotations

import numpy as np


def _binary_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two bool or 0/1 arrays of one shape and return them as bool."""
    out = []
    for name, a in (("pred", pred), ("target", target)):
        a = np.asarray(a)
        if a.dtype != bool:
            if not np.isin(a, (0, 1)).all():
                raise ValueError(f"expected {name} as a boolean or 0/1 mask (use labels > 0 for label images)")
            a = a.astype(bool)
        out.append(a)
    if out[0].shape != out[1].shape:
        raise ValueError(f"expected pred and target of one shape, got {out[0].shape} and {out[1].shape}")
    return out[0], out[1]


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """2 |A and B| / (|A| + |B|); 1.0 when both masks are empty."""
    a, b = _binary_pair(pred, target)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def jaccard(pred: np.ndarray, target: np.ndarray) -> float:
    """|A and B| / |A or B| (intersection over union); 1.0 when both masks are empty."""
    a, b = _binary_pair(pred, target)
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union
