"""Input checks shared by the transforms: each returns the validated array or raises ValueError."""
from __future__ import annotations

from dataclasses import fields

import numpy as np


def check_mask(mask: np.ndarray) -> np.ndarray:
    """Return a 2-D mask as bool; accepts bool or 0/1 arrays."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"expected a boolean or 0/1 mask, got values in [{mask.min()}, {mask.max()}]")
        mask = mask.astype(bool)
    return mask


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Return a 2-D non-negative integer label image unchanged (bool is not labels)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected an integer label image, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"expected non-negative labels, got minimum {labels.min()}")
    return labels


def from_known_fields(cls, d: dict):
    """`cls(**d)` for a dataclass, with unknown keys an error that names them."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}, expected a subset of {sorted(known)}")
    return cls(**d)
