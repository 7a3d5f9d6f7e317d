"""Training FocusLiteNN on synthetic defocus of in-focus images, calibrating it, and choosing its
threshold.

Data: in-focus images from `../shared/data` (BBBC039 train, DSB 2018 fluorescence and stained),
each split into training images and a seeded held-out share. Every training image is blurred
as a whole at random levels with `transforms.defocus` (optical, Gaussian or disk PSF, Poisson
and read noise) and cut into `patch_size` crops that have content by the classifier's
`ContentRule`, each scaled as the classifier scales a window; the target is the blur level in
pixels. Loss: 1 − Pearson correlation over the
batch (the paper's PLCC loss) or MSE to the level. Batches draw equally from each source.

After training, the held-out images blurred at fixed levels (optical PSF, noise) are scored
as whole images; a Pearson-trained model is calibrated (a least-squares affine map, folded into
its last layer) so that its score estimates the blur level, and the threshold is the score
that best separates sharp (level <= `sharp_max`) from blurry (level >= `blurry_min`) held-out
images (balanced accuracy).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from tqdm import tqdm

from segmenter.checkpoint import Checkpoint
from segmenter.datasets import list_images, read_image
from segmenter.focus import (STRIDE, ContentRule, FocusClassifier, FocusLiteNN, WindowLayout, focus_checkpoint,
                             focus_input, input_stats, normalize_window, window_cells)
from segmenter.inputs import pad_to_multiple
from transforms import RandomDefocus

log = logging.getLogger(__name__)

#: The synthetic blur the focus classifiers were trained on: PSF kinds and how often each is drawn,
#: photons at the brightest pixel (log-uniform) and read noise as a fraction of the dynamic range.
FOCUS_BLUR = RandomDefocus(kinds={"optical": 0.6, "gaussian": 0.2, "disk": 0.2}, photons=(300.0, 30000.0),
                           read_noise=(0.0, 0.006), background=(0.0, 0.0), transmission=(1.0, 1.0),
                           camera_prob=1.0)


@dataclass(frozen=True)
class FocusSource:
    """A folder of in-focus images under the data root; images of `exclude_shapes` are skipped."""

    name: str
    folder: str
    exclude_shapes: tuple[tuple[int, int], ...] = ()


#: DSB 2018 fluorescence images of 520×696 px come from the BBBC039/BBBC006 acquisition (some
#: are the very fields of bbbc039/val), which is kept for testing: they are left out.
SOURCES = (
    FocusSource("bbbc039", "bbbc039/train/images"),
    FocusSource("dsb-fluorescence", "dsb2018/fluorescence/images", exclude_shapes=((520, 696),)),
    FocusSource("dsb-stained", "dsb2018/stained/images"),
)


@dataclass
class FocusTrainConfig:
    """Everything that defines a training run (stored in the checkpoint)."""

    data: str
    kernels: int = 1
    loss: str = "pearson"
    patch_size: int = 252
    levels_per_image: int = 6
    max_level: float = 12.0
    sharp_fraction: float = 0.25
    holdout_fraction: float = 0.15
    eval_levels: list[float] = field(default_factory=lambda: [0, 0.5, 1, 2, 3, 4, 6, 8, 12])
    sharp_max: float = 1.0
    blurry_min: float = 2.0
    steps: int = 1500
    restarts: int = 3
    restart_steps: int = 200
    batch_size: int = 24
    lr: float = 0.01
    content: ContentRule = field(default_factory=ContentRule)
    seed: int = 0


@dataclass
class Patches:
    """Training crops (float16, C×P×P with C = 1 or 3) and their blur levels, per source."""

    crops: dict[str, list[np.ndarray]]
    levels: dict[str, np.ndarray]


@dataclass
class FocusData:
    """Training crops and the blurred held-out images (source, level, image), built once and
    shared by every model trained."""

    patches: Patches
    holdout: list[tuple[str, float, np.ndarray]]
    summary: dict[str, Any]


def pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 − Pearson correlation of a batch of scores with their targets (0 = perfectly linear,
    2 = perfectly anti-correlated; invariant to the scale and offset of `pred`)."""
    if pred.shape != target.shape or pred.ndim != 1 or len(pred) < 2:
        raise ValueError(f"expected two equal 1-D batches of at least 2, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    p, t = pred - pred.mean(), target - target.mean()
    return 1 - (p * t).sum() / (p.norm() * t.norm() + eps)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "pearson": pearson_loss, "mse": F.mse_loss}


