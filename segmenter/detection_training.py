"""Training the detection segmenter on instance labels (nuclei) or on class boxes (VOC, e.g. BCCD).

Loss (StarDist's): BCE on the object-probability maps + L1 on the ray distances (in units of
`ray_scale`, weighted by the object probability) + BCE and soft Dice on the foreground (labels
only). Transfer: `init_from` copies every tensor of another cyseg checkpoint whose name and shape
match (the first convolution is spread over colour channels when a grey model seeds a colour
one); `freeze_encoder_epochs` first trains only the decoder and heads, then everything (staged
freezing, as in the blood-cell transfer-learning seed). The checkpoint with the best validation
AP@0.5 is kept; for labels the decoding (score threshold, suppression, foreground trimming) is then chosen by F1
on the validation images.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from metrics import average_precision, evaluate_image, soft_dice_loss
from metrics.boxes import BoxDetections, average_precision_per_class
from segmenter.base import Instances, resolve_device
from segmenter.box_datasets import BoxedImage, load_voc
from segmenter.checkpoint import Checkpoint
from segmenter.datasets import LabelledImage, load_labelled
from segmenter.detection import Decoding, DetectionSegmenter, Heads, build_network
from segmenter.detection_targets import Targets, box_targets, label_targets
from segmenter.inputs import to_channels
from segmenter.training import AugmentedCrops, split_validation, stack_tensors, training_augmenter
from transforms import Normalization

log = logging.getLogger(__name__)

SCORE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
NMS_IOUS = (0.2, 0.3, 0.5)


@dataclass
class DetectionTrainConfig:
    """Everything that defines a detection training run (stored in the checkpoint).

    Data: `data` (folders with images/ and labels/) or `voc` (a VOC root with `voc_split` for
    training and `voc_val_split` for selection, resized by `voc_scale`).
    """

    out: str
    data: list[str] = field(default_factory=list)
    voc: str | None = None
    voc_split: str = "train"
    voc_val_split: str = "val"
    voc_scale: float = 1.0
    class_names: list[str] = field(default_factory=lambda: ["background", "nucleus"])
    val_fraction: float = 0.1
    in_channels: int = 1
    depth: int = 4
    n_filters: int = 12
    batch_norm: bool = True
    n_rays: int = 32
    ray_scale: float = 16.0
    crop: int = 256
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-5
    ray_weight: float = 1.0
    foreground_weight: float = 1.0
    defocus_levels: list[float] = field(default_factory=list)
    defocus_prob: float = 0.5
    background_prob: float = 0.1
    init_from: str | None = None
    freeze_encoder_epochs: int = 0
    normalization: dict[str, Any] = field(default_factory=lambda: Normalization(min_snr=20.0).to_dict())
    seed: int = 0
    device: str | None = None

    @property
    def heads(self) -> Heads:
        return Heads(len(self.class_names) - 1, self.n_rays, self.ray_scale)

    def architecture(self) -> dict[str, Any]:
        heads = self.heads
        return dict(in_channels=self.in_channels, depth=self.depth, n_filters=self.n_filters,
                    batch_norm=self.batch_norm, n_classes=heads.n_classes, n_rays=heads.n_rays,
                    ray_scale=heads.ray_scale)


def detection_loss(out: torch.Tensor, batch: dict[str, torch.Tensor], heads: Heads,
                   config: DetectionTrainConfig) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(out[:, :heads.n_classes], batch["heat"])
    weight = batch["ray_weight"][:, None]
    ray_error = (out[:, heads.rays] - batch["rays"] / heads.ray_scale).abs() * weight
    loss = loss + config.ray_weight * ray_error.sum() / (weight.sum() * heads.n_rays).clamp(min=1)
    if "foreground" in batch:
        logits, target = out[:, heads.foreground:heads.foreground + 1], batch["foreground"][:, None]
        loss = loss + config.foreground_weight * (F.binary_cross_entropy_with_logits(logits, target)
                                                  + soft_dice_loss(torch.sigmoid(logits), target))
    return loss


def targets_batch(images: list[np.ndarray], targets: list[Targets]) -> dict[str, torch.Tensor]:
    batch = dict(image=stack_tensors([i.transpose(2, 0, 1) for i in images]),
                 heat=stack_tensors([t.heat for t in targets]), rays=stack_tensors([t.rays for t in targets]),
                 ray_weight=stack_tensors([t.ray_weight for t in targets]))
    if all(t.foreground is not None for t in targets):
        batch["foreground"] = stack_tensors([t.foreground for t in targets])
    return batch


class LabelSampler:
    """Detection batches from instance-labelled images (the U-Net's augmented crops)."""

    def __init__(self, samples: list[LabelledImage], config: DetectionTrainConfig, rng: np.random.Generator):
        self.crops = AugmentedCrops(samples, config.in_channels, config.crop, config.normalization,
                                    training_augmenter(config), rng)
        self.n_rays, self.max_distance = config.n_rays, 3.0 * config.ray_scale

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        crops = [self.crops.sample() for _ in range(size)]
        return targets_batch([image for image, _ in crops],
                             [label_targets(labels, self.n_rays, self.max_distance) for _, labels in crops])


class BoxSampler:
    """Detection batches from box-annotated images: random crops, flips and 90° turns."""

    def __init__(self, samples: list[BoxedImage], config: DetectionTrainConfig, rng: np.random.Generator):
        normalize = Normalization.from_dict(config.normalization)
        self.images = [normalize(to_channels(s.image, config.in_channels)) for s in samples]
        self.samples, self.crop, self.rng = samples, config.crop, rng
        self.n_classes, self.n_rays = config.heads.n_classes, config.n_rays

    def _one(self) -> tuple[np.ndarray, Targets]:
        index = int(self.rng.integers(0, len(self.samples)))
        image, boxes = self.images[index], self.samples[index].boxes.copy()
        pad_h, pad_w = max(0, self.crop - image.shape[0]), max(0, self.crop - image.shape[1])
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        top = int(self.rng.integers(0, image.shape[0] - self.crop + 1))
        left = int(self.rng.integers(0, image.shape[1] - self.crop + 1))
        image = image[top:top + self.crop, left:left + self.crop]
        boxes -= np.array([left, top, left, top], dtype=np.float32)
        size = float(self.crop)
        if self.rng.random() < 0.5:
            image, boxes = image[:, ::-1], np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
        if self.rng.random() < 0.5:
            image, boxes = image[::-1], np.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], 1)
        if self.rng.random() < 0.5:  # transpose: rows <-> columns
            image, boxes = image.transpose(1, 0, 2), boxes[:, [1, 0, 3, 2]]
        targets = box_targets(boxes, self.samples[index].classes, image.shape[:2], self.n_classes, self.n_rays)
        return np.ascontiguousarray(image), targets

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        crops = [self._one() for _ in range(size)]
        return targets_batch([image for image, _ in crops], [targets for _, targets in crops])


