"""Task runs through the local App Engine: bad inputs end with a message naming the input, a slide
larger than 4000 x 4000 runs, and the task finds exactly the objects the legacy job finds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from shapely.geometry import shape

from cyseg.demo_slide import DemoSlide
from cyseg.pipeline.results import GEOJSON_NAME
from cyseg.server.runner import Endpoint, LocalServer
from cyseg.synthetic import Nucleus
from cyseg.task.client import run_once
from tests.job.helpers import job_argv
from .conftest import LARGE_NAME, LARGE_SIZE, ROOT, SLIDE_NAME
from .openapi import CheckedClient
from .test_appengine import NS, VERSION, centres, matched

SQUARE = {"type": "Polygon", "coordinates": [[[5000, 5000], [5400, 5000], [5400, 5400], [5000, 5400], [5000, 5000]]]}


def failed_run(engine: CheckedClient, provisions: list[tuple[str, dict]]) -> dict:
    """A run given these (input, request options) provisions, started and waited for."""
    run = engine("POST", f"/tasks/{NS}/{VERSION}/runs").json()
    for name, options in provisions:
        engine("PUT", f"/task-runs/{run['id']}/input-provisions/{name}", **options)
    engine("POST", f"/task-runs/{run['id']}/state-actions", json={"desired": "running"})
    return engine.wait(run["id"])


def test_a_file_that_is_not_an_image_fails_the_run_naming_the_input(engine: CheckedClient) -> None:
    run = failed_run(engine, [("image", {"data": b"these are not pixels", "headers": {"Content-Type": "image/tiff"}})])
    assert run["state"] == "FAILED"
    assert run["message"].startswith("input image: not an image OpenSlide or Pillow can read")


def test_a_region_of_interest_outside_the_image_fails_the_run(engine: CheckedClient, server: Endpoint) -> None:
    run = failed_run(engine, [("image", {"json": {"param_name": "image", "value": server.images[SLIDE_NAME]}}),
                              ("roi", {"json": {"param_name": "roi", "value": SQUARE}})])
    assert run["state"] == "FAILED"
    assert run["message"] == "input roi: (5000, 5000)-(5400, 5400) lies outside the image (0, 0)-(1024, 768)"


def test_a_png_picture_runs_and_its_nuclei_are_in_place(engine: CheckedClient, slide: DemoSlide,
                                                        tmp_path: Path) -> None:
    """A picture arriving as bytes, without its name or extension, is recognised from its content."""
    import openslide
    png = tmp_path / "crop.png"
    with openslide.OpenSlide(slide.path) as opened:
        opened.read_region((0, 0), 0, (400, 300)).convert("RGB").save(png)
    run = engine("POST", f"/tasks/{NS}/{VERSION}/runs").json()
    engine("PUT", f"/task-runs/{run['id']}/input-provisions/image", data=png.read_bytes(),
           headers={"Content-Type": "image/png"})
    engine("POST", f"/task-runs/{run['id']}/state-actions", json={"desired": "running"})
    assert engine.wait(run["id"])["state"] == "FINISHED"
    nuclei = {o["param_name"]: o["value"] for o in engine("GET", f"/task-runs/{run['id']}/outputs").json()}["nuclei"]
    inside = np.array([(n.x, n.y) for n in slide.nuclei if 12 < n.x < 388 and 12 < n.y < 288])
    assert len(inside) > 20 and matched(centres(nuclei), inside) >= 0.95 * len(inside)


def test_missing_or_non_numeric_inputs_are_refused_naming_them(engine: CheckedClient, tmp_path: Path) -> None:
    run = engine("POST", f"/tasks/{NS}/{VERSION}/runs").json()
    refused = engine("POST", f"/task-runs/{run['id']}/state-actions", expect=403, json={"desired": "running"}).json()
    assert "PROVISIONED" in refused["message"] and refused["details"]["resource"]["state"] == "CREATED"
    error = engine("PUT", f"/task-runs/{run['id']}/input-provisions/threshold", expect=400,
                   json={"param_name": "threshold", "value": "abc"}).json()
    assert error["message"] == "input threshold: 'abc' is not a number"
    # the task itself, given such input folders (as a container would be)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "threshold").write_text("abc")
    assert task_failure(inputs, tmp_path / "outputs") == "cyseg task failed: input image: missing (no {}/image)".format(
        inputs)
    (inputs / "image").symlink_to(ROOT / "README.md")
    assert task_failure(inputs, tmp_path / "outputs") == "cyseg task failed: input threshold: 'abc' is not a number"


def test_an_unknown_image_or_a_wrong_value_is_refused_when_provisioned(engine: CheckedClient,
                                                                        server: Endpoint) -> None:
    """Refused with the spec's codes, naming the input, and nothing stored: the run cannot start."""
    run = engine("POST", f"/tasks/{NS}/{VERSION}/runs").json()
    inputs = f"/task-runs/{run['id']}/input-provisions"
    error = engine("PUT", f"{inputs}/image", expect=404, json={"param_name": "image", "value": 987654}).json()
    assert error["errorCode"] == "APPE-task-run-image-not-found"
    assert error["message"] == "input image: image instance 987654 not found"
    error = engine("PUT", f"{inputs}/image", expect=400, data=b"", headers={"Content-Type": "image/tiff"}).json()
    assert error["message"] == "input image: the request body (the image) is empty"
    error = engine("PUT", f"{inputs}/threshold", expect=400, off_spec=True, data=b"abc",
                   headers={"Content-Type": "text/plain"}).json()
    assert error["details"]["param_name"] == "threshold" and "as JSON" in error["message"]
    error = engine("PUT", inputs, expect=400, json=[{"param_name": "image", "value": server.images[SLIDE_NAME]},
                                                    {"param_name": "threshold", "value": "abc"},
                                                    {"param_name": "tile_size", "value": 8}]).json()
    assert [e["details"] for e in error["details"]["errors"]] == [
        {"param_name": "threshold", "description": "'abc' is not a number"},
        {"param_name": "tile_size", "description": "8 must be >= 64"}]
    assert error["message"] == "input threshold: 'abc' is not a number; input tile_size: 8 must be >= 64"
    assert engine("GET", f"/task-runs/{run['id']}/inputs").json() == []  # the batch's image was not kept either
    engine("POST", f"/task-runs/{run['id']}/state-actions", expect=403, json={"desired": "running"})
    assert engine("GET", f"/task-runs/{run['id']}").json()["state"] == "CREATED"


