"""Test-time augmentation: a dense prediction averaged over the eight flips and quarter turns of its
input (the dihedral group of the square), each mapped back to the input's orientation first. For a
network trained with flips and turns (all cyseg U-Nets) this costs eight forward passes and removes
some of the orientation-dependent noise of one pass (Moshkov et al., Sci. Rep. 2020, on nuclei)."""
from __future__ import annotations

from typing import Callable

import numpy as np

VIEWS = tuple((turns, flip) for turns in range(4) for flip in (False, True))


def _view(batch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """N×C×H×W `batch` turned `turns` quarter turns, then mirrored left-right if `flip`."""
    turned = np.rot90(batch, turns, axes=(2, 3))
    return np.ascontiguousarray(turned[..., ::-1] if flip else turned)


def _undo(output: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of `_view` on an N×K×H'×W' output."""
    return np.rot90(output[..., ::-1] if flip else output, -turns, axes=(2, 3))


def dihedral_mean(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """The mean of `predict` (N×C×H×W -> N×K×H×W, float) over the eight views of `batch`."""
    total = None
    for turns, flip in VIEWS:
        output = _undo(predict(_view(batch, turns, flip)), turns, flip)
        total = output.astype(np.float32) if total is None else total + output
    return total / len(VIEWS)
