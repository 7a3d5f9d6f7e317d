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
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from metrics import level_key, match_instances, soft_dice_loss
from segmenter.base import native_bf16, resolve_device
from segmenter.checkpoint import Checkpoint
from segmenter.datasets import LabelledImage, load_labelled
from segmenter.inputs import to_channels
from segmenter.scale import median_diameter
from segmenter.unet import UNet
from segmenter.tuning import tune_postprocess
from segmenter.unet_segmenter import UNetSegmenter
from transforms import Augmenter, Normalization, PostProcess, RandomDefocus, defocus, rescale_pair, touching_borders

log = logging.getLogger(__name__)


@dataclass
class SharedTrainConfig:
    """What every crop-based trainer shares: data and its split, scale, crops, optimisation and augmentation."""

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
    # the defocus model (`transforms.RandomDefocus` fields: PSF kinds, pupil shape and camera noise ranges)
    blur: dict[str, Any] = field(default_factory=lambda: asdict(RandomDefocus.plain("optical")))
    val_defocus_levels: list[float] = field(default_factory=list)
    seed: int = 0
    device: str | None = None
    pixel_size_um: float | None = None
    background_prob: float = 0.1
    normalization: dict[str, Any] = field(default_factory=lambda: Normalization(min_snr=20.0).to_dict())
    tune_postprocess: bool = True
    resume: bool = False
    init_from: str | None = None  # a U-Net checkpoint of the same architecture to start from (fine-tuning)
    # µm/px of each `data` folder (None: unknown, scaled so its median nucleus has the known folders'
    # median diameter); with `pixel_size_um`, images are resampled to the model's scale once, at load
    data_pixel_size_um: list[float | None] = field(default_factory=list)
    val_pixel_size_um: list[float | None] = field(default_factory=list)
    data_weights: list[float] = field(default_factory=list)  # share of crops per data folder (empty: per image)
    val_names: list[str] = field(default_factory=list)  # stems of `data` images held out for validation
    scale_range: tuple[float, float] = (1.0, 1.0)  # crops resampled by a log-uniform factor in this range
    stain_prob: float = 0.0  # stain (HED) and hue/saturation/brightness variation of RGB crops
    jpeg_prob: float = 0.0
    bf16: bool = False  # bf16 autocast + channels_last for the forward and backward passes, where the device runs bf16 natively


@dataclass
class TrainConfig(SharedTrainConfig):
    """Everything that defines a binary U-Net training run (stored in the checkpoint)."""

    dice_weight: float = 1.0
    seam_weight: float = 5.0
    defocus_levels: list[float] = field(default_factory=list)
    defocus_prob: float = 0.5
    postprocess: dict[str, Any] = field(default_factory=lambda: PostProcess().to_dict())