def boxes_of(found: Instances) -> np.ndarray:
    """Bounding boxes (x0, y0, x1, y1) of instances 1..n."""
    boxes = np.zeros((len(found), 4), dtype=np.float32)
    for index, window in enumerate(ndimage.find_objects(found.labels, max_label=len(found))):
        if window is not None:
            boxes[index] = (window[1].start, window[0].start, window[1].stop, window[0].stop)
    return boxes


def label_ap(model: DetectionSegmenter, samples: list[LabelledImage]) -> float:
    """Pooled AP@0.5 (mask IoU) over labelled images."""
    results = [evaluate_image(found.labels, s.labels, found.scores)
               for s, found in zip(samples, model.instances_batch([s.image for s in samples]))]
    return average_precision(np.concatenate([r.scores for r in results]),
                             np.concatenate([r.is_tp for r in results]).astype(bool),
                             sum(r.n_true for r in results))


def box_ap(model: DetectionSegmenter, samples: list[BoxedImage]) -> dict[str, float]:
    """AP@0.5 (box IoU) per class and mAP."""
    detections = []
    for sample in samples:
        found = model.instances(sample.image)
        detections.append(BoxDetections(boxes_of(found), found.scores, found.classes, sample.boxes, sample.classes))
    return average_precision_per_class(detections, model.class_names)


