"""The job end to end: the real client and run.py against the embedded server, on a synthetic slide
whose nuclei are known. The layout is asymmetric (dense top-left cluster, empty right third), so a
flipped or mirrored result cannot match."""
from __future__ import annotations

import csv
import socket
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
import shapely
from cytomine import Cytomine
from cytomine.models import Annotation, User
from scipy.spatial import cKDTree
from shapely.geometry import Point, Polygon

import segmenter
from cyseg.coordinates import from_cytomine, to_cytomine
from cyseg.cytomine import connection, source
from cyseg.demo_slide import DemoSlide
from cyseg.job import upload
from cyseg.pipeline.results import GEOJSON_NAME, SUMMARY_NAME, overlay_name
from cyseg.server.runner import Endpoint, LocalServer
from .helpers import SLIDE_NAME, SLIDE_SIZE, RunJob, connect, image_id, job_argv

SUCCESS, FAILED = 3, 4
TOLERANCE_PX = 1.5


def centres(annotations: list, image_height: int = SLIDE_SIZE[1]) -> np.ndarray:
    """Annotation centroids in image coordinates (origin top-left)."""
    return np.array([from_cytomine(shapely.from_wkt(a.location), image_height).centroid.coords[0]
                     for a in annotations]).reshape(-1, 2)


def truth_centres(slide: DemoSlide) -> np.ndarray:
    return np.array([(n.x, n.y) for n in slide.nuclei])


def assert_matches(found: np.ndarray, expected: np.ndarray) -> None:
    """One found object per expected nucleus, each within TOLERANCE_PX of it."""
    assert len(found) == len(expected)
    distance, nearest = cKDTree(found).query(expected)
    assert distance.max() < TOLERANCE_PX
    assert len(set(nearest.tolist())) == len(expected)


