"""The job's learning modes end to end: run.py with the command line Cytomine builds from descriptor.json,
the real client and the embedded server over the annotated slides of conftest.py; what the jobs attach,
and `model=job:<id>` for the model a train job attached."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tifffile
from cytomine.models import AttachedFileCollection, Job, JobCollection
from PIL import Image

import segmenter
from cyseg.errors import CysegError
from cyseg.job.descriptor import command_line, load_descriptor
from cyseg.job.models import CACHE_VARIABLE, resolve_model
from cyseg.server.descriptor import read_descriptor
from .conftest import Project

ROOT = Path(__file__).resolve().parents[2]
CROP = 64
TINY = dict(crop_size=CROP, epochs=1, steps_per_epoch=2, batch_size=2, device="cpu")


@dataclass
class Outcome:
    exit_code: int
    job: Job
    downloads: Path

    def files(self) -> dict[str, bytes]:
        """The job's attached files by name, downloaded."""
        found = {}
        for attached in AttachedFileCollection(self.job).fetch():
            path = self.downloads / str(attached.id)
            assert attached.download(destination=str(path), override=True)
            found[attached.filename] = path.read_bytes()
        return found


@pytest.fixture(scope="module")
def software_id(project: Project) -> int:
    """This software registered from descriptor.json, as Cytomine has it."""
    spec = read_descriptor(ROOT / "descriptor.json")
    return project.server.store.ensure_software(spec.name, spec.version, spec.digest, spec.parameters).id


@pytest.fixture
def run_job(project: Project, software_id: int, run_module: ModuleType, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., Outcome]:
    """`run_job(**parameters)`: run.py as Cytomine runs it, then the job as the server has it."""
    monkeypatch.setenv("CYSEG_OUTPUT_DIR", str(tmp_path / "results"))
    endpoint = project.endpoint

    def run(**parameters: Any) -> Outcome:
        values = {"cytomine_host": endpoint.host, "cytomine_public_key": endpoint.public_key,
                  "cytomine_private_key": endpoint.private_key, "cytomine_id_project": endpoint.project_id,
                  "cytomine_id_software": software_id, "cytomine_id_result_term": endpoint.terms["Nucleus"],
                  **parameters}
        argv = command_line(load_descriptor(), values)
        exit_code = run_module.main(argv[2:])
        project.connect()
        jobs = sorted(JobCollection(project=endpoint.project_id).fetch(), key=lambda j: j.id)
        downloads = tmp_path / "downloads"
        downloads.mkdir(exist_ok=True)
        return Outcome(exit_code, Job().fetch(jobs[-1].id), downloads)

    return run


def images_of(project: Project, *names: str) -> tuple[int, ...]:
    return tuple(project.slides[name].id for name in names)


