"""The model a run segments with: a shipped model or a checkpoint file, or `auto`, a shipped model per
slide (`segmenter.picker`), run at the slide's pixel size."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

import segmenter
from cyseg.errors import CysegError
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.source import TileSource
from cyseg.pipeline.tissue import TissueMask
from segmenter.modality import AUTO
from segmenter.picker import ModelPicker, Picked

SAMPLE_WINDOW = 1024  # pixels a side of the window the nuclei scale is estimated on, when the pixel size is unknown


def forward_batch_size(batch_size: int, device: str | None) -> int:
    """Tiles per forward pass: the job's batch on a GPU, one on a CPU, where a batch of 8 tiles of 512²
    measured 1.7× slower than the same tiles one by one (its activations leave the caches; BENCHMARKS.md).
    The job still reads, segments and merges tiles in batches."""
    return batch_size if segmenter.resolve_device(device).type == "cuda" else 1


def load_models(config: JobConfig, resolve: Callable[[str], Path] = segmenter.model_path) -> ModelPicker:
    """The picker of each image's model (the named one, or per image for `auto`); CysegError naming the
    model when it cannot be used. `resolve`: the checkpoint file of a model name (the job's also fetches
    `job:<id>`, `cyseg.job.models.resolve_model`)."""
    try:
        spec = config.model if config.model == AUTO else str(resolve(config.model))
        options = ({} if config.threshold is None else {"threshold": config.threshold}) | \
            ({"tta": True} if config.test_time_augmentation else {})
        return ModelPicker(spec, device=config.device, backend=config.backend,
                           batch_size=forward_batch_size(config.batch_size, config.device), **options)
    except (OSError, ValueError) as error:
        raise CysegError(f"cannot load model '{config.model}': {error}") from error


def model_digest(name: str) -> str:
    """A short digest of a model's file (part of the result key: other weights, other objects)."""
    return hashlib.sha256(segmenter.model_path(name).read_bytes()).hexdigest()[:16]


def sample_window(source: TileSource, tissue: TissueMask, size: int = SAMPLE_WINDOW) -> np.ndarray:
    """A window of the level with tissue, the one nearest the centre (for estimating the nuclei scale)."""
    width, height = min(size, source.width), min(size, source.height)
    corners = [(x, y) for y in range(0, source.height - height + 1, height)
               for x in range(0, source.width - width + 1, width)]
    with_tissue = [c for c in corners if tissue.covers(c[0], c[1], width, height)] or corners
    cx, cy = (source.width - width) / 2, (source.height - height) / 2
    x, y = min(with_tissue, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)
    return source.read(x, y, width, height)


def pick_for_slide(models: ModelPicker, source: TileSource, tissue: TissueMask, thumbnail: np.ndarray,
                   full_pixel_size_um: float | None = None) -> Picked:
    """The model of one slide: for `auto`, from its thumbnail; at its pixel size (`full_pixel_size_um`, else
    the file's own, times the zoom level's factor), or estimated on a window of tissue when neither says."""
    full = full_pixel_size_um or source.full_pixel_size_um
    pixel_size = None if full is None else full * source.factor
    sample = thumbnail if pixel_size is not None else sample_window(source, tissue)
    return models.pick(sample, pixel_size, overview=thumbnail)