def summary(results: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV summary."""
    with (results / SUMMARY_NAME).open() as stream:
        return list(csv.DictReader(stream))


def test_whole_slide_annotations_match_the_nuclei(run_job: RunJob, server: Endpoint, slide: DemoSlide,
                                                  tmp_path: Path) -> None:
    outcome = run_job(tile_size=256)
    assert outcome.exit_code == 0
    assert outcome.job.status == SUCCESS and outcome.job.progress == 100
    annotations = outcome.annotations()
    assert all(a.image == image_id(server) and a.term == [server.terms["Nucleus"]] for a in annotations)
    found = centres(annotations)
    assert_matches(found, truth_centres(slide))
    # orientation: the dense cluster is in the top-left third, nothing is in the right third
    top_left = (found[:, 0] < SLIDE_SIZE[0] / 3) & (found[:, 1] < SLIDE_SIZE[1] / 3)
    assert top_left.sum() > len(found) / 2
    assert not (found[:, 0] > 2 * SLIDE_SIZE[0] / 3).any()
    assert outcome.attached() == sorted([GEOJSON_NAME, SUMMARY_NAME, overlay_name(image_id(server))])
    rows = summary(tmp_path / "results")
    assert [(r["image_name"], r["region"], int(r["objects"]), int(r["uploaded"])) for r in rows] == [
        (SLIDE_NAME, "whole image", len(slide.nuclei), len(slide.nuclei))]
    assert int(rows[0]["tiles_with_tissue"]) < int(rows[0]["tiles"])  # the empty right third was skipped


def test_local_slide_file_gives_the_same_result(run_job: RunJob, slide: DemoSlide,
                                                monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CYSEG_SLIDE_ROOTS", str(slide.path.parent))
    with caplog.at_level("INFO", logger="cyseg.cytomine.source"):
        outcome = run_job(tissue_detection=False, tile_size=256)
    assert outcome.exit_code == 0
    assert f"slide file {slide.path}" in caplog.text
    assert_matches(centres(outcome.annotations()), truth_centres(slide))


def test_zoom_level_one_finds_the_nuclei_at_full_resolution_coordinates(run_job: RunJob, slide: DemoSlide) -> None:
    outcome = run_job(zoom_level=1, min_area=20)
    assert outcome.exit_code == 0
    found = centres(outcome.annotations())
    distance, _ = cKDTree(found).query(truth_centres(slide))
    assert len(found) == len(slide.nuclei) and np.median(distance) < 2.0


def test_roi_mode_only_finds_cells_inside_the_roi(run_job: RunJob, server: Endpoint, slide: DemoSlide) -> None:
    roi = Polygon([(40, 300), (650, 330), (60, 740)])  # an asymmetric triangle, image coordinates
    connect(server)
    saved = Annotation(location=to_cytomine(roi, SLIDE_SIZE[1]).wkt, id_image=image_id(server),
                       id_project=server.project_id, id_terms=[server.terms["ROI"]]).save()
    assert saved
    outcome = run_job(cytomine_id_roi_term=server.terms["ROI"])
    assert outcome.exit_code == 0
    found = centres(outcome.annotations())
    assert all(roi.contains(Point(x, y)) for x, y in found)
    inside = np.array([c for c in truth_centres(slide) if roi.buffer(-TOLERANCE_PX).contains(Point(*c))])
    near_edge = np.array([c for c in truth_centres(slide) if roi.buffer(TOLERANCE_PX).contains(Point(*c))])
    assert len(inside) > 10 and len(inside) <= len(found) <= len(near_edge)
    assert cKDTree(found).query(inside)[0].max() < TOLERANCE_PX


def test_roi_mode_without_rois_finds_nothing(run_job: RunJob, server: Endpoint) -> None:
    outcome = run_job(cytomine_id_roi_term=server.terms["ROI"])
    assert outcome.exit_code == 0 and outcome.job.status == SUCCESS
    assert outcome.annotations() == []


def test_running_again_adds_no_duplicates(run_job: RunJob, slide: DemoSlide, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "LISTING_PAGE", 7)  # earlier annotations are read in many pages
    first = run_job()
    second = run_job()
    assert first.exit_code == second.exit_code == 0 and first.job.id != second.job.id
    assert len(first.annotations()) == len(slide.nuclei)
    assert second.annotations() == []
    row = summary(tmp_path / "results")[0]
    assert (int(row["uploaded"]), int(row["duplicates"])) == (0, len(slide.nuclei))


def test_other_settings_are_a_new_result(run_job: RunJob, slide: DemoSlide) -> None:
    run_job()
    other = run_job(simplify_tolerance=0.5)
    assert len(other.annotations()) == len(slide.nuclei)


def test_upload_failing_part_way_keeps_results_and_resumes_without_duplicates(
        run_job: RunJob, server: Endpoint, slide: DemoSlide, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "CHUNK_SIZE", 10)
    monkeypatch.setattr(upload, "BACKOFF_S", 0.0)
    real_post = Cytomine.post
    calls = {"n": 0}

    def flaky_post(self, uri, *args, **kwargs):
        if uri == "annotation.json":
            calls["n"] += 1
            if calls["n"] > 3:
                raise requests.ConnectionError("connection reset by peer")
        return real_post(self, uri, *args, **kwargs)

    monkeypatch.setattr(Cytomine, "post", flaky_post)
    failed = run_job()
    assert failed.exit_code == 1 and failed.job.status == FAILED
    assert "uploading 10 annotations to image" in failed.job.statusComment
    assert "connection failed" in failed.job.statusComment
    assert len(failed.annotations()) == 30
    assert GEOJSON_NAME in failed.attached() and SUMMARY_NAME in failed.attached()
    row = summary(tmp_path / "results")[0]
    assert (row["status"], int(row["uploaded"]), int(row["not_uploaded"])) == (
        "upload failed", 30, len(slide.nuclei) - 30)

    monkeypatch.setattr(Cytomine, "post", real_post)
    user = User().fetch(failed.job.userJob)  # resuming = running again with the job's own keys
    resumed = run_job(keys=(user.publicKey, user.privateKey))
    assert resumed.exit_code == 0 and resumed.job.id == failed.job.id and resumed.job.status == SUCCESS
    assert_matches(centres(resumed.annotations()), truth_centres(slide))


def test_lost_answer_to_an_upload_is_not_uploaded_twice(run_job: RunJob, slide: DemoSlide,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "BACKOFF_S", 0.0)
    real_post = Cytomine.post
    calls = {"n": 0}

    def post_then_lose_the_answer(self, uri, *args, **kwargs):
        result = real_post(self, uri, *args, **kwargs)
        if uri == "annotation.json":
            calls["n"] += 1
            if calls["n"] == 1:
                raise requests.ReadTimeout("read timed out")
        return result

    monkeypatch.setattr(Cytomine, "post", post_then_lose_the_answer)
    outcome = run_job()
    assert outcome.exit_code == 0
    assert_matches(centres(outcome.annotations()), truth_centres(slide))


@pytest.mark.parametrize(("parameters", "message"), [
    ({"cytomine_id_images": "999999"}, "image(s) 999999 not in project"),
    ({"model": "/nonexistent/model.pt"}, "cannot load model '/nonexistent/model.pt'"),
    ({"tile_overlap": 400}, "tile_overlap must be between 0 and half the tile size"),
    ({"zoom_level": 9}, "zoom_level=9 is beyond image"),
    ({"cytomine_id_result_term": 999999}, "cytomine_id_result_term=999999 is not a term of project"),
    ({"threshold": "abc"}, "invalid job parameter threshold='abc': expected a number"),
    ({"cytomine_id_result_term": "abc"}, "invalid job parameter cytomine_id_result_term='abc': expected an id"),
    ({"cytomine_id_images": "abc"}, "invalid job parameter cytomine_id_images='abc': expected comma-separated ids"),
    ({"tile_size": "12.5"}, "invalid job parameter tile_size='12.5': expected a whole number"),
    ({"tissue_detection": "maybe"}, "invalid job parameter tissue_detection='maybe': expected true or false"),
    ({"mode": "bogus"}, "mode must be one of segment"),
])
def test_failing_run_is_failed_with_its_message(run_job: RunJob, parameters: dict, message: str) -> None:
    outcome = run_job(**parameters)
    assert outcome.exit_code == 1
    assert outcome.job.status == FAILED
    assert message in outcome.job.statusComment


def test_server_that_stops_answering_is_named(live_server: LocalServer, run_module: ModuleType, threshold_model: Path,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(connection, "RETRY_BACKOFF_S", 0.0)
    real_read = source.WindowSource.read
    address = live_server.socket.getsockname()

    def read_after_shutdown(self, *args):
        live_server.server.should_exit = True
        for _ in range(400):  # until the port is closed
            try:
                socket.create_connection(address, timeout=0.1).close()
                time.sleep(0.05)
            except OSError:
                break
        return real_read(self, *args)

    monkeypatch.setattr(source.WindowSource, "read", read_after_shutdown)
    exit_code = run_module.main(job_argv(live_server.endpoint, threshold_model, tissue_detection=False))
    assert exit_code == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"cyseg job failed: Cytomine server {live_server.endpoint.host}")
    assert "cannot be reached" in error


@pytest.mark.slow
def test_shipped_model_finds_the_nuclei(run_job: RunJob, slide: DemoSlide) -> None:
    """The same run with the shipped default model: every known nucleus is found in place (the model,
    not the job, decides how many false detections there are, so they are not counted here)."""
    if not segmenter.model_path("default").is_file():
        pytest.skip("the default model has not been trained yet")
    outcome = run_job(model="default", batch_size=4)
    assert outcome.exit_code == 0
    distance, _ = cKDTree(centres(outcome.annotations())).query(truth_centres(slide))
    assert (distance < 3.0).mean() > 0.95
