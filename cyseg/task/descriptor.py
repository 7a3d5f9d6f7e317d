"""The task's descriptor (`task/descriptor.yml`), read and checked against the App Engine's schema
(`task/task.v0.json`, a copy of Cytomine's)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cyseg.errors import CysegError

TASK_DIR = Path(__file__).resolve().parents[2] / "task"
DESCRIPTOR_PATH = TASK_DIR / "descriptor.yml"
SCHEMA_PATH = TASK_DIR / "task.v0.json"


def parse_descriptor(text: str | bytes) -> dict[str, Any]:
    """A descriptor's YAML checked against task.v0.json; CysegError naming the first problem."""
    try:
        descriptor = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CysegError(f"descriptor.yml is not valid YAML: {error}") from error
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(schema, format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(descriptor))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        raise CysegError(f"descriptor.yml does not follow task.v0 at {where}: {error.message}")
    return descriptor


def load_descriptor(path: Path = DESCRIPTOR_PATH) -> dict[str, Any]:
    try:
        return parse_descriptor(path.read_bytes())
    except OSError as error:
        raise CysegError(f"cannot read the task descriptor {path}: {error}") from error


def type_id(spec: dict[str, Any]) -> str:
    """The type identifier of a parameter (`type: number` and `type: {id: number}` alike)."""
    kind = spec["type"]
    return kind if isinstance(kind, str) else kind["id"]


def type_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A parameter's type in its long form ({"id": ..., constraints...})."""
    kind = spec["type"]
    return {"id": kind} if isinstance(kind, str) else kind
