"""Iterative data improvement (IDI): train on incomplete masks, predict on the training images, add the
predictions to the masks, repeat.

Round 0 is the input: the weak masks (expert annotations of only some of the nuclei). Round k trains a
U-Net on the masks of round k-1, predicts every training image with it, post-processes the prediction
(each probability channel min-max normalised per image, by default, before the threshold: a model
trained on incomplete masks learns that nuclei are often background and answers with low
probabilities, which the normalisation lifts back over the threshold), and merges it into the masks of
round k-1 (`merge`: a bitwise OR of the foregrounds). Masks therefore only grow, and the loop stops
after `rounds` rounds or as soon as a round adds less than `tolerance` of the foreground it started
with. Every round keeps its folder, a complete `cyseg train --data` folder:

    OUT/idi.json                        configuration, per-round metrics, why it stopped, final round
    OUT/round-00/{images,labels}        the weak input, with metrics.json
    OUT/round-01/{images,labels}        improved masks, with model.pt (trained on round-00),
                 model.pt model.history.json metrics.json
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage
from skimage.segmentation import watershed

from cyseg.dataset import MANIFEST_NAME, Progress, split_folders
from cyseg.errors import CysegError
from metrics import match_instances, precision_recall_f1
from segmenter.base import Segmenter
from segmenter.datasets import LabelledImage, find_pairs, load_labelled, read_image
from segmenter.registry import from_checkpoint
from segmenter.training import TrainConfig, train
from transforms import PostProcess, connected_components, relabel_consecutive

log = logging.getLogger(__name__)

SUMMARY_NAME = "idi.json"
METRICS_NAME = "metrics.json"
MODEL_NAME = "model.pt"


@dataclass
class IDIConfig:
    """The loop and its post-processing.

    normalize: min-max normalise each probability channel per image before the threshold; a channel
      whose range is under `min_span` is stretched only to that span, so an image without nuclei stays
      empty. threshold: applied to the (normalised) foreground; the model's other post-processing
      (watershed split, size filters) follows. overlap: a predicted object with at least this share of
      its pixels on an existing object is that object (it only extends it), not a new one.
    reference: a folder of complete labels named like the training images: each round's masks are
      scored against it (experiments). eval_data: folders with images/ and complete labels/: each
      round's model is scored on them.
    """

    rounds: int = 5
    tolerance: float = 0.01
    normalize: bool = True
    min_span: float = 0.2
    threshold: float = 0.5
    overlap: float = 0.5
    reference: str | None = None
    eval_data: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        checks = [(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
                  (self.tolerance >= 0, f"tolerance must be >= 0, got {self.tolerance}"),
                  (0 < self.min_span <= 1, f"min_span must be in (0, 1], got {self.min_span}"),
                  (0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold}"),
                  (0 < self.overlap <= 1, f"overlap must be in (0, 1], got {self.overlap}")]
        for ok, message in checks:
            if not ok:
                raise CysegError(f"invalid IDI parameter: {message}")


@dataclass
class IDIResult:
    """What `improve` leaves behind: the per-round metrics, the final masks' folder and model."""

    rounds: list[dict[str, Any]]
    stopped: str
    final_data: Path
    final_model: Path


def normalize_channels(proba: np.ndarray, min_span: float) -> np.ndarray:
    """Each channel of a C×H×W probability map mapped from [min, min + max(range, min_span)] to [0, 1]."""
    low = proba.min(axis=(1, 2), keepdims=True)
    span = np.maximum(proba.max(axis=(1, 2), keepdims=True) - low, min_span)
    return ((proba - low) / span).astype(np.float32)


def foreground(proba: np.ndarray, config: IDIConfig) -> np.ndarray:
    """The foreground map to threshold: the highest object channel, normalised or not."""
    if config.normalize:
        proba = normalize_channels(proba, config.min_span)
    return proba[1:].max(axis=0)


def predicted_instances(model: Segmenter, image: np.ndarray, postprocess: PostProcess,
                        config: IDIConfig) -> np.ndarray:
    """uint16 instances of the model's prediction for `image`, post-processed for IDI."""
    return postprocess(foreground(model.predict_proba(image), config))


