"""The model a job's `model` parameter names: a shipped model, a checkpoint file, `job:<id>`, the
checkpoint attached to an earlier job (a train or improve job), downloaded once into a local cache, or
`auto`, a shipped model per slide (`segmenter.picker`), run at the slide's pixel size."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from cytomine.models import AttachedFileCollection, Job

import segmenter
from cyseg.errors import CysegError
from cyseg.job.config import JOB_MODEL, JobConfig
from cyseg.job.connection import call
from cyseg.job.source import TileSource
from cyseg.job.tissue import TissueMask
from segmenter.modality import AUTO
from segmenter.picker import ModelPicker, Picked

log = logging.getLogger(__name__)

CACHE_VARIABLE = "CYSEG_MODEL_CACHE"  # where models attached to jobs are kept (default ~/.cache/cyseg/models)
CHECKPOINT_SUFFIX = ".pt"
SAMPLE_WINDOW = 1024  # pixels a side of the window the nuclei scale is estimated on, when the pixel size is unknown


def cache_dir() -> Path:
    """The folder of downloaded job models."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cyseg" / "models"


def resolve_model(spec: str) -> Path:
    """The checkpoint file of a `model` parameter: a shipped model name, a path, or `job:<id>` (the `.pt`
    file attached to that job, fetched through the connected client). FileNotFoundError for an unknown
    name or path; CysegError when the job or its checkpoint cannot be had."""
    match = JOB_MODEL.match(spec)
    if match is None:
        return segmenter.model_path(spec)
    return job_model(int(match.group(1)))


def job_model(job_id: int) -> Path:
    """The checkpoint attached to job `job_id`, downloaded unless the cache has it already (an attached
    file never changes, so its id names its content)."""
    job = call(f"fetching job {job_id} (model job:{job_id})", lambda: Job().fetch(job_id))
    attached = _checkpoint(job, list(call(f"listing the files attached to job {job_id}",
                                          lambda: AttachedFileCollection(job).fetch())))
    path = cache_dir() / f"job-{job_id}" / f"{attached.id}-{attached.filename}"
    if path.is_file():
        log.info("model job:%s: %s (cached)", job_id, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    call(f"downloading {attached.filename} of job {job_id}",
         lambda: attached.download(destination=str(partial), override=True))
    os.replace(partial, path)
    log.info("model job:%s: downloaded %s to %s", job_id, attached.filename, path)
    return path


def _checkpoint(job: Any, files: list[Any]) -> Any:
    """The one checkpoint among a job's attached files; CysegError naming them otherwise."""
    checkpoints = [f for f in files if str(f.filename).endswith(CHECKPOINT_SUFFIX)]
    if len(checkpoints) == 1:
        return checkpoints[0]
    names = ", ".join(sorted(str(f.filename) for f in files)) or "none"
    problem = "no model file (.pt)" if not checkpoints else "several model files (.pt)"
    raise CysegError(f"model job:{job.id}: job {job.id} has {problem} attached (its files: {names}); "
                     f"name a train or improve job that succeeded")


def forward_batch_size(batch_size: int, device: str | None) -> int:
    """Tiles per forward pass: the job's batch on a GPU, one on a CPU, where a batch of 8 tiles of 512²
    measured 1.7× slower than the same tiles one by one (its activations leave the caches; BENCHMARKS.md).
    The job still reads, segments and merges tiles in batches."""
    return batch_size if segmenter.resolve_device(device).type == "cuda" else 1


def load_models(config: JobConfig) -> ModelPicker:
    """The picker of each image's model (the named one, or per image for `auto`); CysegError naming the
    model when it cannot be used."""
    try:
        spec = config.model if config.model == AUTO else str(resolve_model(config.model))
        return ModelPicker(spec, device=config.device, threshold=config.threshold,
                           batch_size=forward_batch_size(config.batch_size, config.device))
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
