"""The Segmenter interface every cyseg model implements; it plugs straight into SLDC."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import sldc
import torch

from transforms import touching_borders


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/"auto" picks CUDA when available, else CPU; asking for CUDA without one is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available (use 'cpu' or 'auto')")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX.
    Elsewhere PyTorch emulates bf16, measured about 10× slower than fp32 for a U-Net on an AVX2 CPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


@dataclass
class Instances:
    """Objects found in one image: a label image (0 = background, i = object i) and, per object
    i (row i-1), its score in [0, 1] and its class index into the segmenter's classes."""

    labels: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(self.labels.max()) if self.labels.size else 0
        if len(self.scores) != n or len(self.classes) != n:
            raise ValueError(f"{n} labelled objects but {len(self.scores)} scores and "
                             f"{len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.scores)

    def class_mask(self) -> np.ndarray:
        """The int32 class mask, with the seams between touching objects set to background so that a
        mask-to-polygon step keeps them apart."""
        classes = np.concatenate([[0], self.classes]).astype(np.int32)
        mask = classes[self.labels]
        mask[touching_borders(self.labels)] = 0
        return mask


class Segmenter(sldc.SemanticSegmenter, abc.ABC):
    """A model that turns images into class masks and object instances.

    Images are numpy arrays, H×W (grey) or H×W×C, any integer or float dtype. A batch is an
    N×H×W[×C] array or a list of arrays of different sizes. `classes` are the class names,
    index 0 being background. Subclasses implement `predict_proba_batch` and `instances_batch`.
    """

    name: ClassVar[str]
    returns_instances: ClassVar[bool] = True

    def __init__(self, class_names: Sequence[str], device: str | torch.device | None = None):
        super().__init__(classes=list(range(len(class_names))))
        self.class_names = list(class_names)
        self.device = resolve_device(device)

    @property
    def backend(self) -> str:
        """How the network runs (`segmenter.backend`), e.g. "openvino bf16"; "" for a model without one."""
        runner = getattr(self, "runner", None)
        return runner.description if runner else ""

    @classmethod
    @abc.abstractmethod
    def from_checkpoint(cls, checkpoint: Any, device: str | torch.device | None = None,
                        **options: Any) -> "Segmenter":
        """Rebuild the segmenter from a `segmenter.Checkpoint`."""

    @abc.abstractmethod
    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, a float32 C×H×W map of class probabilities (C = number of classes)."""

    @abc.abstractmethod
    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        """Per image, the objects found in it."""

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        return self.predict_proba_batch([image])[0]

    def instances(self, image: np.ndarray) -> Instances:
        return self.instances_batch([image])[0]

    def segment_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Class-index masks (int32): an N×H×W array for an array batch, a list for a list."""
        masks = [self.mask_from_proba(proba) for proba in self.predict_proba_batch(images)]
        return np.stack(masks) if isinstance(images, np.ndarray) else masks

    def mask_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """The class-index mask (int32) of a C×H×W probability map; argmax unless overridden."""
        return proba.argmax(axis=0).astype(np.int32)

    def segment(self, image: np.ndarray) -> np.ndarray:
        return self.segment_batch([image])[0]
