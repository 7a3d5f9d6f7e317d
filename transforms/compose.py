"""Chaining transforms, and the post-processing that turns a probability map into instances."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._validation import from_known_fields
from .instances import connected_components, relabel_consecutive, split_touching
from .morphology import erode_dilate, fill_holes, remove_large_objects, remove_small_objects, smooth, threshold


class Compose:
    """Apply callables in order: `Compose([f, g])(x) == g(f(x))`."""

    def __init__(self, steps: Iterable[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)
        for step in self.steps:
            if not callable(step):
                raise ValueError(f"expected callable steps, got {step!r}")

    def __call__(self, x: Any) -> Any:
        for step in self.steps:
            x = step(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.steps!r})"


@dataclass
class PostProcess:
    """Probability map (H, W) -> uint16 instance labels 1..N; stored in model checkpoints.

    Steps: Gaussian smoothing (`smooth_sigma`, 0 = off) -> `prob > threshold` -> opening with a
    disk of `open_radius` (0 = off) -> hole filling -> `split_touching` (distance-transform
    watershed, markers `min_distance` apart) or plain 8-connected components -> remove objects
    under `min_size` px and, when set, over `max_size` px -> renumber 1..N.
    """

    threshold: float = 0.5
    smooth_sigma: float = 0.0
    open_radius: int = 0
    fill_holes: bool = True
    min_size: int = 20
    max_size: int | None = None
    split: bool = True
    min_distance: int = 5

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        prob = np.asarray(prob)
        if prob.ndim != 2:
            raise ValueError(f"expected a 2-D (H, W) probability map, got shape {prob.shape}")
        mask = threshold(smooth(prob, self.smooth_sigma), self.threshold)
        mask = erode_dilate(mask, self.open_radius, "open")
        if self.fill_holes:
            mask = fill_holes(mask)
        labels = split_touching(mask, self.min_distance) if self.split else connected_components(mask)
        labels = remove_small_objects(labels, self.min_size)
        if self.max_size is not None:
            labels = remove_large_objects(labels, self.max_size)
        return relabel_consecutive(labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostProcess:
        """Inverse of `to_dict`; unknown keys are an error."""
        return from_known_fields(cls, d)
