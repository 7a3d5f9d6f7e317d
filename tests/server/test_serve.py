"""`cyseg serve` and persistence: a restart on the same data folder keeps keys, ids and content."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cytomine.models import Annotation, AnnotationCollection, AttachedFile, Project

from cyseg.errors import CysegError
from cyseg.server.descriptor import read_descriptor
from cyseg.server.runner import Endpoint
from cyseg.server.testing import run_server

from .helpers import DESCRIPTOR, PNG_NAME, GeneratedSlides

REPOSITORY = Path(__file__).resolve().parents[2]


def test_restart_keeps_everything(generated_slides: GeneratedSlides, connect, tmp_path: Path) -> None:
    data = tmp_path / "data"
    attachment = tmp_path / "notes.txt"
    attachment.write_text("kept")
    with run_server(generated_slides.folder, data, software=DESCRIPTOR) as first:
        connect(first)
        annotation = Annotation(location="POLYGON ((1 1, 9 1, 9 9, 1 1))", id_image=first.images[PNG_NAME]).save()
        project = Project().fetch(first.project_id)
        file_id = AttachedFile(project, file=str(attachment), filename="notes.txt").upload().id
    with run_server(generated_slides.folder, data, software=DESCRIPTOR) as second:
        assert second.credentials | {"host": None} == first.credentials | {"host": None}
        connect(second)
        assert [a.id for a in AnnotationCollection(project=second.project_id).fetch()] == [annotation.id]
        assert AttachedFile(Project().fetch(second.project_id)).fetch(file_id).download(str(tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "kept"


def test_new_slides_are_added_on_restart(generated_slides: GeneratedSlides, tmp_path: Path) -> None:
    slides, data = tmp_path / "slides", tmp_path / "data"
    slides.mkdir()
    (slides / "a.png").write_bytes((generated_slides.folder / PNG_NAME).read_bytes())
    (slides / "notes.txt").write_text("not a slide")
    (slides / "broken.png").write_bytes(b"not a png")
    with run_server(slides, data) as first:
        assert list(first.images) == ["a.png"]
    (slides / "sub").mkdir()
    (slides / "sub" / "b.png").write_bytes((generated_slides.folder / PNG_NAME).read_bytes())
    with run_server(slides, data) as second:
        assert second.images["a.png"] == first.images["a.png"]
        assert set(second.images) == {"a.png", "sub/b.png"}


def test_descriptor_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "descriptor.json"
    bad.write_text('{"name": "x", "inputs": [{"id": "t", "type": "Float"}]}')
    with pytest.raises(CysegError, match="type 'Float'"):
        read_descriptor(bad)
    bad.write_text("{")
    with pytest.raises(CysegError, match="not valid JSON"):
        read_descriptor(bad)
    assert read_descriptor(DESCRIPTOR).parameters[-1].default_value == "true"


def test_cli_serves_and_writes_credentials(generated_slides: GeneratedSlides, connect, tmp_path: Path) -> None:
    credentials_file = tmp_path / "credentials.json"
    command = [sys.executable, "-m", "cyseg", "serve", "--slides", str(generated_slides.folder),
               "--data", str(tmp_path / "data"), "--port", "0", "--software", str(DESCRIPTOR),
               "--credentials-file", str(credentials_file)]
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(REPOSITORY)}, text=True)
    try:
        deadline = time.monotonic() + 60
        while not credentials_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert credentials_file.exists(), process.communicate(timeout=5)[0] if process.poll() is not None else ""
        credentials = json.loads(credentials_file.read_text())
        assert oct(credentials_file.stat().st_mode & 0o777) == "0o600"
        assert set(credentials) >= {"host", "public_key", "private_key", "project_id", "software_id"}
        while time.monotonic() < deadline:
            try:
                requests.get(f"{credentials['host']}/server/ping", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        client = connect(Endpoint(**credentials))
        assert client.current_user.username == "admin"
        assert Project().fetch(credentials["project_id"]).numberOfImages == 2
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert '"private_key"' in output and "run a job: python run.py --cytomine_host" in output


def test_cli_reports_a_missing_slides_folder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "cyseg", "serve", "--slides", str(tmp_path / "nope"),
                             "--data", str(tmp_path / "data"), "--port", "0"], cwd=REPOSITORY,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
                            timeout=60)
    assert result.returncode == 2
    assert "slides folder" in result.stderr and "does not exist" in result.stderr
