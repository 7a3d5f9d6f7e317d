"""Names shared by the job tests (fixtures are in conftest.py): a deterministic test model, the
outcome of a run, and the command line Cytomine would build."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from cytomine import Cytomine
from scipy import ndimage
from cytomine.models import AnnotationCollection, AttachedFileCollection, Job

import segmenter
from cyseg.job.descriptor import command_line, load_descriptor
from cyseg.pipeline.source import TileSource
from cyseg.server.runner import Endpoint
from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint

ROOT = Path(__file__).resolve().parents[2]
SLIDE_NAME = "nuclei.tif"
SLIDE_SIZE = (1024, 768)


class ThresholdSegmenter(Segmenter):
    """A deterministic stand-in for a trained model: bright pixels are nuclei. It makes the job tests
    exact (every synthetic nucleus is found, nothing else) and fast, whatever the shipped model's state."""

    name = "test-threshold"

    def __init__(self, checkpoint: Checkpoint, device: Any = None, threshold: float | None = None,
                 batch_size: int | None = 8, backend: str = "torch", precision: str = "auto") -> None:
        """`backend` and `precision` are accepted like a real model's; a threshold has no network to run."""
        super().__init__(checkpoint.class_names, "cpu")
        self.threshold = checkpoint.threshold if threshold is None else threshold

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: Any = None, **options: Any) -> "ThresholdSegmenter":
        return cls(checkpoint, device, **options)

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        probas = []
        for image in images:
            grey = np.asarray(image, dtype=np.float32).reshape(image.shape[0], image.shape[1], -1)[..., :3].mean(-1)
            foreground = np.clip((grey - 40) / 80, 0, 1)
            probas.append(np.stack([1 - foreground, foreground]))
        return probas

    def mask_from_proba(self, proba: np.ndarray) -> np.ndarray:
        return (proba[1] >= self.threshold).astype(np.int32)

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        """Connected bright regions; score: their mean foreground probability."""
        found = []
        for proba in self.predict_proba_batch(images):
            labels, count = ndimage.label(self.mask_from_proba(proba))
            scores = np.asarray(ndimage.mean(proba[1], labels, np.arange(1, count + 1))).reshape(-1)
            found.append(Instances(labels, scores, np.ones(count, dtype=np.int32)))
        return found


segmenter.register(ThresholdSegmenter)


@dataclass
class JobOutcome:
    """A finished run: run.py's exit code, the job as the server has it, and the admin's client."""

    exit_code: int
    job: Job
    client: Cytomine

    def annotations(self) -> list[Any]:
        return list(AnnotationCollection(job=self.job.id, includeAlgo=True, showWKT=True, showTerm=True).fetch())

    def attached(self) -> list[str]:
        return sorted(f.filename for f in AttachedFileCollection(self.job).fetch())


def connect(server: Endpoint, public_key: str | None = None, private_key: str | None = None) -> Cytomine:
    return Cytomine(server.host, public_key or server.public_key, private_key or server.private_key,
                    configure_logging=False, verbose=logging.WARNING)


def job_argv(server: Endpoint, test_model: Path, keys: tuple[str, str] | None = None,
             **parameters: Any) -> list[str]:
    """run.py's arguments as Cytomine builds them from descriptor.json (defaults, with the test model)."""
    public, private = keys or (server.public_key, server.private_key)
    values = {"cytomine_host": server.host, "cytomine_public_key": public, "cytomine_private_key": private,
              "cytomine_id_project": server.project_id, "cytomine_id_software": server.software_id,
              "cytomine_id_result_term": server.terms["Nucleus"], "model": str(test_model), "batch_size": 2,
              **parameters}
    argv = command_line(load_descriptor(), values)
    assert argv[:2] == ["python", "run.py"]
    return argv[2:]


RunJob = Callable[..., JobOutcome]


def image_id(server: Endpoint) -> int:
    return server.images[SLIDE_NAME]


def threshold_segmenter(threshold: float = 0.5) -> ThresholdSegmenter:
    checkpoint = Checkpoint(family=ThresholdSegmenter.name, architecture={}, class_names=["background", "nucleus"],
                            in_channels=3, normalization={}, state_dict={}, threshold=threshold)
    return ThresholdSegmenter(checkpoint)


class ArraySource(TileSource):
    """An in-memory slide (full-resolution RGB pixels), downsampled by striding at zoom levels > 0."""

    def __init__(self, pixels: np.ndarray, zoom_level: int = 0) -> None:
        super().__init__(pixels.shape[1], pixels.shape[0], zoom_level)
        self.pixels = pixels

    @property
    def description(self) -> str:
        return "an array"

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        f = self.factor
        return self.pixels[y * f:(y + height) * f:f, x * f:(x + width) * f:f]

    def thumbnail(self, max_size: int) -> np.ndarray:
        step = max(1, -(-max(self.full_width, self.full_height) // max_size))
        return self.pixels[::step, ::step]


def disks(shape: tuple[int, int], centres: list[tuple[float, float]], radius: float) -> np.ndarray:
    """RGB pixels: bright disks (centres as (x, y), origin top-left) on a dark background."""
    rows, cols = np.indices(shape)
    inside = np.zeros(shape, dtype=bool)
    for x, y in centres:
        inside |= (cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2 <= radius ** 2
    return np.repeat(np.where(inside, 200, 15).astype(np.uint8)[..., None], 3, axis=2)
