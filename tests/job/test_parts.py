"""Smaller parts of the job: tissue detection, the duplicate index, the synthetic slide, upload progress."""
from __future__ import annotations

import json

import numpy as np
import openslide
import pytest
import shapely
from cytomine import Cytomine
from cytomine.models import AnnotationCollection, ImageInstance, Job, PropertyCollection
from shapely.geometry import box

from cyseg.demo_slide import read_truth, truth_path_for
from cyseg.job import upload
from cyseg.job.progress import JobProgress
from cyseg.job.upload import CentroidIndex
from cyseg.pipeline.objects import DetectedObject
from cyseg.pipeline.tissue import detect_tissue
from cyseg.server.runner import Endpoint
from .helpers import connect, disks, image_id


def test_tissue_is_found_on_dark_and_on_white_backgrounds() -> None:
    fluorescence = disks((200, 300), [(50.0, 50.0)], 10)
    mask = detect_tissue(fluorescence, level_width=3000)  # thumbnail of a 10x larger level
    assert mask.covers(400, 400, 200, 200) and not mask.covers(2000, 1000, 500, 500)
    brightfield = 255 - fluorescence
    assert detect_tissue(brightfield, 3000).covers(400, 400, 200, 200)


def test_without_a_clear_background_everything_is_tissue() -> None:
    rng = np.random.default_rng(0)
    busy = rng.integers(90, 170, (100, 100, 3)).astype(np.uint8)
    assert detect_tissue(busy, 100).fraction == 1.0


def test_centroid_index_finds_neighbours() -> None:
    index = CentroidIndex(distance=2.0)
    assert index.near([(10.0, 10.0)]).tolist() == [False]
    index.add([(10.0, 10.0)])
    assert index.near([(11.9, 10.0), (8.5, 11.0), (12.5, 10.0), (10.0, 12.0)]).tolist() == [True, True, False, True]
    index.add([(20.0, 10.0), (30.0, 10.0)])  # added after a question: asked again, they are found
    assert index.near([(12.5, 10.0), (19.0, 11.0), (31.0, 11.0)]).tolist() == [False, True, True]
    assert len(index) == 3


def test_demo_slide_is_a_pyramid_with_its_truth(slide) -> None:
    with openslide.OpenSlide(slide.path) as opened:
        assert opened.dimensions == (slide.width, slide.height)
        assert opened.level_count >= 2 and opened.level_downsamples[1] == 2.0
        pixels = np.asarray(opened.read_region((0, 0), 0, (slide.width, slide.height)).convert("L"))
    assert json.loads(truth_path_for(slide.path).read_text())["width"] == slide.width
    truth = read_truth(slide.path)
    assert len(truth) == len(slide.nuclei) > 50
    bright = [pixels[int(n.y), int(n.x)] for n in truth]
    assert min(bright) > 100 and np.median(pixels) < 40  # nuclei where the truth says, dark elsewhere
    assert all(n.x < 2 * slide.width / 3 for n in truth)  # the right third is empty


def test_upload_tells_its_progress_and_the_job_shows_it(server: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """The uploader reports after each request (annotations, then properties), up to all of its work; the
    job's progress then moves past the images' segmentation share, with a comment saying so."""
    monkeypatch.setattr(upload, "CHUNK_SIZE", 10)
    monkeypatch.setattr(upload, "PROPERTY_CHUNK", 10)
    client = connect(server)
    image = ImageInstance().fetch(image_id(server))
    objects = [DetectedObject(box(10 + 12 * i, 10, 20 + 12 * i, 20), 100.0, 1, 0.9) for i in range(30)]
    seen: list[tuple[int, int]] = []
    uploader = upload.ImageUploader(image, server.project_id, client.current_user.id, "progress-test", None,
                                    class_names=["background", "nucleus"], on_progress=lambda *p: seen.append(p))
    assert uploader.upload(objects).count(upload.UPLOADED) == 30
    assert len(seen) == 6 and {total for _, total in seen} == {60}  # 3 + 3 requests, 30 objects twice
    assert sorted(done for done, _ in seen) == [10, 20, 30, 40, 50, 60]

    job = Job(server.project_id, server.software_id).save()
    progress = JobProgress(job, images=2)
    progress.uploading(0, "a.tif", 5, 10)
    shown = Job().fetch(job.id)
    assert (shown.progress, shown.statusComment) == (48, "image 1/2 (a.tif): uploading, 50% done")
    progress.uploading(1, "b.tif", 10, 10)
    assert Job().fetch(job.id).progress == 97


def test_only_a_whole_bulk_answer_names_the_new_ids() -> None:
    assert upload.added_ids({"message": "algoannotations 12,13 added"}) == [12, 13]
    assert upload.added_ids({"success": False, "message": "Only part of the entries (algoannotations 12) added.",
                             "errors": []}) == []
    assert upload.added_ids({"message": "Annotation 5 saved"}) == [] and upload.added_ids(True) == []


@pytest.mark.parametrize("answers_name_ids", [True, False])
def test_properties_reach_their_annotations_named_by_the_answers_or_listed(
        server: Endpoint, monkeypatch: pytest.MonkeyPatch, answers_name_ids: bool) -> None:
    """The ids of the new annotations come from the answers to their uploads (Cytomine core's message), with no
    listing after the upload; a server whose answers do not name them has them listed and matched by centroid."""
    monkeypatch.setattr(upload, "CHUNK_SIZE", 10)
    listings: list[tuple] = []
    real_listing, real_post = upload.stored_annotations, Cytomine.post
    monkeypatch.setattr(upload, "stored_annotations", lambda *args: listings.append(args) or real_listing(*args))

    def post_answering_without_ids(self: Cytomine, uri: str, *args: object) -> object:
        answer = real_post(self, uri, *args)
        return {"message": "saved"} if answer and uri == "annotation.json" else answer

    if not answers_name_ids:
        monkeypatch.setattr(Cytomine, "post", post_answering_without_ids)
    client = connect(server)
    image = ImageInstance().fetch(image_id(server))
    objects = [DetectedObject(box(10 + 12 * i, 10, 20 + 12 * i, 20), 100.0, 1, i / 100) for i in range(25)]
    uploader = upload.ImageUploader(image, server.project_id, client.current_user.id, "ids-test", None,
                                    class_names=["background", "nucleus"])
    assert uploader.upload(objects).count(upload.UPLOADED) == 25
    assert len(listings) == (1 if answers_name_ids else 2)  # before the upload; again only without ids
    stored = AnnotationCollection(image=image.id, user=client.current_user.id, showWKT=True).fetch()
    assert len(stored) == 25
    for annotation in stored:
        i = round((shapely.from_wkt(annotation.location).centroid.x - 15) / 12)
        assert {p.key: p.value for p in PropertyCollection(annotation).fetch()} == {
            "cyseg.score": f"{i / 100:.4f}", "cyseg.class": "nucleus"}