def seam_target(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground target (nuclei minus touching seams) and the seam mask."""
    seams = touching_borders(labels)
    return (labels > 0) & ~seams, seams


def rescaled(sample: LabelledImage, factor: float) -> LabelledImage:
    """The sample resampled by `factor` (output px per input px)."""
    size = (max(1, round(sample.image.shape[0] * factor)), max(1, round(sample.image.shape[1] * factor)))
    image, labels = rescale_pair(sample.image, sample.labels, size)
    return LabelledImage(sample.name, image, labels)


def load_at_scale(folders: list[str], pixel_sizes: list[float | None],
                  model_pixel_size: float | None) -> list[LabelledImage]:
    """The labelled images of `folders`, resampled to `model_pixel_size` µm/px where the folder's
    pixel size is known; folders of unknown pixel size are matched by median nucleus diameter."""
    sets = [[LabelledImage(f"{folder}:{s.name}", s.image, s.labels) for s in load_labelled(folder)]
            for folder in folders]
    if model_pixel_size is None or not pixel_sizes:
        return [s for samples in sets for s in samples]
    if len(pixel_sizes) != len(folders):
        raise ValueError(f"expected one pixel size per data folder ({len(folders)}), got {len(pixel_sizes)}")
    out, unknown = [], []
    for samples, size in zip(sets, pixel_sizes):
        if size is None:
            unknown.extend(samples)
        else:
            out.extend(rescaled(s, size / model_pixel_size) for s in samples)
    diameters = [d for d in map(median_diameter, (s.labels for s in out)) if d > 0]
    target = float(np.median(diameters)) if diameters else None
    for sample in unknown:
        diameter = median_diameter(sample.labels)
        out.append(rescaled(sample, target / diameter) if target and diameter else sample)
    return out


def folder_of(name: str) -> str:
    """The data folder an image was loaded from (`load_at_scale` names images `folder:stem`)."""
    return name.rsplit(":", 1)[0] if ":" in name else ""


def sampling_weights(names: list[str], config: "SharedTrainConfig") -> np.ndarray:
    """Per-image probabilities: each data folder gets its `data_weights` share, split evenly."""
    if len(config.data_weights) != len(config.data):
        raise ValueError(f"expected one weight per data folder ({len(config.data)}), got {len(config.data_weights)}")
    share = dict(zip(config.data, config.data_weights))
    folders = [folder_of(name) for name in names]
    counts = {folder: folders.count(folder) for folder in set(folders)}
    weights = np.array([share[folder] / counts[folder] for folder in folders], dtype=np.float64)
    return weights / weights.sum()


def split_validation(samples: list[LabelledImage], fraction: float,
                     seed: int) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out a seeded random share of the images for model selection."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, int(round(fraction * len(samples))))
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


def training_augmenter(config: Any) -> Augmenter:
    """The crops' augmentation of a training config (its `defocus_levels`, `defocus_prob`,
    `background_prob` and, where it has them, `blur`, `stain_prob` and `jpeg_prob`): flips, turns, shifts,
    jitter, empty fields, stain and colour variation, defocus with camera noise and JPEG compression."""
    blur = getattr(config, "blur", None)
    return Augmenter(defocus_levels=tuple(config.defocus_levels), defocus_prob=config.defocus_prob,
                     blur=RandomDefocus(**blur) if blur else RandomDefocus.plain("optical"),
                     background_prob=config.background_prob, stain_prob=getattr(config, "stain_prob", 0.0),
                     jpeg_prob=getattr(config, "jpeg_prob", 0.0))


class AugmentedCrops:
    """Random augmented, normalised training crops (H×W×C float32) with their instance labels."""

    def __init__(self, samples: list[LabelledImage], in_channels: int, crop: int, normalization: dict[str, Any],
                 augment: Augmenter, rng: np.random.Generator, scale_range: tuple[float, float] = (1.0, 1.0)):
        self.images = [to_channels(s.image, in_channels) for s in samples]
        self.labels = [s.labels for s in samples]
        self.crop = crop
        self.rng = rng
        self.normalize = Normalization.from_dict(normalization)
        self.augment = augment
        self.log_scales = tuple(np.log(scale_range))
        self.weights: np.ndarray | None = None  # sampling probability per image (None: uniform)

    def pick(self, size: int) -> np.ndarray:
        """`size` random image indices, drawn with `weights`."""
        return self.rng.choice(len(self.images), size=size, p=self.weights)

    def _crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.images[index], self.labels[index]
        factor = float(np.exp(self.rng.uniform(*self.log_scales)))
        window = max(8, round(self.crop / factor))
        pad_h, pad_w = max(0, window - image.shape[0]), max(0, window - image.shape[1])
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)), mode="reflect")  # mirrored nuclei stay nuclei
        top = self.rng.integers(0, image.shape[0] - window + 1)
        left = self.rng.integers(0, image.shape[1] - window + 1)
        box = np.s_[top:top + window, left:left + window]
        return rescale_pair(image[box], labels[box], (self.crop, self.crop))

    def sample(self, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One crop of image `index` (default: a random one): (normalised image, labels)."""
        if index is None:
            index = int(self.pick(1)[0])
        image, labels = self.augment(*self._crop(index), self.rng)
        return self.normalize(image), labels