def merge(masks: np.ndarray, predicted: np.ndarray, overlap: float = 0.5) -> np.ndarray:
    """uint16 instances covering exactly the pixels of `masks` OR `predicted` (both instance labels).

    The existing objects keep their pixels and stay apart. A predicted object with at least `overlap`
    of its pixels on existing objects is one of them: its other pixels join them. Any other predicted
    object is new: its pixels off existing objects seed a new instance. The seeds are then grown over the
    rest of the union by a watershed of its distance transform, so touching nuclei stay separate
    instances (connected components of the union would fuse them, and the training target needs the
    seams between them). Union pixels no seed reaches become instances of their own.
    """
    masks, predicted = np.asarray(masks, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if masks.shape != predicted.shape:
        raise ValueError(f"masks {masks.shape} and prediction {predicted.shape} differ in shape")
    union = (masks > 0) | (predicted > 0)
    seeds = masks.copy()
    area = np.bincount(predicted.ravel())
    on_existing = np.bincount(predicted[masks > 0], minlength=area.size)
    new = on_existing < overlap * area
    new[0] = False
    fresh = new[predicted] & (masks == 0)
    next_id = int(masks.max(initial=0)) + 1
    seeds[fresh] = next_id + np.searchsorted(np.flatnonzero(new), predicted[fresh])
    labels = watershed(-ndimage.distance_transform_edt(union), seeds, mask=union)
    unreached = union & (labels == 0)
    if unreached.any():
        labels[unreached] = int(labels.max()) + connected_components(unreached)[unreached]
    return relabel_consecutive(labels)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link to `source` (no extra disk), or a copy where links are impossible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_round(folder: Path, images: list[Path], labels: dict[str, np.ndarray]) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image in images:
        _link_or_copy(image, folder / "images" / image.name)
        tifffile.imwrite(folder / "labels" / f"{image.stem}.tif", labels[image.stem].astype(np.uint16),
                         compression="zlib")


def pooled(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Instance precision, recall and F1 (IoU >= 0.5) of (predicted, true) label pairs, pooled."""
    tp = fp = fn = 0
    for predicted, true in pairs:
        matching = match_instances(predicted, true)
        tp, fp, fn = tp + matching.tp, fp + matching.fp, fn + matching.fn
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    return dict(precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn)


def _mask_metrics(labels: dict[str, np.ndarray], before: dict[str, np.ndarray] | None,
                  reference: dict[str, np.ndarray] | None) -> dict[str, Any]:
    pixels = sum(int(np.count_nonzero(m)) for m in labels.values())
    metrics: dict[str, Any] = dict(objects=sum(int(m.max(initial=0)) for m in labels.values()), pixels=pixels)
    if before is not None:
        previous = sum(int(np.count_nonzero(m)) for m in before.values())
        metrics.update(added_pixels=pixels - previous, added_objects=metrics["objects"] - sum(
            int(m.max(initial=0)) for m in before.values()), change=(pixels - previous) / max(previous, 1))
    if reference is not None:
        metrics["reference"] = pooled([(labels[name], reference[name]) for name in labels])
        true = sum(int(np.count_nonzero(reference[name])) for name in labels)
        both = sum(int(np.count_nonzero((labels[name] > 0) & (reference[name] > 0))) for name in labels)
        metrics["reference"].update(pixel_precision=both / max(pixels, 1), pixel_recall=both / max(true, 1))
    return metrics


def _reference(train_dir: Path, labels_dir: str, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The complete labels of every training image, from `labels_dir` (files named like the images)."""
    found = {image.stem: labels for image, labels in find_pairs(train_dir / "images", labels_dir)}
    missing = sorted(set(masks) - set(found))
    if missing:
        raise CysegError(f"reference labels {labels_dir} lack {len(missing)} training image(s), e.g. {missing[0]}")
    return {name: read_image(found[name]).astype(np.int64) for name in masks}


def _training_inputs(data: Path) -> tuple[Path, list[str]]:
    """The folder of weak masks to improve and the validation folders: a `cyseg dataset` folder gives its
    train and val splits; any other folder with images/ and labels/ is all training data."""
    if (data / MANIFEST_NAME).is_file():
        folders = split_folders(data)
        if "train" not in folders:
            raise CysegError(f"dataset {data} has no training crops")
        return folders["train"], [str(folders["val"])] if "val" in folders else []
    if not (data / "images").is_dir() or not (data / "labels").is_dir():
        raise CysegError(f"{data} is neither a cyseg dataset nor a folder with images/ and labels/")
    return data, []


def improve_masks(model: Segmenter, postprocess: PostProcess, samples: list[LabelledImage],
                  masks: dict[str, np.ndarray], config: IDIConfig,
                  tell: Callable[[int], None] = lambda done: None) -> dict[str, np.ndarray]:
    """Each image's masks merged with the model's post-processed prediction; `tell(done)` after each."""
    improved = {}
    for done, sample in enumerate(samples, start=1):
        predicted = predicted_instances(model, sample.image, postprocess, config)
        improved[sample.name] = merge(masks[sample.name], predicted, config.overlap)
        tell(done)
    return improved


def improve(data: str | Path, out: str | Path, config: IDIConfig, training: TrainConfig,
            progress: Progress | None = None, train_progress: bool = False) -> IDIResult:
    """Run IDI on the weak masks of `data` into `out` (new or empty). `training` is the recipe of every
    round (its `data` and `out` are set per round; its `val_data`, when empty, becomes the dataset's val
    split, or else its `val_fraction` of the training images). `progress(done, total, message)` follows
    the rounds (one step for a training, one per image); `train_progress` shows training progress bars."""
    data, out = Path(data), Path(out)
    train_dir, val_data = _training_inputs(data)
    if out.exists() and any(out.iterdir()):
        raise CysegError(f"output folder {out} is not empty: choose a new or empty folder")
    images = [image for image, _ in find_pairs(train_dir / "images", train_dir / "labels")]
    samples = load_labelled(train_dir)
    masks = {sample.name: relabel_consecutive(sample.labels) for sample in samples}
    reference = _reference(train_dir, config.reference, masks) if config.reference else None
    evaluation = {folder: load_labelled(folder) for folder in config.eval_data}
    recipe = dataclasses.replace(training, val_data=list(training.val_data) or val_data, resume=False)

    folder = out / "round-00"
    _write_round(folder, images, masks)
    rounds = [dict(round=0, masks=_mask_metrics(masks, None, reference))]
    (folder / METRICS_NAME).write_text(json.dumps(rounds[0], indent=1))
    stopped = f"{config.rounds} rounds done"
    per_round = 1 + len(samples)
    for number in range(1, config.rounds + 1):
        started = time.time()
        previous, folder = folder, out / f"round-{number:02d}"
        folder.mkdir(parents=True)

        def tell(done: int, message: str) -> None:
            if progress:
                progress((number - 1) * per_round + done, config.rounds * per_round,
                         f"round {number}/{config.rounds}: {message}")

        tell(0, "training")
        checkpoint = train(dataclasses.replace(recipe, data=[str(previous)], out=str(folder / MODEL_NAME)),
                           progress=train_progress)
        (folder / "model.state.pt").unlink(missing_ok=True)  # only needed to resume that training
        tell(1, "trained, improving the masks")
        model = from_checkpoint(checkpoint, device=recipe.device)
        postprocess = PostProcess.from_dict(checkpoint.postprocess | {"threshold": config.threshold})
        improved = improve_masks(model, postprocess, samples, masks, config,
                                 lambda done: tell(1 + done, f"{done}/{len(samples)} masks improved"))
        _write_round(folder, images, improved)
        metrics = dict(round=number, masks=_mask_metrics(improved, masks, reference),
                       model=dict(path=MODEL_NAME, **checkpoint.metrics))
        if evaluation:
            metrics["eval"] = {name: pooled([(model.instances(s.image).labels, s.labels) for s in labelled])
                               for name, labelled in evaluation.items()}
        metrics["seconds"] = round(time.time() - started, 1)
        (folder / METRICS_NAME).write_text(json.dumps(metrics, indent=1))
        rounds.append(metrics)
        masks, change = improved, metrics["masks"]["change"]
        log.info("round %d: %d objects (%+d), foreground %+.2f%%", number, metrics["masks"]["objects"],
                 metrics["masks"]["added_objects"], 100 * change)
        if change < config.tolerance:
            stopped = f"converged: round {number} grew the masks by {change:.4f} < tolerance {config.tolerance}"
            break
    result = IDIResult(rounds, stopped, folder, folder / MODEL_NAME)
    summary = dict(data=str(data), config=dataclasses.asdict(config), training=dataclasses.asdict(recipe),
                   stopped=stopped, final_round=len(rounds) - 1, final_data=str(folder),
                   final_model=str(result.final_model), rounds=rounds)
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    log.info("IDI stopped (%s); improved masks in %s", stopped, folder)
    return result
