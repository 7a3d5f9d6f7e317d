"""Training a BNS network (`segmenter.bns`) on folders of images and instance labels.

Each training crop comes from `AugmentedCrops` (flips, turns, shifts, intensity jitter, empty
fields, scale, and for stained RGB crops stain, colour and JPEG variation; no defocus), then with
probability `blur_prob` it is defocused by `RandomDefocus` (PSF kind and shape, camera noise; per
channel for RGB) at a level drawn from 0..`max_blur` px: the network sees the blurred crop and
learns its 3-class map (`boundary_classes`) and the clean normalised crop. Loss: cross-entropy
(boundary class weighted by `boundary_weight`) + MSE + L1 on the deblurred output. Adam with a
cosine schedule; the checkpoint with the best mean validation F1 (IoU >= 0.5, in focus and at
`val_defocus_levels`, on the held-out images of `segmenter.training.training_samples`) is kept, and
then each post-processing set is tuned on the validation images (in focus and at `tune_levels`)
that the focus classifier calls sharp or blurry. A state file next to the output makes it resumable.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from metrics import level_key, match_instances
from segmenter.base import resolve_device
from segmenter.bns import (SETS, BNSNet, BNSSegmenter, BoundaryWatershed, boundary_classes, branch,
                           start_as_identity)
from segmenter.checkpoint import Checkpoint
from segmenter.datasets import LabelledImage
from segmenter.detection_training import transfer_weights
from segmenter.registry import model_path
from segmenter.training import (AugmentedCrops, SharedTrainConfig, evaluate_f1, sampling_weights, stack_tensors,
                                trains_in_bf16, training_samples, validation_sets)
from transforms import Augmenter, Normalization, RandomDefocus

log = logging.getLogger(__name__)

#: The post-processing values tried per set (every combination).
GRID: dict[str, tuple] = {"foreground_threshold": (0.4, 0.5, 0.6), "marker_threshold": (0.1, 0.3, 0.5, 0.7),
                          "min_size": (20, 40)}


@dataclass
class BNSTrainConfig(SharedTrainConfig):
    """Everything that defines a BNS training run (stored in the checkpoint)."""

    n_filters: int = 12
    epochs: int = 20
    blur: dict[str, Any] = field(default_factory=lambda: asdict(RandomDefocus()))
    val_defocus_levels: list[float] = field(default_factory=lambda: [8, 20])
    boundary_weight: float = 3.0
    mse_weight: float = 1.0
    l1_weight: float = 1.0
    max_blur: int = 32
    blur_prob: float = 0.7
    tune_levels: list[float] = field(default_factory=lambda: [8, 16, 24])
    tune_grid: dict[str, tuple] = field(default_factory=lambda: dict(GRID))  # post-processing values tried
    focus_model: str = "focus"
    # `init_from`: a U-Net checkpoint of the same width (its encoder and decoder start both branches) or a BNS one


class PairSampler:
    """Batches of blurred normalised crops, their 3-class targets and the clean normalised crops."""

    def __init__(self, samples: list[LabelledImage], config: BNSTrainConfig, rng: np.random.Generator):
        augment = Augmenter(background_prob=config.background_prob, stain_prob=config.stain_prob,
                            jpeg_prob=config.jpeg_prob)
        self.crops = AugmentedCrops(samples, config.in_channels, config.crop, Normalization(kind="none").to_dict(),
                                    augment, rng, tuple(config.scale_range))
        if config.data_weights:
            self.crops.weights = sampling_weights([s.name for s in samples], config)
        self.normalize = Normalization.from_dict(config.normalization)
        self.blur = RandomDefocus(**config.blur)
        self.rng, self.max_blur, self.blur_prob = rng, config.max_blur, config.blur_prob

    def triple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(blurred input C×H×W, class target H×W, clean target C×H×W)."""
        clean, labels = self.crops.sample()
        blurred = clean
        if self.rng.random() < self.blur_prob:
            blurred = self.blur(clean, int(self.rng.integers(0, self.max_blur + 1)), self.rng)
        return (self.normalize(blurred).transpose(2, 0, 1), boundary_classes(labels),
                self.normalize(clean).transpose(2, 0, 1))

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, classes, clean = zip(*(self.triple() for _ in range(size)))
        return stack_tensors(list(inputs)), torch.from_numpy(np.stack(classes)), stack_tensors(list(clean))


