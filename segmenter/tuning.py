"""Choosing a U-Net's post-processing (threshold, watershed marker distance, minimum size) on
validation images: probabilities are computed once, every setting of the grid is scored by
pooled instance F1 (IoU >= 0.5), and the best setting wins."""
from __future__ import annotations

import dataclasses
import itertools
import logging


from metrics import match_instances
from segmenter.datasets import LabelledImage
from segmenter.unet_segmenter import UNetSegmenter
from transforms import PostProcess

log = logging.getLogger(__name__)

GRID: dict[str, tuple] = {"threshold": (0.4, 0.5, 0.6), "min_distance": (3, 5, 7, 9, 11, 13),
                          "min_size": (20, 40, 60)}


def tune_postprocess(model: UNetSegmenter, samples: list[LabelledImage],
                     grid: dict[str, tuple] = GRID) -> tuple[PostProcess, float]:
    """The best post-processing on `samples` and its F1 (ties keep the earlier setting)."""
    probas = [1 - model.predict_proba(sample.image)[0] for sample in samples]
    best, best_f1 = model.postprocess, -1.0
    for values in itertools.product(*grid.values()):
        candidate = dataclasses.replace(model.postprocess, **dict(zip(grid, values)))
        tp = fp = fn = 0
        for foreground, sample in zip(probas, samples):
            matching = match_instances(candidate(foreground), sample.labels)
            tp, fp, fn = tp + matching.tp, fp + matching.fp, fn + matching.fn
        f1 = 2 * tp / max(1, 2 * tp + fp + fn)
        log.debug("%s: F1 %.4f", dict(zip(grid, values)), f1)
        if f1 > best_f1:
            best, best_f1 = candidate, f1
    log.info("post-processing %s: validation F1 %.4f", best, best_f1)
    return best, best_f1
