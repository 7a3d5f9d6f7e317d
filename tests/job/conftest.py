"""Fixtures for the job tests: a small synthetic slide with known nuclei, the embedded server over it,
a fast deterministic model, and `run_job(**parameters)`, which runs run.py's `main` in this process
with the command line Cytomine would build from descriptor.json."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cytomine.models import Job, JobCollection

from cyseg.demo_slide import DemoSlide, write_demo_slide
from cyseg.server.runner import Endpoint, LocalServer
from segmenter.checkpoint import Checkpoint
from .helpers import ROOT, SLIDE_NAME, SLIDE_SIZE, JobOutcome, RunJob, ThresholdSegmenter, connect, job_argv


@pytest.fixture(scope="session")
def threshold_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint = Checkpoint(family=ThresholdSegmenter.name, architecture={}, class_names=["background", "nucleus"],
                            in_channels=3, normalization={}, state_dict={}, threshold=0.5)
    return checkpoint.save(tmp_path_factory.mktemp("model") / "threshold.pt")


@pytest.fixture(scope="session")
def slide(tmp_path_factory: pytest.TempPathFactory) -> DemoSlide:
    return write_demo_slide(tmp_path_factory.mktemp("slides") / SLIDE_NAME, *SLIDE_SIZE, seed=3)


@pytest.fixture
def live_server(slide: DemoSlide, tmp_path: Path) -> Iterator[LocalServer]:
    """A fresh server (its own database) over the slide folder, with our descriptor registered."""
    server = LocalServer(slide.path.parent, tmp_path / "server", ROOT / "descriptor.json")
    with server.in_thread():
        yield server


@pytest.fixture
def server(live_server: LocalServer) -> Endpoint:
    return live_server.endpoint


@pytest.fixture
def run_job(server: Endpoint, run_module: ModuleType, threshold_model: Path, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> RunJob:
    """`run_job(keys=None, **parameters)`: run the job as Cytomine would and fetch it back; `keys` =
    (public, private) runs as that user instead of the server's admin."""
    monkeypatch.setenv("CYSEG_OUTPUT_DIR", str(tmp_path / "results"))

    def run(keys: tuple[str, str] | None = None, **parameters: Any) -> JobOutcome:
        exit_code = run_module.main(job_argv(server, threshold_model, keys, **parameters))
        client = connect(server)
        jobs = sorted(JobCollection(project=server.project_id).fetch(), key=lambda j: j.id)
        return JobOutcome(exit_code, Job().fetch(jobs[-1].id), client)

    return run