def task_failure(inputs: Path, outputs: Path) -> str:
    """The last line of `python -m cyseg.task` on these folders, which must fail (exit code 1)."""
    done = subprocess.run([sys.executable, "-m", "cyseg.task", "--inputs", str(inputs), "--outputs", str(outputs)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_a_slide_larger_than_4000_pixels_runs_as_a_task(server: Endpoint, large_nuclei: list[Nucleus]) -> None:
    run, outputs = run_once(server.host, server.private_key, server.images[LARGE_NAME])
    assert run["state"] == "FINISHED", run
    summary = json.loads(outputs["summary"])
    assert (summary["width"], summary["height"]) == LARGE_SIZE and max(LARGE_SIZE) > 4000
    assert summary["tiles_with_tissue"] < summary["tiles"] / 10  # empty glass is skipped
    truth = np.array([(n.x, n.y) for n in large_nuclei])
    found = centres(outputs["nuclei"])
    assert matched(found, truth) >= 0.95 * len(truth) and len(found) <= len(truth) + 2
    assert found[:, 1].min() > 3700  # at the bottom: the origin is the top-left


def job_features(run_module: ModuleType, server: Endpoint, image_id: int, slides: Path, out: Path,
                 monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The objects of the legacy job (run.py as Cytomine runs it) with the default model, from its GeoJSON."""
    monkeypatch.setenv("CYSEG_OUTPUT_DIR", str(out))
    monkeypatch.setenv("CYSEG_SLIDE_ROOTS", str(slides))
    assert run_module.main(job_argv(server, "default", cytomine_id_images=image_id)) == 0
    return json.loads((out / GEOJSON_NAME).read_text())["features"]


def assert_same_objects(task_nuclei: list[dict], job: list[dict]) -> None:
    assert len(task_nuclei) == len(job) > 0
    for ours, theirs in zip(task_nuclei, job):
        assert shape(ours["geometry"]).equals(shape(theirs["geometry"]))
        assert ours["properties"]["classification"] == theirs["properties"]["classification"]
        assert ours["properties"]["measurements"] == theirs["properties"]["measurements"]


def test_the_legacy_job_finds_the_same_objects(run_module: ModuleType, server: Endpoint, slide: DemoSlide,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, outputs = run_once(server.host, server.private_key, server.images[SLIDE_NAME])
    assert run["state"] == "FINISHED"
    job = job_features(run_module, server, server.images[SLIDE_NAME], slide.path.parent, tmp_path, monkeypatch)
    assert_same_objects(outputs["nuclei"], job)


def test_a_real_slide_gives_the_legacy_jobs_objects(shared_data: Path, run_module: ModuleType, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    slides = shared_data / "slides"
    name = "CMU-1-Small-Region.svs"
    if not (slides / name).is_file():
        pytest.skip(f"{name} not in {slides}")
    with LocalServer(slides, tmp_path / "server", ROOT / "descriptor.json").in_thread() as server:
        run, outputs = run_once(server.host, server.private_key, server.images[name], model="default")
        assert run["state"] == "FINISHED", run
        job = job_features(run_module, server, server.images[name], slides, tmp_path / "job", monkeypatch)
    assert_same_objects(outputs["nuclei"], job)
