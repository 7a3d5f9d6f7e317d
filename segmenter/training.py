"""Training a U-Net on folders of images and instance labels.

Targets are the nuclei minus the one-pixel seams where two nuclei touch, so the network learns
to keep touching nuclei apart; those seam pixels also get extra weight in the BCE term
(after Ronneberger et al. 2015, who weight borders between touching cells). Loss: weighted BCE
+ soft Dice; Adam with a cosine learning-rate schedule; the checkpoint with the best validation
F1 (IoU >= 0.5, mean over the in-focus and the `val_defocus_levels` blurred validation sets) is kept,
and its post-processing is then tuned on the in-focus validation images (`segmenter.tuning`); a state file next to the output makes training resumable.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from metrics import level_key, match_instances, soft_dice_loss
from segmenter.base import resolve_device
from segmenter.checkpoint import Checkpoint
from segmenter.datasets import LabelledImage, load_labelled
from segmenter.inputs import to_channels
from segmenter.unet import UNet
from segmenter.tuning import tune_postprocess
from segmenter.unet_segmenter import UNetSegmenter
from transforms import Augmenter, Normalization, PostProcess, defocus, touching_borders

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint)."""

    data: list[str]
    out: str
    val_data: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    in_channels: int = 1
    depth: int = 4
    n_filters: int = 16
    batch_norm: bool = True
    crop: int = 256
    batch_size: int = 8
    epochs: int = 30
    steps_per_epoch: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-5
    dice_weight: float = 1.0
    seam_weight: float = 5.0
    defocus_levels: list[float] = field(default_factory=list)
    defocus_prob: float = 0.5
    val_defocus_levels: list[float] = field(default_factory=list)
    seed: int = 0
    device: str | None = None
    pixel_size_um: float | None = None
    background_prob: float = 0.1
    normalization: dict[str, Any] = field(default_factory=lambda: Normalization(min_snr=20.0).to_dict())
    postprocess: dict[str, Any] = field(default_factory=lambda: PostProcess().to_dict())
    tune_postprocess: bool = True
    resume: bool = False
    init_from: str | None = None  # a U-Net checkpoint of the same architecture to start from (fine-tuning)


def seam_target(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground target (nuclei minus touching seams) and the seam mask."""
    seams = touching_borders(labels)
    return (labels > 0) & ~seams, seams


def split_validation(samples: list[LabelledImage], fraction: float,
                     seed: int) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out a seeded random share of the images for model selection."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, int(round(fraction * len(samples))))
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


def training_augmenter(config: Any) -> Augmenter:
    """The crops' augmentation of a training config (its `defocus_levels`, `defocus_prob` and
    `background_prob`): flips, turns, shifts, jitter, empty fields and optical defocus."""
    return Augmenter(defocus_levels=tuple(config.defocus_levels), psf="optical", defocus_prob=config.defocus_prob,
                     background_prob=config.background_prob)


class AugmentedCrops:
    """Random augmented, normalised training crops (H×W×C float32) with their instance labels."""

    def __init__(self, samples: list[LabelledImage], in_channels: int, crop: int, normalization: dict[str, Any],
                 augment: Augmenter, rng: np.random.Generator):
        self.images = [to_channels(s.image, in_channels) for s in samples]
        self.labels = [s.labels for s in samples]
        self.crop = crop
        self.rng = rng
        self.normalize = Normalization.from_dict(normalization)
        self.augment = augment

    def _crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.images[index], self.labels[index]
        pad_h, pad_w = max(0, self.crop - image.shape[0]), max(0, self.crop - image.shape[1])
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)))
        top = self.rng.integers(0, image.shape[0] - self.crop + 1)
        left = self.rng.integers(0, image.shape[1] - self.crop + 1)
        window = np.s_[top:top + self.crop, left:left + self.crop]
        return image[window], labels[window]

    def sample(self, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One crop of image `index` (default: a random one): (normalised image, labels)."""
        if index is None:
            index = int(self.rng.integers(0, len(self.images)))
        image, labels = self.augment(*self._crop(index), self.rng)
        return self.normalize(image), labels


class CropSampler:
    """Batches of U-Net training crops, already normalised, as tensors: images, targets, weights."""

    def __init__(self, samples: list[LabelledImage], config: TrainConfig, rng: np.random.Generator):
        self.crops = AugmentedCrops(samples, config.in_channels, config.crop, config.normalization,
                                    training_augmenter(config), rng)
        self.seam_weight = config.seam_weight

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets, weights = [], [], []
        for index in self.crops.rng.integers(0, len(self.crops.images), size):
            image, labels = self.crops.sample(index)
            target, seams = seam_target(labels)
            images.append(image.transpose(2, 0, 1))
            targets.append(target[None])
            weights.append(1.0 + self.seam_weight * seams[None])
        return stack_tensors(images), stack_tensors(targets), stack_tensors(weights)


def stack_tensors(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays), dtype=np.float32))


def validation_sets(samples: list[LabelledImage], levels: list[float],
                    seed: int) -> list[tuple[float, list[LabelledImage]]]:
    """The validation images in focus and, for each defocus level, blurred (fixed seed)."""
    sets = [(0.0, samples)]
    for level in sorted(set(levels) - {0}):
        blurred = [LabelledImage(s.name, defocus(s.image, level, seed=seed + i), s.labels)
                   for i, s in enumerate(samples)]
        sets.append((float(level), blurred))
    return sets


