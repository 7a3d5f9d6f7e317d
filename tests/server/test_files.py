"""Attached files, properties, and bad input: unknown ids, path traversal, oversized requests."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
from cytomine.cytomine import Cytomine, CytomineAuth
from cytomine.models import (Annotation, AttachedFile, AttachedFileCollection, ImageInstance, Job, Project,
                             Property, PropertyCollection)

from cyseg.server.runner import Endpoint
from cyseg.server.testing import run_server

from .helpers import PNG_NAME, GeneratedSlides


def test_attached_file_round_trip(client, server: Endpoint, tmp_path: Path) -> None:
    job = Job(server.project_id, server.software_id).save()
    payload = bytes(range(256)) * 1000
    source = tmp_path / "results.geojson"
    source.write_bytes(payload)
    uploaded = AttachedFile(job, file=str(source), filename="results.geojson").upload()
    assert uploaded.id and uploaded.filename == "results.geojson" and uploaded.domainIdent == job.id
    fetched = AttachedFile(job).fetch(uploaded.id)
    assert fetched.domainClassName == "be.cytomine.processing.Job"
    assert fetched.download(str(tmp_path / "back-{filename}"))
    assert (tmp_path / "back-results.geojson").read_bytes() == payload
    assert [f.id for f in AttachedFileCollection(job).fetch()] == [uploaded.id]


def test_properties_round_trip(client, server: Endpoint) -> None:
    project = Project().fetch(server.project_id)
    created = Property(project, key="model", value="unet-v1").save()
    assert (created.key, created.value) == ("model", "unet-v1")
    assert Property(project).fetch(key="model").value == "unet-v1"
    annotation = Annotation(location="POLYGON ((1 1, 5 1, 5 5, 1 1))", id_image=server.images[PNG_NAME]).save()
    Property(annotation, key="score", value="0.93").save()
    assert PropertyCollection(annotation).fetch().as_dict()["score"].value == "0.93"
    assert created.delete()
    assert Property(project).fetch(key="model") is False


@pytest.mark.parametrize("path", [
    "project/999999.json", "imageinstance/999999.json", "annotation/999999.json", "job/999999.json",
    "software/999999.json", "term/999999.json", "user/999999.json", "attachedfile/999999.json",
    "attachedfile/999999/download", "imageinstance/999999/window-0-0-10-10.png", "sliceinstance/999999.json",
    "annotation/999999/crop.png", "domain/be.cytomine.project.Project/999999/property.json",
    "project/999999/imageinstance.json", "no/such/route.json"])
def test_unknown_ids_are_404_with_a_message(client, path: str) -> None:
    response = client._get(path, None)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["message"]


def test_malformed_ids_and_bodies_are_400(client, server: Endpoint) -> None:
    assert client._get("annotation.json", {"max": "many"}).status_code == 400
    not_json = client._post("annotation.json", "{not json")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["message"]
    assert client._post("annotation.json", '"a string"').status_code == 400


@pytest.mark.parametrize("path, query", [
    ("attachedfile/..%2F..%2F..%2Fetc%2Fpasswd/download", None),
    ("attachedfile/%2e%2e/download", None),
    ("ims/slice/tile", {"fif": "../../../../etc/passwd", "tileIndex": 0, "z": 0}),
    ("ims/slice/tile", {"fif": "/etc/passwd", "tileIndex": 0, "z": 0}),
    ("ims/image/..%2F..%2F..%2Fetc%2Fpasswd/normalized-tile/zoom/0/ti/0.jpg", None),
    ("ims/image/tile", {"zoomify": "/etc/passwd", "x": 0, "y": 0, "z": 0}),
    ("imageinstance/..%2F..%2Fetc%2Fpasswd/download", None),
])
def test_path_traversal_is_impossible(client, path: str, query: dict | None) -> None:
    response = client._get(path, query)
    assert response.status_code in (400, 404)
    assert b"root:" not in response.content


def test_uploaded_file_names_never_become_paths(client, server: Endpoint, tmp_path: Path) -> None:
    image = ImageInstance().fetch(server.images[PNG_NAME])
    source = tmp_path / "data.txt"
    source.write_text("hello")
    target_name = f"cyseg-escape-{os.getpid()}.txt"
    uploaded = AttachedFile(image, file=str(source), filename=f"../../../../../tmp/{target_name}").upload()
    assert uploaded.filename == target_name
    assert not (Path("/tmp") / target_name).exists()
    assert AttachedFile(image).fetch(uploaded.id).download(str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "hello"


def test_oversized_requests_are_refused(generated_slides: GeneratedSlides, connect, tmp_path: Path) -> None:
    limit = 64 * 1024
    with run_server(generated_slides.folder, max_body_bytes=limit) as small:
        client = connect(small)
        image_id = small.images[PNG_NAME]
        big = json.dumps([{"image": image_id, "location": "POINT (1 1)"}] * 3000)
        assert len(big) > limit
        response = client._post("annotation.json", big)
        assert response.status_code == 413 and "larger than" in response.json()["message"]

        def chunks():  # no Content-Length: the server counts while reading
            for _ in range(100):
                yield b" " * 1024

        prepared = requests.Request("POST", f"{small.host}/api/annotation.json", data=chunks(),
                                    headers=Cytomine._headers(content_type="application/json")).prepare()
        CytomineAuth(small.public_key, small.private_key, f"{small.host}/api/", "/api/")(prepared)
        assert "content-length" not in {k.lower() for k in prepared.headers}
        assert requests.Session().send(prepared).status_code == 413

        source = tmp_path / "big.bin"
        source.write_bytes(b"\0" * (limit * 2))
        project = Project().fetch(small.project_id)
        assert AttachedFile(project, file=str(source), filename="big.bin").upload() is False
        assert client._post("annotation.json", json.dumps({"image": image_id, "location": "POINT (1 1)"})).ok