def transfer_weights(network: torch.nn.Module, source: Checkpoint) -> list[str]:
    """Copy the tensors of `source` that fit `network` (by name and shape). A grey first convolution is
    spread over colour input channels; the one-channel head of a binary U-Net seeds the foreground and
    every object-probability channel (both are high on the objects). Returns the names copied."""
    state = network.state_dict()
    heads = getattr(network, "heads", None)
    copied = []
    for name, value in source.state_dict.items():
        if name not in state:
            continue
        target = state[name]
        if value.shape == target.shape:
            state[name] = value.clone()
        elif value.ndim == 4 and value.shape[1] == 1 and value.shape[0] == target.shape[0] and \
                value.shape[2:] == target.shape[2:]:
            state[name] = value.repeat(1, target.shape[1], 1, 1) / target.shape[1]
        elif name.startswith("head.") and value.shape[0] == 1 and value.shape[1:] == target.shape[1:] and heads:
            for channel in [*range(heads.n_classes), heads.foreground]:
                target[channel] = value[0]
            state[name] = target
        else:
            continue
        copied.append(name)
    network.load_state_dict(state)
    return copied


def start_rays_at_mean(network: torch.nn.Module, heads: Heads, batch: dict[str, torch.Tensor]) -> None:
    """Start every ray output at the batch's mean target distance (weights scaled down), so training
    refines distances instead of first climbing from zero."""
    weight = batch["ray_weight"][:, None]
    mean = float((batch["rays"] * weight).sum() / (weight.sum() * heads.n_rays).clamp(min=1)) / heads.ray_scale
    with torch.no_grad():
        network.head.weight[heads.rays] *= 0.1
        network.head.bias[heads.rays] = mean


