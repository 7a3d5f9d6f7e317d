"""The U-Net family of the Segmenter interface: probabilities, masks, and watershed instances."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from segmenter.backend import MAX_BATCH, build_runner, runner_device
from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint
from segmenter.inputs import as_image_list, padded_batch, to_channels
from segmenter.tta import dihedral_mean
from segmenter.unet import UNet
from transforms import Normalization, PostProcess, instance_scores


class UNetSegmenter(Segmenter):
    """A U-Net with its input normalisation and its post-processing.

    Binary models (one output channel, sigmoid) report probabilities as [background,
    foreground]; multi-class models (softmax) one channel per class. Instances come from the
    foreground probability through `PostProcess` (threshold, watershed split, size filters);
    an instance's class is the foreground class with the highest mean probability inside it.

    The network runs through `backend` at `precision` (`segmenter.backend`; built directly, plain
    PyTorch fp32, as in training; `segmenter.load` picks the fastest); `batch_size` images per
    forward pass, or None to let the backend measure what is fastest. With `tta`, probabilities are
    the mean over the eight flips and turns of each image (`segmenter.tta`; eight times the work).
    """

    name = "unet"

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device | None = None,
                 batch_size: int | None = None, threshold: float | None = None, backend: str = "torch",
                 precision: str = "fp32", tta: bool = False):
        super().__init__(checkpoint.class_names, runner_device(backend, device))
        self.checkpoint = checkpoint
        self.network = UNet(**checkpoint.architecture)
        self.network.load_state_dict(checkpoint.state_dict)
        self.network.to(self.device).eval()
        self.runner = build_runner(self.network, self.device, backend, precision)
        self.in_channels = checkpoint.in_channels
        self.normalization = Normalization.from_dict(checkpoint.normalization)
        self.threshold = checkpoint.threshold if threshold is None else threshold
        self.postprocess = PostProcess.from_dict(checkpoint.postprocess | {"threshold": self.threshold})
        self.batch_size = batch_size
        self.tta = bool(tta)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None,
                        **options) -> "UNetSegmenter":
        return cls(checkpoint, device=device, **options)

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class probabilities; an image the normalisation calls blank (`Normalization.blank`) is all
        background, without running the network."""
        images = [to_channels(image, self.in_channels) for image in as_image_list(images)]
        blank = [self.normalization.blank(image) for image in images]
        content = [self.normalization(image) for image, empty in zip(images, blank) if not empty]
        probas: list[np.ndarray] = []
        step = self.batch_size or MAX_BATCH
        for start in range(0, len(content), step):
            probas.extend(self._predict_chunk(content[start:start + step]))
        found = iter(probas)
        return [background(image.shape[:2], len(self.class_names)) if empty else next(found)
                for image, empty in zip(images, blank)]

    def _predict_chunk(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Images padded to a common size, through the runner (over the eight views with `tta`)."""
        batch = padded_batch(images, self.network.multiple)
        proba = dihedral_mean(self._proba, batch) if self.tta else self._proba(batch)
        return [p[:, :image.shape[0], :image.shape[1]] for p, image in zip(proba, images)]

    def _proba(self, batch: np.ndarray) -> np.ndarray:
        """N×K×H×W class probabilities of a padded N×C×H×W batch."""
        with torch.inference_mode():
            logits = self.runner(batch, split=self.batch_size is None)
            if logits.shape[1] == 1:
                foreground = torch.sigmoid(logits)
                proba = torch.cat([1 - foreground, foreground], dim=1)
            else:
                proba = torch.softmax(logits, dim=1)
            return proba.float().cpu().numpy()

    def mask_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """The class mask of the post-processed instances, with the seams between touching
        instances set to background so that a mask-to-polygon step keeps them apart."""
        return self.instances_from_proba(proba).class_mask()

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        return [self.instances_from_proba(proba) for proba in self.predict_proba_batch(images)]

    def instances_from_proba(self, proba: np.ndarray, postprocess: PostProcess | None = None) -> Instances:
        """Instances of a C×H×W probability map, with the model's post-processing or another."""
        foreground = 1 - proba[0]
        labels = (postprocess or self.postprocess)(foreground)
        n = int(labels.max())
        if proba.shape[0] == 2 or n == 0:
            classes = np.ones(n, dtype=np.int32)
        else:
            index = np.arange(1, n + 1)
            means = np.stack([ndimage.mean(channel, labels, index) for channel in proba[1:]])
            classes = means.argmax(axis=0).astype(np.int32) + 1
        return Instances(labels=labels, scores=instance_scores(labels, foreground), classes=classes)


def background(shape: tuple[int, int], classes: int) -> np.ndarray:
    """A C×H×W probability map that is background (class 0) everywhere."""
    proba = np.zeros((classes, *shape), dtype=np.float32)
    proba[0] = 1.0
    return proba
