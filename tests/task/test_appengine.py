"""The local App Engine end to end: every route it implements, each request and response checked
against the App Engine's OpenAPI spec, through a task's whole life on a slide with known nuclei."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import yaml
from scipy.spatial import cKDTree
from shapely.geometry import shape

from cyseg.demo_slide import DemoSlide
from cyseg.server.runner import Endpoint
from cyseg.task.descriptor import DESCRIPTOR_PATH, load_descriptor
from .conftest import SLIDE_NAME
from .openapi import CheckedClient
from .test_qupath import assert_qupath_feature

TOLERANCE_PX = 3.0
OWN = load_descriptor()
NS, VERSION = OWN["namespace"], OWN["version"]


def bundle(version: str | None = None, descriptor: bytes | None = None) -> bytes:
    """A task bundle zip: descriptor.yml (its version changed when given) and a stand-in image tar."""
    text = DESCRIPTOR_PATH.read_bytes() if descriptor is None else descriptor
    if version is not None:
        spec = yaml.safe_load(text)
        spec["version"] = version
        spec["configuration"]["image"]["file"] = f"/{spec['namespace']}-{version}.tar"
        text = yaml.safe_dump(spec).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("descriptor.yml", text)
        archive.writestr(f"{NS}-{version or VERSION}.tar", b"")
    return buffer.getvalue()


def centres(features: list[dict]) -> np.ndarray:
    return np.array([shape(f["geometry"]).centroid.coords[0] for f in features]).reshape(-1, 2)


def matched(found: np.ndarray, expected: np.ndarray) -> int:
    """How many expected positions have a found object within TOLERANCE_PX (each object counted once)."""
    if not len(found):
        return 0
    distance, nearest = cKDTree(found).query(expected)
    return len({n for d, n in zip(distance, nearest) if d < TOLERANCE_PX})


@pytest.fixture(scope="module")
def finished(engine: CheckedClient, server: Endpoint) -> dict:
    """A run of cyseg's task on the demo slide (an image of the server's, by id), provisioned one
    input at a time and in a batch, started and finished."""
    run = engine("POST", f"/tasks/{NS}/{VERSION}/runs").json()
    assert run["state"] == "CREATED"
    engine("PUT", f"/task-runs/{run['id']}/input-provisions/threshold", json={"param_name": "threshold", "value": 0.5})
    assert engine("GET", f"/task-runs/{run['id']}").json()["state"] == "CREATED"  # the image is missing
    engine("POST", f"/task-runs/{run['id']}/state-actions", expect=403, json={"desired": "running"})
    provided = engine("PUT", f"/task-runs/{run['id']}/input-provisions/image",
                      json={"param_name": "image", "value": server.images[SLIDE_NAME]}).json()
    assert provided == {"param_name": "image", "value": server.images[SLIDE_NAME], "task_run_id": run["id"]}
    engine("PUT", f"/task-runs/{run['id']}/input-provisions",
           json=[{"param_name": "min_area", "value": 50.0}, {"param_name": "model", "value": "default"}])
    assert engine("GET", f"/task-runs/{run['id']}").json()["state"] == "PROVISIONED"
    started = engine("POST", f"/task-runs/{run['id']}/state-actions", json={"desired": "running"}).json()
    assert started["status"] == "success" and started["resource"]["state"] in ("QUEUED", "RUNNING")
    done = engine.wait(run["id"])
    assert done["state"] == "FINISHED", done
    return done


def test_tasks_are_listed_and_described(engine: CheckedClient) -> None:
    tasks = engine("GET", "/tasks").json()
    own = next(t for t in tasks if (t["namespace"], t["version"]) == (NS, VERSION))
    assert engine("GET", f"/tasks/{own['id']}").json() == own
    assert engine("GET", f"/tasks/{NS}/{VERSION}").json() == own
    for path in (f"/tasks/{own['id']}/descriptor.yml", f"/tasks/{NS}/{VERSION}/descriptor.yml"):
        assert yaml.safe_load(engine("GET", path).content) == OWN
    engine("GET", "/tasks/00000000-0000-0000-0000-000000000000", expect=404)


def test_a_bundle_uploads_once_and_runs(engine: CheckedClient) -> None:
    task = engine("POST", "/tasks", files={"task": ("bundle.zip", bundle("0.1.0-upload"))}).json()
    assert (task["namespace"], task["version"]) == (NS, "0.1.0-upload")
    engine("POST", "/tasks", expect=409, files={"task": ("bundle.zip", bundle("0.1.0-upload"))})
    engine("POST", "/tasks", expect=400, files={"task": ("bundle.zip", b"not a zip")})
    broken = yaml.safe_load(DESCRIPTOR_PATH.read_text())
    del broken["authors"]
    error = engine("POST", "/tasks", expect=400,
                   files={"task": ("bundle.zip", bundle("0.1.0-broken", yaml.safe_dump(broken).encode()))}).json()
    assert "authors" in error["message"] and error["errorCode"].startswith("APPE-")
    run = engine("POST", f"/tasks/{task['id']}/runs").json()
    assert run["task"] == task and run["state"] == "CREATED"


def test_nuclei_match_the_known_nuclei_in_place(finished: dict, engine: CheckedClient, slide: DemoSlide) -> None:
    outputs = {o["param_name"]: o for o in engine("GET", f"/task-runs/{finished['id']}/outputs").json()}
    nuclei = outputs["nuclei"]["value"]
    truth = np.array([(n.x, n.y) for n in slide.nuclei])
    found = centres(nuclei)
    assert outputs["count"]["value"] == len(nuclei)
    for feature in nuclei:
        assert_qupath_feature(feature)
    assert abs(len(nuclei) - len(truth)) <= 0.03 * len(truth)
    assert matched(found, truth) >= 0.97 * len(truth)
    # orientation: the dense cluster is top-left, the right third is empty (a flip or mirror cannot match)
    assert ((found[:, 0] < 1024 / 3) & (found[:, 1] < 768 / 3)).sum() > len(found) / 2
    assert not (found[:, 0] > 2 * 1024 / 3).any()
    assert len(outputs["scores"]["value"]) == len(nuclei) and all(0 <= s <= 1 for s in outputs["scores"]["value"])
    assert set(outputs["classes"]["value"]) == {"nucleus"}
    assert json.loads(outputs["summary"]["value"])["count"] == len(nuclei)
    assert outputs["blurry_regions"]["value"] == []  # the default model is not focus-gated


def test_outputs_come_each_and_zipped(finished: dict, engine: CheckedClient) -> None:
    run_id = finished["id"]
    count = engine("GET", f"/task-runs/{run_id}/outputs/count/file")
    assert count.headers["content-type"].startswith("text/plain")
    with zipfile.ZipFile(io.BytesIO(engine("GET", f"/task-runs/{run_id}/outputs.zip").content)) as archive:
        names = set(archive.namelist())
        assert archive.read("count").decode() == count.text
        assert yaml.safe_load(archive.read("nuclei/array.yml")) == {"size": int(count.text)}
    assert {"count", "summary", "nuclei/array.yml", "nuclei/0", "scores/0", "classes/0", "blurry_regions/array.yml"} <= names
    inputs = {i["param_name"]: i for i in engine("GET", f"/task-runs/{run_id}/inputs").json()}
    assert inputs["threshold"]["value"] == 0.5 and inputs["image"]["type"] == "image" and "value" not in inputs["image"]
    assert engine("GET", f"/task-runs/{run_id}/inputs/threshold/file").text == "0.5"
    assert engine("GET", f"/task-runs/{run_id}/inputs/image/file").headers["content-type"] == "image/tiff"
    with zipfile.ZipFile(io.BytesIO(engine("GET", f"/task-runs/{run_id}/inputs.zip").content)) as archive:
        assert {"image", "threshold", "min_area", "model"} == set(archive.namelist())
    engine("GET", f"/task-runs/{run_id}/outputs/nuclei/file", expect=404)  # an array is a folder


def test_unknown_runs_and_unfinished_outputs_are_refused(engine: CheckedClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for method, path in (("GET", f"/task-runs/{missing}"), ("GET", f"/task-runs/{missing}/outputs"),
                         ("GET", f"/task-runs/{missing}/outputs.zip"), ("GET", f"/task-runs/{missing}/inputs")):
        assert engine(method, path, expect=404).json()["errorCode"] == "APPE-run-not-found"
    run = engine("POST", f"/tasks/{NS}/{VERSION}/runs").json()
    engine("GET", f"/task-runs/{run['id']}/outputs", expect=403)
    engine("GET", f"/task-runs/{run['id']}/outputs.zip", expect=400)
    error = engine("PUT", f"/task-runs/{run['id']}/input-provisions/threshold", expect=400,
                   json={"param_name": "threshold", "value": "abc"}).json()
    assert error["details"] == {"param_name": "threshold", "description": "'abc' is not a number"}


def test_requests_need_the_admins_key(server: Endpoint) -> None:
    import requests
    response = requests.get(f"{server.host}/app-engine/v1/tasks", timeout=10)
    assert response.status_code == 401 and "Bearer" in response.json()["message"]
    response = requests.get(f"{server.host}/app-engine/v1/tasks", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert response.status_code == 401


def test_the_web_page_shows_task_runs(finished: dict, server: Endpoint) -> None:
    import requests
    page = requests.get(f"{server.host}/", timeout=30).text
    assert "Task runs (App Engine)" in page and finished["id"] in page and "FINISHED" in page