def build_checkpoint(network: torch.nn.Module, config: DetectionTrainConfig, decoding: Decoding,
                     metrics: dict[str, Any], data_summary: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        family=DetectionSegmenter.name, architecture=config.architecture(), class_names=list(config.class_names),
        in_channels=config.in_channels, normalization=config.normalization, postprocess=decoding.to_dict(),
        threshold=decoding.score_threshold,
        state_dict={k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        training=dict(config=dataclasses.asdict(config), data=data_summary, date=date.today().isoformat(),
                      torch=torch.__version__),
        metrics=metrics)


def tune_decoding(checkpoint: Checkpoint, samples: list[LabelledImage],
                  device: torch.device) -> tuple[Decoding, float]:
    """The score threshold, suppression IoU and foreground trimming with the best pooled F1 on `samples`."""
    model = DetectionSegmenter(checkpoint, device=device)
    maps = model.head_maps_batch([s.image for s in samples], peak_threshold=min(SCORE_THRESHOLDS))
    best: tuple[float, Decoding] = (-1.0, model.decoding)
    for threshold, nms_iou, refine in itertools.product(SCORE_THRESHOLDS, NMS_IOUS, (True, False)):
        decoding = dataclasses.replace(model.decoding, score_threshold=threshold, nms_iou=nms_iou,
                                       foreground_refine=refine)
        tp = fp = fn = 0
        for sample, image_maps in zip(samples, maps):
            result = evaluate_image(model.instances_from_maps(image_maps, decoding).labels, sample.labels)
            tp, fp, fn = tp + result.tp, fp + result.fp, fn + result.fn
        f1 = 2 * tp / max(1, 2 * tp + fp + fn)
        if f1 > best[0]:
            best = (f1, decoding)
    return best[1], best[0]


def load_data(config: DetectionTrainConfig) -> tuple[list, list, dict[str, Any]]:
    """Training and validation samples and a summary of where they came from."""
    if config.voc:
        train_samples = load_voc(config.voc, config.voc_split, config.class_names, config.voc_scale)
        val_samples = load_voc(config.voc, config.voc_val_split, config.class_names, config.voc_scale)
        source = dict(voc=config.voc, train=config.voc_split, val=config.voc_val_split, scale=config.voc_scale)
    elif config.data:
        samples = [s for folder in config.data for s in load_labelled(folder)]
        train_samples, val_samples = split_validation(samples, config.val_fraction, config.seed)
        source = dict(train=config.data, val=f"{config.val_fraction:.0%} of train")
    else:
        raise ValueError("no training data: give label folders (data) or a VOC root (voc)")
    return train_samples, val_samples, dict(source, n_train=len(train_samples), n_val=len(val_samples))


def train_detection(config: DetectionTrainConfig, progress: bool = True) -> Checkpoint:
    """Train, keep the best-on-validation checkpoint at `config.out`, and return it."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    train_samples, val_samples, data_summary = load_data(config)
    boxes = bool(config.voc)
    sampler = BoxSampler(train_samples, config, rng) if boxes else LabelSampler(train_samples, config, rng)
    network, heads = build_network(config.architecture())
    rays_known = False
    if config.init_from:
        source = Checkpoint.load(config.init_from)
        copied = transfer_weights(network, source)
        rays_known = source.family == DetectionSegmenter.name and source.architecture.get("n_rays") == heads.n_rays \
            and "head.weight" in copied
        log.info("initialised %d of %d tensors from %s", len(copied), len(network.state_dict()), config.init_from)
    if not rays_known:
        start_rays_at_mean(network, heads, sampler.batch(config.batch_size))
    network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    decoding = Decoding(foreground_refine=not boxes, score_threshold=0.4 if boxes else 0.5)
    out, best, history = Path(config.out), -1.0, []
    began = time.time()
    bar = tqdm(total=total, disable=not progress, desc="training detection", unit="step")
    for epoch in range(config.epochs):
        frozen = epoch < config.freeze_encoder_epochs
        for parameter in network.encoder.parameters():
            parameter.requires_grad_(not frozen)
        network.train()
        losses = []
        for _ in range(config.steps_per_epoch):
            batch = {k: v.to(device) for k, v in sampler.batch(config.batch_size).items()}
            loss = detection_loss(network(batch["image"]), batch, heads, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}", best_ap=f"{best:.3f}")
        candidate = build_checkpoint(network, config, decoding, {}, data_summary)
        model = DetectionSegmenter(candidate, device=device)
        scores = box_ap(model, val_samples) if boxes else {"ap50": label_ap(model, val_samples)}
        score = scores["mAP"] if boxes else scores["ap50"]
        history.append(dict(epoch=epoch + 1, loss=float(np.mean(losses)), frozen_encoder=frozen, val=scores,
                            seconds=round(time.time() - began, 1)))
        log.info("epoch %d: loss %.4f, validation %s", epoch + 1, np.mean(losses), scores)
        if score > best:
            best = score
            candidate.metrics = dict(val=scores, epoch=epoch + 1)
            candidate.save(out)
    bar.close()
    checkpoint = Checkpoint.load(out)
    checkpoint.training["history"] = history
    checkpoint.training["seconds"] = round(time.time() - began, 1)
    if not boxes:
        tuned, f1 = tune_decoding(checkpoint, val_samples, device)
        checkpoint.postprocess, checkpoint.threshold = tuned.to_dict(), tuned.score_threshold
        checkpoint.metrics["val_f1_tuned_decoding"] = f1
    checkpoint.save(out)
    return checkpoint
