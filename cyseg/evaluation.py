"""Scoring a segmenter against instance labels, in focus and at synthetic blur levels."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from metrics import ImageResult, evaluate_image, level_key, precision_recall_curve, summarize_by_level
from segmenter import Instances, Segmenter, UNetSegmenter
from segmenter.datasets import LabelledImage
from segmenter.picker import ModelPicker
from transforms import defocus

BASELINE = "connected_components"


def find_instances(model: Segmenter, image: np.ndarray) -> dict[str, Instances]:
    """The model's instances and, for a U-Net, plain connected components of the same mask
    (the naive baseline the watershed split is measured against)."""
    if not isinstance(model, UNetSegmenter):
        return {"model": model.instances(image)}
    proba = model.predict_proba(image)
    no_split = dataclasses.replace(model.postprocess, split=False)
    return {"model": model.instances_from_proba(proba),
            BASELINE: model.instances_from_proba(proba, no_split)}


@dataclass
class Evaluation:
    """Per-image results for the model (and the baseline, when there is one)."""

    results: dict[str, list[ImageResult]] = field(default_factory=dict)
    overlay: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    focus_calls: list[tuple[float, bool]] = field(default_factory=list)  # (level, called blurry), focus-gated
    choices: dict[str, dict] = field(default_factory=dict)  # image name -> the model picked for it (a picker)

    def metrics(self, sharp_levels: tuple[float, ...] = (0.0,)) -> dict:
        summary = summarize_by_level(self.results["model"], sharp_levels=sharp_levels)
        if BASELINE in self.results:
            summary[BASELINE] = summarize_by_level(self.results[BASELINE], sharp_levels=sharp_levels)
        if self.focus_calls:
            summary["classifier_error"] = classifier_errors(self.focus_calls, sharp_levels)
        return summary

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Precision-recall curve of the model per blur level."""
        curves = {}
        for level in sorted({r.level for r in self.results["model"]}):
            at_level = [r for r in self.results["model"] if r.level == level]
            curves[f"blur {level:g}"] = precision_recall_curve(
                np.concatenate([r.scores for r in at_level]),
                np.concatenate([r.is_tp for r in at_level]).astype(bool),
                sum(r.n_true for r in at_level))
        return curves


def classifier_errors(calls: list[tuple[float, bool]], sharp_levels: tuple[float, ...]) -> dict[str, float]:
    """Per blur level, the share of images the focus classifier called wrongly (blurry at a sharp
    level, sharp at any other)."""
    errors: dict[str, list[bool]] = {}
    for level, blurry in calls:
        errors.setdefault(level_key(level), []).append(blurry == (level in sharp_levels))
    return {level: float(np.mean(wrong)) for level, wrong in errors.items()}


def evaluate(model: Segmenter | ModelPicker, samples: list[LabelledImage], levels: list[float],
             seed: int = 0, progress: bool = True, pixel_size_um: float | None = None,
             psf: str = "optical") -> Evaluation:
    """Segment every sample at every blur level (defocus with the `psf` kind, seeded per image) and score it. A picker
    chooses each image's model once, from the in-focus image at `pixel_size_um` (None: unknown)."""
    if not samples:
        raise ValueError("nothing to evaluate: no labelled images")
    evaluation = Evaluation()
    models = [model] * len(samples)
    if isinstance(model, ModelPicker):
        picks = [model.pick(sample.image, pixel_size_um) for sample in samples]
        models = [picked.model for picked in picks]
        evaluation.choices = {sample.name: picked.to_dict() for sample, picked in zip(samples, picks)}
    with tqdm(total=len(samples) * len(levels), desc="evaluating", unit="image",
              disable=not progress) as bar:
        for level in levels:
            for index, sample in enumerate(samples):
                image = defocus(sample.image, level, kind=psf, seed=seed + index) if level else sample.image
                found = find_instances(models[index], image)
                for name, instances in found.items():
                    evaluation.results.setdefault(name, []).append(evaluate_image(
                        instances.labels, sample.labels, instances.scores, float(level)))
                if "focus" in found["model"].extra:
                    evaluation.focus_calls.append((float(level), bool(found["model"].extra["focus"]["blurry"])))
                if index == 0 and level == levels[0]:
                    evaluation.overlay = (sample.image, found["model"].labels, sample.labels)
                bar.update()
    return evaluation