class CropSampler:
    """Batches of U-Net training crops, already normalised, as tensors: images, targets, weights."""

    def __init__(self, samples: list[LabelledImage], config: TrainConfig, rng: np.random.Generator):
        self.crops = AugmentedCrops(samples, config.in_channels, config.crop, config.normalization,
                                    training_augmenter(config), rng, tuple(config.scale_range))
        self.seam_weight = config.seam_weight
        if config.data_weights:
            self.crops.weights = sampling_weights([s.name for s in samples], config)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets, weights = [], [], []
        for index in self.crops.pick(size):
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
                     data_summary: dict[str, Any], precision: str) -> Checkpoint:
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
                      date=date.today().isoformat(), torch=torch.__version__, precision=precision),
        metrics=metrics)


def training_samples(config: SharedTrainConfig) -> tuple[list[LabelledImage], list[LabelledImage], dict[str, Any]]:
    """The training and validation images of a run at the model's scale (validation: the `val_names` images,
    else the `val_data` folders, else a seeded `val_fraction` of the data) and a summary for the checkpoint."""
    train_samples = load_at_scale(config.data, config.data_pixel_size_um, config.pixel_size_um)
    if config.val_names:
        held_out = set(config.val_names)
        val_samples = [s for s in train_samples if s.name.rsplit(":", 1)[-1] in held_out]
        train_samples = [s for s in train_samples if s.name.rsplit(":", 1)[-1] not in held_out]
        if len(val_samples) != len(held_out):
            raise ValueError(f"val_names: {len(held_out) - len(val_samples)} of {len(held_out)} not found in the data")
    elif config.val_data:
        val_samples = load_at_scale(config.val_data, config.val_pixel_size_um, config.pixel_size_um)
    else:
        train_samples, val_samples = split_validation(train_samples, config.val_fraction, config.seed)
    data_summary = dict(train=config.data, val=config.val_names or config.val_data or f"{config.val_fraction:.0%} of train",
                        n_train=len(train_samples), n_val=len(val_samples),
                        val_names=[s.name for s in val_samples],
                        median_diameter_px=float(np.median([median_diameter(s.labels) for s in train_samples])))
    return train_samples, val_samples, data_summary


def trains_in_bf16(config: SharedTrainConfig, device: torch.device) -> bool:
    """Whether a run trains in bf16: asked for (`config.bf16`) and native on `device` (else fp32, logged)."""
    if config.bf16 and not native_bf16(device):
        log.info("bf16 asked for, but %s has no native bf16: training in fp32", device)
        return False
    return config.bf16


def train(config: TrainConfig, progress: bool = True) -> Checkpoint:
    """Train, keep the best-on-validation checkpoint at `config.out`, and return it."""
    out = Path(config.out)
    state_path = out.with_name(out.stem + ".state.pt")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    bf16 = trains_in_bf16(config, device)

    train_samples, val_samples, data_summary = training_samples(config)
    sampler = CropSampler(train_samples, config, rng)
    val_sets = validation_sets(val_samples, config.val_defocus_levels, config.seed)

    network = UNet(config.in_channels, 1, config.depth, config.n_filters, config.batch_norm)
    if config.init_from:
        network.load_state_dict(Checkpoint.load(config.init_from).state_dict)
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

    bar = tqdm(total=total_steps, initial=start_epoch * config.steps_per_epoch,
               disable=not progress, desc="training", unit="step")
    for epoch in range(start_epoch, config.epochs):
        network.train()
        started, losses = time.time(), []
        for _ in range(config.steps_per_epoch):
            images, targets, weights = (t.to(device) for t in sampler.batch(config.batch_size))
            if bf16:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = network(images)
            logits = logits.float()
            loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weights) \
                + config.dice_weight * soft_dice_loss(torch.sigmoid(logits), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.4f}", best_f1=f"{best:.3f}")
        candidate = build_checkpoint(network, config, {}, data_summary, "bf16" if bf16 else "fp32")
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
