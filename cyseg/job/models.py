"""The model a job's `model` parameter names, as a checkpoint file for `cyseg.pipeline.models.load_models`:
a shipped model, a checkpoint file, or `job:<id>`, the checkpoint attached to an earlier job (a train or
improve job), downloaded once into a local cache."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cytomine.models import AttachedFileCollection, Job

import segmenter
from cyseg.cytomine.connection import call
from cyseg.errors import CysegError
from cyseg.pipeline.config import JOB_MODEL

log = logging.getLogger(__name__)

CACHE_VARIABLE = "CYSEG_MODEL_CACHE"  # where models attached to jobs are kept (default ~/.cache/cyseg/models)
CHECKPOINT_SUFFIX = ".pt"


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
