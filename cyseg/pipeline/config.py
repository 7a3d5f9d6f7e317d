"""The job's parameters: one dataclass whose fields are exactly the user inputs of `descriptor.json`
(the task sets those it takes, `cyseg.task.run.job_config`).

Each field names its Cytomine parameter type in its metadata; `tests/job` checks that the
descriptor agrees on every name, type and default. Values arrive as text from the job's command
line (`cyseg.job.lifecycle`) or typed (tests, a parsed command line) and are converted and checked
here, so a bad value of any type fails the job with a message naming the parameter, the value and
what is expected.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Any

from cyseg.errors import CysegError
from segmenter.backend import BACKENDS

# The parameters every Cytomine software receives from the server (set-by-server in the descriptor).
SERVER_PARAMETERS = ("cytomine_host", "cytomine_public_key", "cytomine_private_key", "cytomine_id_project",
                     "cytomine_id_software")
DEVICES = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
JOB_MODEL = re.compile(r"^job:(\d+)$")  # `model=job:<id>`: the checkpoint attached to that job
MODES = ("segment", "dataset", "improve", "train")
# The parameters of the learning modes (dataset, improve, train), which play no part in segmenting.
LEARNING_PARAMETERS = ("mode", "crop_size", "epochs", "steps_per_epoch", "idi_rounds", "validation_share")
# The parameters that decide which tiles a focus-gated model segments, hence its out-of-focus regions.
FOCUS_PARAMETERS = ("cytomine_id_roi_term", "zoom_level", "tile_size", "tile_overlap", "tissue_detection",
                    "cytomine_id_blurry_term")


def _parameter(kind: str, default: Any) -> Any:
    return field(default=default, metadata={"cytomine_type": kind})


@dataclass(frozen=True)
class JobConfig:
    """What the job does (`mode`), on which images, with which model, and how (see descriptor.json for each
    parameter's help)."""

    mode: str = _parameter("String", "segment")
    cytomine_id_images: tuple[int, ...] = _parameter("ListDomain", ())
    cytomine_id_roi_term: int | None = _parameter("Domain", None)
    cytomine_id_result_term: int | None = _parameter("Domain", None)
    cytomine_id_blurry_term: int | None = _parameter("Domain", None)
    model: str = _parameter("String", "auto")
    threshold: float | None = _parameter("Number", None)  # None: each model's own (tuned) threshold
    min_area: float = _parameter("Number", 50.0)
    max_area: float = _parameter("Number", 5000.0)
    tile_size: int = _parameter("Number", 512)
    tile_overlap: int = _parameter("Number", 32)
    batch_size: int = _parameter("Number", 8)
    zoom_level: int = _parameter("Number", 0)
    device: str = _parameter("String", "auto")
    backend: str = _parameter("String", "auto")
    simplify_tolerance: float = _parameter("Number", 1.0)
    tissue_detection: bool = _parameter("Boolean", True)
    test_time_augmentation: bool = _parameter("Boolean", False)
    crop_size: int = _parameter("Number", 256)
    epochs: int = _parameter("Number", 30)
    steps_per_epoch: int = _parameter("Number", 50)
    idi_rounds: int = _parameter("Number", 5)
    validation_share: float = _parameter("Number", 0.15)

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got '{self.mode}'"),
            (self.threshold is None or 0 < self.threshold < 1,
             f"threshold must be between 0 and 1 (exclusive), got {self.threshold}"),
            (self.min_area >= 0, f"min_area must be >= 0, got {self.min_area}"),
            (self.max_area > self.min_area,
             f"max_area must be greater than min_area, got {self.max_area} <= {self.min_area}"),
            (64 <= self.tile_size <= 8192, f"tile_size must be between 64 and 8192 pixels, got {self.tile_size}"),
            (0 <= self.tile_overlap <= self.tile_size // 2,
             f"tile_overlap must be between 0 and half the tile size ({self.tile_size // 2}), got {self.tile_overlap}"),
            (1 <= self.batch_size <= 1024, f"batch_size must be between 1 and 1024, got {self.batch_size}"),
            (0 <= self.zoom_level <= 16, f"zoom_level must be between 0 (full resolution) and 16, got {self.zoom_level}"),
            (bool(DEVICES.match(self.device)), f"device must be auto, cpu, cuda or cuda:N, got '{self.device}'"),
            (self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got '{self.backend}'"),
            (self.simplify_tolerance >= 0, f"simplify_tolerance must be >= 0, got {self.simplify_tolerance}"),
            (bool(self.model.strip()), "model must name a shipped model, a model file or job:<job id>"),
            (not self.model.startswith("job:") or bool(JOB_MODEL.match(self.model)),
             f"model={self.model} must be job:<job id>, e.g. job:123"),
            (32 <= self.crop_size <= 2048 and self.crop_size % 16 == 0,
             f"crop_size must be a multiple of 16 between 32 and 2048 pixels, got {self.crop_size}"),
            (1 <= self.epochs <= 10000, f"epochs must be between 1 and 10000, got {self.epochs}"),
            (1 <= self.steps_per_epoch <= 100000, f"steps_per_epoch must be between 1 and 100000, got {self.steps_per_epoch}"),
            (1 <= self.idi_rounds <= 100, f"idi_rounds must be between 1 and 100, got {self.idi_rounds}"),
            (0 < self.validation_share < 1,
             f"validation_share must be between 0 and 1 (exclusive), got {self.validation_share}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CysegError(f"invalid job parameter: {message}")

    @classmethod
    def parameter_types(cls) -> dict[str, str]:
        """Field name -> Cytomine parameter type."""
        return {f.name: f.metadata["cytomine_type"] for f in dataclasses.fields(cls)}

    @classmethod
    def from_parameters(cls, parameters: Namespace | dict[str, Any]) -> "JobConfig":
        """The config of a job's parsed parameters (unknown keys ignored, missing ones defaulted)."""
        values = vars(parameters) if isinstance(parameters, Namespace) else dict(parameters)
        kwargs = {}
        for f in dataclasses.fields(cls):
            value = values.get(f.name)
            if value is None or value == "":
                continue
            kwargs[f.name] = _convert(f.name, f.metadata["cytomine_type"], f.default, value)
        return cls(**kwargs)

    def result_key(self, model_digest: str) -> str:
        """A short digest of everything that decides which objects a run finds (not how fast)."""
        ignored = ("cytomine_id_images", "model", "batch_size", "device", "backend", "cytomine_id_blurry_term",
                   *LEARNING_PARAMETERS)
        decisive = {name: value for name, value in dataclasses.asdict(self).items() if name not in ignored}
        if not self.test_time_augmentation:  # added later: runs without it keep the keys they had before
            del decisive["test_time_augmentation"]
        return _digest({"model": model_digest, **decisive})

    def focus_key(self, model_digest: str) -> str:
        """A short digest of everything that decides the out-of-focus regions a focus-gated run uploads
        (the blurry term included, unlike `result_key`, which it does not change)."""
        decisive = {name: getattr(self, name) for name in FOCUS_PARAMETERS}
        return _digest({"model": model_digest, **decisive}) + ".focus"


def _digest(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _convert(name: str, kind: str, default: Any, value: Any) -> Any:
    """A parameter value in the field's Python type; CysegError naming the parameter otherwise."""
    try:
        if kind == "ListDomain":
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(int(item) for item in items if str(item).strip())
        if kind == "Domain":
            return int(value)
        if kind == "Boolean":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind == "Number":
            number = float(value)
            if not math.isfinite(number) or (isinstance(default, int) and not number.is_integer()):
                raise ValueError(value)
            return int(number) if isinstance(default, int) else number
        return str(value)
    except (TypeError, ValueError):
        expected = {"ListDomain": "comma-separated ids", "Domain": "an id", "Boolean": "true or false",
                    "Number": "a whole number" if isinstance(default, int) else "a number"}.get(kind, kind)
        raise CysegError(f"invalid job parameter {name}={value!r}: expected {expected}") from None