def synthetic_defocus(image: np.ndarray, level: float, rng: np.random.Generator,
                      kind: str | None = None) -> np.ndarray:
    """`image` blurred by `level` px with a random PSF kind (unless given) and random noise (`FOCUS_BLUR`)."""
    return FOCUS_BLUR(image, level, rng, kind=kind)


def load_sources(data: str | Path, sources: tuple[FocusSource, ...] = SOURCES
                 ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """(file name, image) of every usable image, per source."""
    found = {}
    for source in sources:
        images = [(path.name, read_image(path)) for path in list_images(Path(data) / source.folder)]
        found[source.name] = [(name, image) for name, image in images
                              if image.shape[:2] not in source.exclude_shapes]
        log.info("%s: %d images", source.name, len(found[source.name]))
    return found


def _crop_with_content(image: np.ndarray, config: FocusTrainConfig, rng: np.random.Generator,
                       tries: int = 10) -> np.ndarray | None:
    """A random `patch_size` crop (C×P×P, scaled by `normalize_window`) of an H×W×C image, with
    content by the classifier's rule; None when `tries` random crops have none."""
    stats, size = input_stats(image), config.patch_size
    layout = WindowLayout.of(size, size, size, STRIDE * window_cells(size))
    image = pad_to_multiple(image, 1, size, size)
    for _ in range(tries):
        top = int(rng.integers(0, image.shape[0] - size + 1))
        left = int(rng.integers(0, image.shape[1] - size + 1))
        crop = image[top:top + size, left:left + size]
        if config.content.windows(crop, stats, layout)[2][0, 0]:
            return normalize_window(torch.from_numpy(crop.transpose(2, 0, 1).copy())).numpy()
    return None


def build_patches(images: dict[str, list[np.ndarray]], config: FocusTrainConfig,
                  rng: np.random.Generator, progress: bool = True) -> Patches:
    """Per image, `levels_per_image` random blur levels (0 with probability `sharp_fraction`,
    else uniform up to `max_level`), one crop with content each."""
    crops: dict[str, list[np.ndarray]] = {}
    levels: dict[str, np.ndarray] = {}
    for source, group in images.items():
        crops[source], kept = [], []
        for image in tqdm(group, desc=f"blurring {source}", unit="image", leave=False, disable=not progress):
            for _ in range(config.levels_per_image):
                level = 0.0 if rng.random() < config.sharp_fraction else float(rng.uniform(0, config.max_level))
                crop = _crop_with_content(focus_input(synthetic_defocus(image, level, rng)).astype(np.float32),
                                         config, rng)
                if crop is not None:
                    crops[source].append(crop.astype(np.float16))
                    kept.append(level)
        levels[source] = np.array(kept, dtype=np.float32)
        if not kept:
            raise ValueError(f"source {source}: no crop with content")
    return Patches(crops, levels)


def prepare_data(config: FocusTrainConfig) -> FocusData:
    """Load the sources, hold out a seeded share of each, cut the training crops and blur the
    held-out images."""
    window_cells(config.patch_size)
    rng = np.random.default_rng(config.seed)
    train: dict[str, list[np.ndarray]] = {}
    holdout: dict[str, list[np.ndarray]] = {}
    summary: dict[str, Any] = {}
    for source, items in load_sources(config.data).items():
        order = rng.permutation(len(items))
        n_held = max(1, round(config.holdout_fraction * len(items)))
        holdout[source] = [items[i][1] for i in order[:n_held]]
        train[source] = [items[i][1] for i in order[n_held:]]
        summary[source] = dict(train=len(train[source]), holdout=len(holdout[source]),
                               holdout_names=sorted(items[i][0] for i in order[:n_held]))
    patches = build_patches(train, config, rng)
    for source, levels in patches.levels.items():
        summary[source]["crops"] = len(levels)
    return FocusData(patches, holdout_set(holdout, config.eval_levels, config.seed + 2), summary)


def _batch(patches: Patches, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch drawn equally from each source, randomly flipped and turned, as 3-channel input."""
    sources = list(patches.crops)
    images, targets = [], []
    for i in range(size):
        source = sources[i % len(sources)]
        index = int(rng.integers(len(patches.crops[source])))
        crop = np.rot90(patches.crops[source][index], int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        images.append(np.broadcast_to(crop, (3, *crop.shape[1:])).astype(np.float32))
        targets.append(patches.levels[source][index])
    return torch.from_numpy(np.stack(images)), torch.tensor(targets, dtype=torch.float32)


@dataclass
class _Run:
    """One initialisation being trained: network, optimiser, schedule, batch sampler, losses."""

    network: FocusLiteNN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator
    losses: list[float] = field(default_factory=list)


def train_network(patches: Patches, config: FocusTrainConfig, progress: bool = True
                  ) -> tuple[FocusLiteNN, list[dict[str, float]]]:
    """Adam with a cosine schedule over `steps`. A one-convolution network can settle in a poor
    optimum from a bad start, so `restarts` initialisations train for `restart_steps` each and
    the one with the lowest recent loss goes on. Returns it and its mean loss every 100 steps."""
    if config.loss not in LOSSES:
        raise ValueError(f"unknown focus loss {config.loss!r}, expected one of {sorted(LOSSES)}")
    loss_fn = LOSSES[config.loss]
    runs = []
    for restart in range(config.restarts):
        torch.manual_seed(config.seed + restart)
        network = FocusLiteNN(config.kernels)
        optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
        runs.append(_Run(network, optimizer, scheduler, np.random.default_rng([config.seed, restart])))
    total = config.restarts * config.restart_steps + config.steps - config.restart_steps
    bar = tqdm(total=total, desc=f"training k={config.kernels} {config.loss}", unit="step", disable=not progress)

    def advance(run: _Run, steps: int) -> None:
        for _ in range(steps):
            images, targets = _batch(patches, config.batch_size, run.rng)
            loss = loss_fn(run.network(images), targets)
            run.optimizer.zero_grad()
            loss.backward()
            run.optimizer.step()
            run.scheduler.step()
            run.losses.append(loss.item())
            bar.update()

    for run in runs:
        advance(run, config.restart_steps)
    best = min(runs, key=lambda run: np.mean(run.losses[-50:]))
    advance(best, config.steps - config.restart_steps)
    bar.close()
    history = [dict(step=end, loss=float(np.mean(best.losses[end - 100:end])))
               for end in range(100, len(best.losses) + 1, 100)]
    return best.network.eval(), history


def holdout_set(holdout: dict[str, list[np.ndarray]], levels: list[float],
                seed: int) -> list[tuple[str, float, np.ndarray]]:
    """(source, level, image): every held-out image blurred at every level (optical PSF, noise)."""
    rng = np.random.default_rng(seed)
    return [(source, float(level), synthetic_defocus(image, level, rng, kind="optical"))
            for source, images in holdout.items() for image in images for level in levels]


def roc_auc(sharp: np.ndarray, blurry: np.ndarray) -> float:
    """Probability that a blurry sample scores higher than a sharp one (ties count half)."""
    return float(stats.mannwhitneyu(blurry, sharp).statistic / (len(sharp) * len(blurry)))


def best_threshold(sharp: np.ndarray, blurry: np.ndarray) -> tuple[float, float]:
    """The threshold (blurry = score above it) with the best balanced accuracy, and that accuracy;
    among equally good thresholds the middle one."""
    values = np.unique(np.concatenate([sharp, blurry]))
    candidates = np.concatenate([[values[0] - 1], (values[1:] + values[:-1]) / 2, [values[-1] + 1]])
    accuracy = np.array([(np.mean(sharp <= t) + np.mean(blurry > t)) / 2 for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[len(best) // 2]]), float(accuracy.max())


def calibrate(network: FocusLiteNN, scale: float, offset: float) -> None:
    """Fold score → scale·score + offset (scale > 0) into the network's last layer."""
    if scale <= 0:
        raise ValueError(f"calibration scale {scale:.4g} is not positive: the scores do not grow with blur")
    layer = network.combine if network.combine is not None else network.conv
    with torch.no_grad():
        layer.weight.mul_(scale)
        layer.bias.mul_(scale).add_(offset)


def holdout_metrics(scores: np.ndarray, levels: np.ndarray, sources: np.ndarray,
                    config: FocusTrainConfig, threshold: float) -> dict[str, Any]:
    """Correlation with the blur level, ROC-AUC and accuracy of sharp vs blurry, per level means."""
    sharp, blurry = levels <= config.sharp_max, levels >= config.blurry_min
    metrics: dict[str, Any] = dict(
        plcc=float(stats.pearsonr(scores, levels).statistic),
        srcc=float(stats.spearmanr(scores, levels).statistic),
        roc_auc=roc_auc(scores[sharp], scores[blurry]),
        balanced_accuracy=float((np.mean(scores[sharp] <= threshold) + np.mean(scores[blurry] > threshold)) / 2),
        mean_score_per_level={f"{level:g}": float(scores[levels == level].mean()) for level in np.unique(levels)})
    metrics["per_source"] = {
        str(source): dict(roc_auc=roc_auc(scores[(sources == source) & sharp], scores[(sources == source) & blurry]),
                          sharp_called_sharp=float(np.mean(scores[(sources == source) & sharp] <= threshold)),
                          blurry_called_blurry=float(np.mean(scores[(sources == source) & blurry] > threshold)))
        for source in np.unique(sources)}
    return metrics


def train_focus(config: FocusTrainConfig, data: FocusData | None = None, progress: bool = True) -> Checkpoint:
    """Train one FocusLiteNN, calibrate it (Pearson loss), choose its threshold on the held-out
    images, and return its checkpoint (not saved)."""
    data = data or prepare_data(config)
    network, history = train_network(data.patches, config, progress)
    sources = np.array([source for source, _, _ in data.holdout])
    levels = np.array([level for _, level, _ in data.holdout], dtype=np.float64)

    def score_all() -> np.ndarray:
        classifier = FocusClassifier(network, 0.0, config.patch_size, config.content)
        return classifier.score_batch([image for _, _, image in data.holdout]).astype(np.float64)

    scores = score_all()
    judged = ~np.isnan(scores)  # images without content get no score
    if not judged.any():
        raise ValueError("no held-out image has content: cannot calibrate or choose a threshold")
    if config.loss == "pearson":
        scale, offset = np.polyfit(scores[judged], levels[judged], 1)
        calibrate(network, float(scale), float(offset))
        scores = score_all()
    scores, levels, sources = scores[judged], levels[judged], sources[judged]
    sharp, blurry = levels <= config.sharp_max, levels >= config.blurry_min
    threshold, _ = best_threshold(scores[sharp], scores[blurry])
    metrics = holdout_metrics(scores, levels, sources, config, threshold)
    metrics["without_content"] = int((~judged).sum())
    log.info("k=%d %s: held-out PLCC %.3f, SRCC %.3f, ROC-AUC %.3f, balanced accuracy %.3f at %.3f",
             config.kernels, config.loss, metrics["plcc"], metrics["srcc"], metrics["roc_auc"],
             metrics["balanced_accuracy"], threshold)
    training = dict(config=dataclasses.asdict(config), data=data.summary, history=history,
                    threshold_chosen_on=(f"held-out {config.holdout_fraction:.0%} of each training source, "
                                         f"synthetic optical blur at {config.eval_levels} px: sharp <= "
                                         f"{config.sharp_max:g} px, blurry >= {config.blurry_min:g} px"),
                    date=date.today().isoformat(), torch=torch.__version__)
    return focus_checkpoint(network, threshold, config.patch_size, config.content, training,
                            dict(holdout=metrics))


def real_defocus_rates(classifier: FocusClassifier, data: str | Path) -> dict[str, Any]:
    """The test on real data: share of `bbbc006_z00` (real strong defocus) called blurry and of
    `bbbc039/val` (in focus) called sharp (an image without content is not blurry), with the
    ROC-AUC between the scored ones."""
    blurry = classifier.score_batch([read_image(p) for p in list_images(Path(data) / "bbbc006_z00/images")])
    sharp = classifier.score_batch([read_image(p) for p in list_images(Path(data) / "bbbc039/val/images")])
    return dict(z00_called_blurry=float(np.mean(blurry > classifier.threshold)),
                val_called_sharp=float(np.mean(~(sharp > classifier.threshold))),
                roc_auc=roc_auc(sharp[~np.isnan(sharp)], blurry[~np.isnan(blurry)]),
                n_z00=len(blurry), n_val=len(sharp), z00_without_content=int(np.isnan(blurry).sum()),
                val_without_content=int(np.isnan(sharp).sum()),
                z00_scores=[round(float(v), 3) for v in blurry], val_scores=[round(float(v), 3) for v in sharp])