def unzip(data: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(folder)
    return folder


def test_dataset_job_attaches_the_crops_and_masks(run_job: Callable[..., Outcome], project: Project,
                                                  tmp_path: Path) -> None:
    a = project.slides["a.tif"]
    outcome = run_job(mode="dataset", cytomine_id_images=images_of(project, "a.tif"), crop_size=CROP)
    assert outcome.exit_code == 0 and outcome.job.status == Job.TERMINATED and outcome.job.progress == 100
    files = outcome.files()
    assert sorted(files) == ["cyseg-dataset-manifest.json", "cyseg-dataset.zip"]
    data = unzip(files["cyseg-dataset.zip"], tmp_path / "data")
    manifest = json.loads((data / "manifest.json").read_text())
    assert json.loads(files["cyseg-dataset-manifest.json"]) == manifest
    assert manifest["counts"]["annotations"] == len(a.annotated) and manifest["crops"]
    annotated = np.isin(a.labels, list(a.annotated.values()))
    for crop in manifest["crops"]:
        box = np.s_[crop["y"]:crop["y"] + CROP, crop["x"]:crop["x"] + CROP]
        with Image.open(data / "train" / "images" / f"{crop['name']}.png") as picture:
            assert np.array_equal(np.asarray(picture.convert("RGB")), a.pixels[box])
        labels = tifffile.imread(data / "train" / "labels" / f"{crop['name']}.tif")
        assert np.array_equal(labels > 0, annotated[box])


def test_train_job_attaches_a_model_that_job_id_names(run_job: Callable[..., Outcome], project: Project,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = run_job(mode="train", cytomine_id_images=images_of(project, "a.tif"), **TINY)
    assert outcome.exit_code == 0 and outcome.job.status == Job.TERMINATED
    files = outcome.files()
    assert sorted(files) == ["cyseg-dataset-manifest.json", "cyseg-model.history.json", "cyseg-model.pt"]
    assert [epoch["epoch"] for epoch in json.loads(files["cyseg-model.history.json"])] == [1]

    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    path = resolve_model(f"job:{outcome.job.id}")
    assert path.read_bytes() == files["cyseg-model.pt"] and path.is_relative_to(tmp_path / "cache")
    assert resolve_model(f"job:{outcome.job.id}") == path  # cached
    model = segmenter.load(path, device="cpu")
    crop = project.slides["a.tif"].pixels[:CROP, :CROP]
    assert model.segment(crop).shape == (CROP, CROP)
    assert model.checkpoint.training["config"]["crop"] == CROP

    segmented = run_job(mode="segment", model=f"job:{outcome.job.id}", cytomine_id_images=images_of(project, "a.tif"),
                        tile_size=CROP * 2, device="cpu")
    assert segmented.exit_code == 0 and segmented.job.status == Job.TERMINATED
    assert "cyseg-objects.geojson" in segmented.files()


def test_improve_job_attaches_the_improved_masks_metrics_and_model(run_job: Callable[..., Outcome],
                                                                   project: Project, tmp_path: Path) -> None:
    outcome = run_job(mode="improve", cytomine_id_images=images_of(project, "a.tif"), idi_rounds=1, **TINY)
    assert outcome.exit_code == 0 and outcome.job.status == Job.TERMINATED
    files = outcome.files()
    assert sorted(files) == ["cyseg-dataset-manifest.json", "cyseg-idi-rounds.csv", "cyseg-idi.json",
                             "cyseg-improved-masks.zip", "cyseg-model.history.json", "cyseg-model.pt"]
    summary = json.loads(files["cyseg-idi.json"])
    assert summary["final_round"] == 1 and summary["config"]["rounds"] == 1
    rows = list(csv.DictReader(io.StringIO(files["cyseg-idi-rounds.csv"].decode())))
    assert [int(r["round"]) for r in rows] == [0, 1]
    assert [int(r["objects"]) for r in rows] == [r["masks"]["objects"] for r in summary["rounds"]]
    masks = unzip(files["cyseg-improved-masks.zip"], tmp_path / "masks")
    manifest = json.loads(files["cyseg-dataset-manifest.json"])
    assert sorted(p.stem for p in (masks / "labels").iterdir()) == sorted(c["name"] for c in manifest["crops"])
    a = project.slides["a.tif"]
    annotated = np.isin(a.labels, list(a.annotated.values()))
    for crop in manifest["crops"]:  # the improved masks keep every annotated nucleus
        labels = tifffile.imread(masks / "labels" / f"{crop['name']}.tif")
        assert (labels[annotated[crop["y"]:crop["y"] + CROP, crop["x"]:crop["x"] + CROP]] > 0).all()
    model = tmp_path / "model.pt"
    model.write_bytes(files["cyseg-model.pt"])
    assert segmenter.load(model, device="cpu").checkpoint.metrics["val_f1_mean"] >= 0


@pytest.mark.parametrize("parameters, message", [
    (dict(mode="train", cytomine_id_result_term=999999), "term '999999' is not a term of project"),
    (dict(mode="dataset", image="empty.tif"), "no annotations match the selection"),
    (dict(mode="improve", term="ROI"), "no annotations match the selection"),
    (dict(mode="train", image="d.tif", crop_size=256), "only 1 training crop: training needs at least 2"),
    (dict(mode="learn"), "mode must be one of segment, dataset, improve, train, got 'learn'"),
])
def test_bad_input_fails_the_job_with_a_clear_message(run_job: Callable[..., Outcome], project: Project,
                                                      parameters: dict, message: str) -> None:
    if "image" in parameters:
        parameters["cytomine_id_images"] = images_of(project, parameters.pop("image"))
    if "term" in parameters:
        parameters["cytomine_id_result_term"] = project.endpoint.terms[parameters.pop("term")]
    outcome = run_job(**{**TINY, **parameters})
    assert outcome.exit_code == 1 and outcome.job.status == Job.FAILED
    assert message in outcome.job.statusComment
    assert not outcome.files()


def test_model_names_resolve_or_fail_clearly(run_job: Callable[..., Outcome], project: Project) -> None:
    project.connect()
    assert resolve_model("default") == segmenter.model_path("default")
    with pytest.raises(CysegError, match="fetching job 999999 \\(model job:999999\\) failed"):
        resolve_model("job:999999")
    outcome = run_job(mode="dataset", cytomine_id_images=images_of(project, "d.tif"), crop_size=CROP)
    assert outcome.exit_code == 0
    with pytest.raises(CysegError, match=rf"job {outcome.job.id} has no model file \(\.pt\) attached \(its files: "
                                         r"cyseg-dataset-manifest.json, cyseg-dataset.zip\)"):
        resolve_model(f"job:{outcome.job.id}")
