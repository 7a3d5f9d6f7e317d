"""task/descriptor.yml follows the App Engine's schema and offers what the job does."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import segmenter
from cyseg.errors import CysegError
from cyseg.pipeline.config import JobConfig
from cyseg.task.descriptor import DESCRIPTOR_PATH, SCHEMA_PATH, parse_descriptor, type_spec
from cyseg.task.run import CONFIG_INPUTS
from segmenter.checkpoint import Checkpoint

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "cytomine-app-engine"


def descriptor() -> dict:
    return yaml.safe_load(DESCRIPTOR_PATH.read_text())


def test_descriptor_is_valid_against_task_v0() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    jsonschema.Draft201909Validator(schema, format_checker=jsonschema.FormatChecker()).validate(descriptor())


def test_schema_is_the_reference_copy() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"no reference folder at {REFERENCE}")
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads((REFERENCE / "task.v0.json").read_text())


def test_a_descriptor_breaking_the_schema_is_refused_naming_the_place() -> None:
    broken = descriptor()
    broken["inputs"]["threshold"]["type"] = {"id": "number", "gt": "zero"}
    with pytest.raises(CysegError, match="inputs/threshold"):
        parse_descriptor(yaml.safe_dump(broken))
    with pytest.raises(CysegError, match="not valid YAML"):
        parse_descriptor("inputs: [")


def test_image_is_any_size_and_the_outputs_are_there() -> None:
    spec = descriptor()
    image = type_spec(spec["inputs"]["image"])
    assert image["id"] == "image" and "max_width" not in image and "max_height" not in image
    assert spec["configuration"]["image"]["file"] == f"/{spec['namespace']}-{spec['version']}.tar"
    outputs = spec["outputs"]
    assert type_spec(outputs["nuclei"]) == {"id": "array", "subtype": {"id": "geometry"}}
    assert outputs["nuclei"]["dependencies"]["derived_from"] == "inputs/image"
    assert type_spec(outputs["count"])["id"] == "integer"
    assert type_spec(outputs["blurry_regions"])["subtype"] == {"id": "geometry"}
    assert {"scores", "classes", "summary"} <= set(outputs)


def test_defaults_are_the_jobs() -> None:
    inputs = descriptor()["inputs"]
    defaults = {f.name: f.default for f in dataclasses.fields(JobConfig)}
    for name in CONFIG_INPUTS:
        assert inputs[name].get("default") == defaults[name], name  # no default: the job's None
        assert inputs[name]["optional"] is True
    assert inputs["model"]["default"] == "auto"  # the task chooses per image (segmenter.picker)


def test_models_offered_are_shipped_segmenters_and_auto() -> None:
    values = type_spec(descriptor()["inputs"]["model"])["values"]
    assert {"auto", "default", "he"} <= set(values)
    for name in set(values) - {"auto"}:
        assert Checkpoint.load(segmenter.model_path(name)).family in segmenter.FAMILIES, name