def evaluate_f1(segmenter: UNetSegmenter, samples: list[LabelledImage]) -> float:
    """Pooled instance F1 at IoU >= 0.5."""
    tp = fp = fn = 0
    for sample in samples:
        matching = match_instances(segmenter.instances(sample.image).labels, sample.labels)
        tp, fp, fn = tp + matching.tp, fp + matching.fp, fn + matching.fn
    return 2 * tp / max(1, 2 * tp + fp + fn)


def build_checkpoint(network: UNet, config: TrainConfig, metrics: dict[str, Any],
                     data_summary: dict[str, Any]) -> Checkpoint:
    architecture = dict(in_channels=config.in_channels, out_channels=1, depth=config.depth,
                        n_filters=config.n_filters, batch_norm=config.batch_norm)
    postprocess = PostProcess.from_dict(config.postprocess)
    return Checkpoint(
        family=UNetSegmenter.name, architecture=architecture,
        class_names=["background", "nucleus"], in_channels=config.in_channels,
        normalization=config.normalization, postprocess=postprocess.to_dict(),
        threshold=postprocess.threshold, pixel_size_um=config.pixel_size_um,
        state_dict={k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        training=dict(config=dataclasses.asdict(config), data=data_summary,
                      date=date.today().isoformat(), torch=torch.__version__),
        metrics=metrics)


def train(config: TrainConfig, progress: bool = True) -> Checkpoint:
    """Train, keep the best-on-validation checkpoint at `config.out`, and return it."""
    out = Path(config.out)
    state_path = out.with_name(out.stem + ".state.pt")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)

    train_samples = [s for folder in config.data for s in load_labelled(folder)]
    if config.val_data:
        val_samples = [s for folder in config.val_data for s in load_labelled(folder)]
    else:
        train_samples, val_samples = split_validation(train_samples, config.val_fraction, config.seed)
    data_summary = dict(train=config.data, val=config.val_data or f"{config.val_fraction:.0%} of train",
                        n_train=len(train_samples), n_val=len(val_samples),
                        val_names=[s.name for s in val_samples])
    sampler = CropSampler(train_samples, config, rng)
    val_sets = validation_sets(val_samples, config.val_defocus_levels, config.seed)

    network = UNet(config.in_channels, 1, config.depth, config.n_filters, config.batch_norm)
    if config.init_from:
        network.load_state_dict(Checkpoint.load(config.init_from).state_dict)
    network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    start_epoch, best, history = 0, -1.0, []
    if config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history = state["epoch"], state["best"], state["history"]
        log.info("resumed from %s at epoch %d (best val F1 %.4f)", state_path, start_epoch, best)

    bar = tqdm(total=total_steps, initial=start_epoch * config.steps_per_epoch,
               disable=not progress, desc="training", unit="step")
    for epoch in range(start_epoch, config.epochs):
        network.train()
        started, losses = time.time(), []
        for _ in range(config.steps_per_epoch):
            images, targets, weights = (t.to(device) for t in sampler.batch(config.batch_size))
            logits = network(images)
            loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weights) \
                + config.dice_weight * soft_dice_loss(torch.sigmoid(logits), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.4f}", best_f1=f"{best:.3f}")
        candidate = build_checkpoint(network, config, {}, data_summary)
        segmenter = UNetSegmenter(candidate, device=device)
        val_f1 = {level_key(level): evaluate_f1(segmenter, samples) for level, samples in val_sets}
        score = float(np.mean(list(val_f1.values())))
        history.append(dict(epoch=epoch + 1, loss=float(np.mean(losses)), val_f1=val_f1,
                            seconds=round(time.time() - started, 1)))
        if score > best:
            best = score
            candidate.metrics = dict(val_f1=val_f1, val_f1_mean=score, epoch=epoch + 1)
            candidate.save(out)
        torch.save(dict(network=network.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), rng=rng.bit_generator.state,
                        torch_rng=torch.get_rng_state(), epoch=epoch + 1, best=best,
                        history=history), state_path)
        out.with_name(out.stem + ".history.json").write_text(json.dumps(history, indent=1))
        log.info("epoch %d: loss %.4f, val F1 %s", epoch + 1, np.mean(losses), val_f1)
    bar.close()
    best_checkpoint = Checkpoint.load(out)
    best_checkpoint.training["history"] = history
    if config.tune_postprocess:
        best_checkpoint = with_tuned_postprocess(best_checkpoint, val_samples, device)
    best_checkpoint.save(out)
    return best_checkpoint


def with_tuned_postprocess(checkpoint: Checkpoint, samples: list[LabelledImage],
                           device: torch.device | str | None = None) -> Checkpoint:
    """The checkpoint with the post-processing that scores best on the in-focus `samples`."""
    postprocess, f1 = tune_postprocess(UNetSegmenter(checkpoint, device=device), samples)
    checkpoint.postprocess, checkpoint.threshold = postprocess.to_dict(), postprocess.threshold
    checkpoint.metrics["val_f1_tuned_postprocess"] = f1
    return checkpoint
