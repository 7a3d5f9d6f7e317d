"""A segmenter that sends each tile to a sharp or a blurry model by its focus score.

After the dual-model pipeline of the seed paper: a blur classifier routes every image to a model
trained on sharp or on blurry data. Here the classifier is a `FocusClassifier` (score: higher =
blurrier; blurry = score > threshold) and the two models are any cyseg segmenters with the same
classes. Every decision is kept (`decisions`, and `Instances.extra["focus"]`) so the job can
show pathologists where each model ran.

Checkpoint (family "focus-gated"): `children` holds the metadata of the "focus", "sharp" and
"blurry" checkpoints, and `state_dict` their weights under the keys "focus.…", "sharp.…" and
"blurry.…" (`Checkpoint.to_dict` turns everything outside `state_dict` into plain JSON types, so
tensors cannot live in `children`); `architecture["focus_threshold"]` overrides the classifier's
threshold when set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint, ModelLoadError
from segmenter.focus import FocusClassifier
from segmenter.inputs import as_image_list
from segmenter.registry import from_checkpoint

CHILDREN = ("focus", "sharp", "blurry")
T = TypeVar("T")


@dataclass(frozen=True)
class FocusDecision:
    """Where one tile went: its focus score (higher = blurrier; NaN for a tile without content,
    which goes to the sharp model) and the model that ran."""

    score: float
    blurry: bool

    @property
    def model(self) -> str:
        return "blurry" if self.blurry else "sharp"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: score (None when NaN), blurry, model."""
        return dict(score=None if math.isnan(self.score) else self.score, blurry=self.blurry, model=self.model)


class FocusGated(Segmenter):
    """Per tile, the focus score picks the sharp or the blurry segmenter.

    `threshold` overrides the classifier's. `decisions` lists the decision for every tile
    processed since the last `take_decisions()`, in order.
    """

    name = "focus-gated"

    def __init__(self, classifier: FocusClassifier, sharp: Segmenter, blurry: Segmenter,
                 threshold: float | None = None, device: str | torch.device | None = None):
        _check_same_classes(sharp.class_names, blurry.class_names)
        super().__init__(sharp.class_names, device)
        self.classifier, self.sharp, self.blurry = classifier, sharp, blurry
        self.threshold = classifier.threshold if threshold is None else float(threshold)
        self.decisions: list[FocusDecision] = []

    @property
    def backend(self) -> str:
        return self.sharp.backend

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None,
                        focus_threshold: float | None = None, **options: Any) -> "FocusGated":
        """`options` (e.g. `threshold`, `batch_size`, `backend`, `precision`) go to both segmenters."""
        children = {name: unpack_child(checkpoint, name) for name in CHILDREN}
        if focus_threshold is None:
            focus_threshold = checkpoint.architecture.get("focus_threshold")
        return cls(FocusClassifier.from_checkpoint(children["focus"], device=device),
                   from_checkpoint(children["sharp"], device=device, **options),
                   from_checkpoint(children["blurry"], device=device, **options),
                   threshold=focus_threshold, device=device)

    @staticmethod
    def build_checkpoint(focus: Checkpoint, sharp: Checkpoint, blurry: Checkpoint,
                         focus_threshold: float | None = None) -> Checkpoint:
        """The composite checkpoint of a classifier and two segmenter checkpoints."""
        _check_same_classes(sharp.class_names, blurry.class_names)
        parts = dict(focus=focus, sharp=sharp, blurry=blurry)
        return Checkpoint(
            family=FocusGated.name, architecture=dict(focus_threshold=focus_threshold),
            class_names=sharp.class_names, in_channels=sharp.in_channels, normalization={},
            state_dict={f"{name}.{key}": value for name, part in parts.items()
                        for key, value in part.state_dict.items()},
            children={name: {**part.to_dict(), "state_dict": {}} for name, part in parts.items()},
            training=dict(children={name: part.training for name, part in parts.items()}),
            metrics={name: part.metrics for name, part in parts.items()})

    def decide_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[FocusDecision]:
        """The decision for each image, without segmenting (nothing is recorded)."""
        return [FocusDecision(float(score), bool(score > self.threshold))
                for score in self.classifier.score_batch(images)]

    def take_decisions(self) -> list[FocusDecision]:
        """The decisions recorded so far, in tile order; the record starts afresh."""
        taken, self.decisions = self.decisions, []
        return taken

    def _dispatch(self, images: np.ndarray | Sequence[np.ndarray],
                  run: Callable[[Segmenter, list[np.ndarray]], list[T]]) -> tuple[list[T], list[FocusDecision]]:
        """`run(model, tiles)` on each model's share of the tiles, results back in tile order."""
        images = as_image_list(images)
        decisions = self.decide_batch(images)
        results: list[Any] = [None] * len(images)
        for model, blurry in ((self.sharp, False), (self.blurry, True)):
            chosen = [i for i, decision in enumerate(decisions) if decision.blurry == blurry]
            if chosen:
                for i, result in zip(chosen, run(model, [images[i] for i in chosen])):
                    results[i] = result
        self.decisions.extend(decisions)
        return results, decisions

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._dispatch(images, lambda model, tiles: model.predict_proba_batch(tiles))[0]

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        """Each tile's instances, with its decision in `extra["focus"]`."""
        found, decisions = self._dispatch(images, lambda model, tiles: model.instances_batch(tiles))
        for instances, decision in zip(found, decisions):
            instances.extra["focus"] = decision.to_dict()
        return found

    def segment_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Each tile's mask from the model that ran on it (its own post-processing)."""
        masks = self._dispatch(images, lambda model, tiles: list(model.segment_batch(tiles)))[0]
        return np.stack(masks) if isinstance(images, np.ndarray) else masks


def _check_same_classes(sharp: list[str], blurry: list[str]) -> None:
    if sharp != blurry:
        raise ValueError(f"the sharp and blurry models must have the same classes, got {sharp} and {blurry}")


def unpack_child(checkpoint: Checkpoint, name: str) -> Checkpoint:
    """Child `name` of a composite checkpoint, with its weights taken from the parent's state."""
    if name not in checkpoint.children:
        raise ModelLoadError(f"'{checkpoint.family}' checkpoint has no '{name}' model "
                             f"(found: {', '.join(sorted(checkpoint.children)) or 'none'})")
    prefix = f"{name}."
    state = {key[len(prefix):]: value for key, value in checkpoint.state_dict.items() if key.startswith(prefix)}
    return Checkpoint.from_dict({**checkpoint.children[name], "state_dict": state},
                                source=f"{checkpoint.family} child '{name}'")