def bns_loss(logits: torch.Tensor, deblurred: torch.Tensor, classes: torch.Tensor, clean: torch.Tensor,
             config: BNSTrainConfig) -> torch.Tensor:
    """Weighted cross-entropy of the 3 classes + MSE + L1 of the deblurred image (computed in float32)."""
    weight = torch.tensor([1.0, 1.0, config.boundary_weight], device=logits.device)
    deblurred = deblurred.float()
    return F.cross_entropy(logits.float(), classes, weight=weight) + config.mse_weight * F.mse_loss(deblurred, clean) \
        + config.l1_weight * F.l1_loss(deblurred, clean)


def seed_classes_from_binary(head: torch.nn.Conv2d, source: Checkpoint) -> bool:
    """Start the 3-class head from a binary U-Net's head: interior = its nucleus logit, background 0,
    boundary rare (logit -2); False (head untouched) when `source` has no such head."""
    weight, bias = source.state_dict.get("head.weight"), source.state_dict.get("head.bias")
    if weight is None or bias is None or weight.shape != (1, *head.weight.shape[1:]):
        return False
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, float(bias[0]), -2.0]))
        head.weight[1] = weight[0]
    return True


def tune_watershed(probas: list[np.ndarray], labels: list[np.ndarray], base: BoundaryWatershed,
                   grid: dict[str, tuple] = GRID) -> tuple[BoundaryWatershed, float]:
    """The `grid` setting with the best pooled F1 (IoU >= 0.5) on 3-class probabilities and their true labels."""
    best, best_f1 = base, -1.0
    for values in itertools.product(*grid.values()):
        candidate = dataclasses.replace(base, **dict(zip(grid, values)))
        tp = fp = fn = 0
        for proba, truth in zip(probas, labels):
            matching = match_instances(candidate(proba), truth)
            tp, fp, fn = tp + matching.tp, fp + matching.fp, fn + matching.fn
        f1 = 2 * tp / max(1, 2 * tp + fp + fn)
        if f1 > best_f1:
            best, best_f1 = candidate, f1
    return best, best_f1


def with_tuned_sets(checkpoint: Checkpoint, samples: list[LabelledImage], device: torch.device,
                    grid: dict[str, tuple] = GRID) -> Checkpoint:
    """The checkpoint with each post-processing set tuned on the `samples` the focus classifier sends to it."""
    model = BNSSegmenter(checkpoint, device=device)
    images = [s.image for s in samples]
    decisions, probas = model.decide_batch(images), model.class_proba_batch(images)
    tuned = {}
    for name in SETS:
        chosen = [i for i, decision in enumerate(decisions) if decision.model == name]
        if not chosen:
            log.warning("no validation image called %s: its post-processing stays as it is", name)
            continue
        values, f1 = tune_watershed([probas[i] for i in chosen], [samples[i].labels for i in chosen],
                                    model.postprocess[name], grid)
        checkpoint.postprocess[name] = values.to_dict()
        tuned[name] = dict(f1=f1, images=len(chosen))
        log.info("%s post-processing (%d images): %s, F1 %.4f", name, len(chosen), values, f1)
    checkpoint.threshold = checkpoint.postprocess["sharp"]["foreground_threshold"]
    checkpoint.metrics["val_f1_tuned_postprocess"] = tuned
    return checkpoint


def train_bns(config: BNSTrainConfig, progress: bool = True) -> Checkpoint:
    """Train, keep the best-on-validation checkpoint at `config.out`, tune its post-processing, return it."""
    out = Path(config.out)
    state_path = out.with_name(out.stem + ".state.pt")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    bf16 = trains_in_bf16(config, device)
    train_samples, val_samples, data_summary = training_samples(config)
    sampler = PairSampler(train_samples, config, rng)
    val_sets = validation_sets(val_samples, config.val_defocus_levels, config.seed)
    focus = Checkpoint.load(model_path(config.focus_model))
    postprocess = {name: BoundaryWatershed().to_dict() for name in SETS}

    network = BNSNet(config.in_channels, config.depth, config.n_filters, config.batch_norm)
    if config.init_from:
        source = Checkpoint.load(config.init_from)
        if source.family == BNSSegmenter.name:  # a BNS model trained on: both branches as they are
            for name in ("segmentation", "restoration"):
                getattr(network, name).load_state_dict(branch(source, name).state_dict)
            postprocess = {name: dict(source.postprocess[name]) for name in SETS}
            log.info("continuing from the BNS model %s", config.init_from)
        else:
            copied = transfer_weights(network.segmentation, source) + transfer_weights(network.restoration, source)
            start_as_identity(network.restoration)
            seeded = seed_classes_from_binary(network.segmentation.head, source)
            log.info("initialised %d tensors from %s (class head seeded: %s)", len(copied), config.init_from, seeded)
    network.to(device)
    if bf16:
        network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    start_epoch, best, history = 0, -1.0, []
    if config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.T_max = total_steps  # a resumed run may be given another length: the cosine ends with it
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history = state["epoch"], state["best"], state["history"]
        log.info("resumed from %s at epoch %d (best val F1 %.4f)", state_path, start_epoch, best)

    def checkpoint_now(metrics: dict[str, Any]) -> Checkpoint:
        return BNSSegmenter.build_checkpoint(
            network, config.normalization, postprocess, focus, metrics=metrics, pixel_size_um=config.pixel_size_um,
            training=dict(config=asdict(config), data=data_summary, date=date.today().isoformat(),
                          torch=torch.__version__, precision="bf16" if bf16 else "fp32"))

    bar = tqdm(total=total_steps, initial=start_epoch * config.steps_per_epoch, disable=not progress,
               desc="training bns", unit="step")
    for epoch in range(start_epoch, config.epochs):
        network.train()
        started, losses = time.time(), []
        for _ in range(config.steps_per_epoch):
            images, classes, clean = (t.to(device) for t in sampler.batch(config.batch_size))
            if bf16:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, deblurred = network(images)
            loss = bns_loss(logits, deblurred, classes, clean, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.4f}", best_f1=f"{best:.3f}")
        train_seconds = time.time() - started
        network.eval()
        candidate = checkpoint_now({})
        segmenter = BNSSegmenter(candidate, device=device, precision="bf16" if bf16 else "fp32")
        val_f1 = {level_key(level): evaluate_f1(segmenter, samples) for level, samples in val_sets}
        score = float(np.mean(list(val_f1.values())))
        history.append(dict(epoch=epoch + 1, loss=float(np.mean(losses)), val_f1=val_f1,
                            seconds_per_step=round(train_seconds / config.steps_per_epoch, 2),
                            seconds=round(time.time() - started, 1)))
        if score > best:
            best = score
            candidate.metrics = dict(val_f1=val_f1, val_f1_mean=score, epoch=epoch + 1)
            candidate.save(out)
        torch.save(dict(network=network.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), rng=rng.bit_generator.state,
                        torch_rng=torch.get_rng_state(), epoch=epoch + 1, best=best, history=history), state_path)
        out.with_name(out.stem + ".history.json").write_text(json.dumps(history, indent=1))
        log.info("epoch %d: loss %.4f, val F1 %s", epoch + 1, np.mean(losses), val_f1)
    bar.close()
    best_checkpoint = Checkpoint.load(out)
    best_checkpoint.training["history"] = history
    if config.tune_postprocess:
        tuning = [s for _, samples in validation_sets(val_samples, config.tune_levels, config.seed) for s in samples]
        best_checkpoint = with_tuned_sets(best_checkpoint, tuning, device, config.tune_grid)
    best_checkpoint.save(out)
    return best_checkpoint
