"""The job under faults: the real client and run.py talk to the embedded server through a fault proxy
(`cyseg.server.fault_proxy`: 502/503 without forwarding, answers lost or cut short after the server
acted, delays), at start-up, during tiles, during the upload and during the properties; a job killed
during its upload and run again; the server restarted mid-job. Every test asserts on what the server holds afterwards
(read directly, not through the proxy): each known nucleus exactly once, each with one score and one
class, one run record, each job parameter once, and every job in a terminal state with a message."""
from __future__ import annotations

import dataclasses
import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import shapely
from cytomine.models import (AnnotationCollection, AttachedFileCollection, ImageInstance, Job, JobCollection,
                              PropertyCollection, User)
from scipy.spatial import cKDTree

from cyseg.coordinates import from_cytomine
from cyseg.cytomine import connection
from cyseg.demo_slide import DemoSlide
from cyseg.job import lifecycle, upload
from cyseg.pipeline.results import SUMMARY_NAME
from cyseg.server.fault_proxy import CUT, DROP, ERROR, FAULTS, UNREACHABLE, Choose, FaultProxy, Where
from cyseg.server.runner import Endpoint, LocalServer
from .helpers import ROOT, SLIDE_SIZE, connect, image_id, job_argv

RATE, SEED = 0.15, 1
TERMINATED, FAILED, RUNNING = 3, 4, 2
PARAMETERS = {"tile_size": 256, "cytomine_id_result_term": None}  # class terms and score properties on


# The requests of each phase of a job, by path (method, path with query -> bool).

def startup(method: str, path: str) -> bool:
    """Connecting, the project and software, creating the job and recording its parameters."""
    return (any(part in path for part in ("/server/ping", "/user/", "/project/", "/software", "/job.json",
                                          "/jobparameter.json")) and "annotationposition" not in path)


def tiles(method: str, path: str) -> bool:
    return "/window-" in path or "/thumb" in path


def annotations_phase(method: str, path: str) -> bool:
    """The run record (the image's properties) and the annotations (listed, sent)."""
    return "/annotation.json" in path or "imageinstance/" in path.lower() and path.endswith("/property.json")


def properties_phase(method: str, path: str) -> bool:
    """Which annotations have a score and a class, and sending those missing."""
    return "annotationposition.json" in path or "Annotation/" in path and path.endswith("/property.json")


def results_phase(method: str, path: str) -> bool:
    """The result files attached to the job (listed, sent)."""
    return "attachedfile" in path.lower()


PHASES = {"start-up": startup, "tiles": tiles, "upload": annotations_phase, "properties": properties_phase,
          "results": results_phase}


def every_other(where: Where, faults: tuple[str, ...]) -> Choose:
    """Every second request `where` accepts, counted per method and path (the first try of each faults, its
    retry gets through), meeting each of `faults` in turn."""
    seen: dict[tuple[str, str], int] = {}
    chosen = itertools.cycle(faults)
    lock = threading.Lock()

    def accepts(method: str, path: str) -> bool | str:
        if not where(method, path):
            return False
        with lock:
            seen[method, path] = seen.get((method, path), 0) + 1
            return seen[method, path] % 2 == 1 and next(chosen)

    return accepts


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(connection, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(upload, "BACKOFF_S", 0.01)
    monkeypatch.setattr(lifecycle, "CREATE_BACKOFF_S", 0.01)
    monkeypatch.setattr(upload, "CHUNK_SIZE", 50)  # several annotation requests, sent concurrently
    monkeypatch.setattr(upload, "PROPERTY_CHUNK", 50)
    monkeypatch.setenv("CYSEG_OUTPUT_DIR", str(tmp_path / "results"))


@pytest.fixture
def proxy(live_server: LocalServer) -> Iterator[FaultProxy]:
    with FaultProxy(live_server.endpoint.host, seed=SEED) as proxy:
        yield proxy


@dataclasses.dataclass
class Runner:
    """Runs run.py through the proxy and reads the outcome from the server itself."""

    server: Endpoint
    proxy: FaultProxy
    module: ModuleType
    model: Path

    def argv(self, keys: tuple[str, str] | None = None, **parameters: object) -> list[str]:
        return job_argv(dataclasses.replace(self.server, host=self.proxy.host), self.model, keys,
                        **{**PARAMETERS, **parameters})

    @property
    def direct(self) -> Endpoint:
        """The server itself, where the proxy forwards (after a restart, its new address)."""
        return dataclasses.replace(self.server, host=self.proxy.upstream)

    def __call__(self, keys: tuple[str, str] | None = None, **parameters: object) -> tuple[int, Job]:
        exit_code = self.module.main(self.argv(keys, **parameters))
        connect(self.direct)
        return exit_code, last_job(self.direct)


@pytest.fixture
def run(server: Endpoint, proxy: FaultProxy, run_module: ModuleType, threshold_model: Path) -> Runner:
    return Runner(server, proxy, run_module, threshold_model)


def last_job(server: Endpoint) -> Job:
    jobs = sorted(JobCollection(project=server.project_id).fetch(), key=lambda j: j.id)
    return Job().fetch(jobs[-1].id)


def job_keys(job: Job) -> tuple[str, str]:
    user = User().fetch(job.userJob)
    return user.publicKey, user.privateKey


def router_job(server: Endpoint) -> Job:
    """A job created as the Cytomine UI does (the router then runs run.py with the job user's keys)."""
    connect(server)
    return Job(server.project_id, server.software_id).save()


def assert_server_holds_each_nucleus_once(server: Endpoint, slide: DemoSlide) -> None:
    """Every known nucleus exactly once in the image, each with one cyseg.score and one cyseg.class, and
    one run record naming each of its users once."""
    connect(server)
    found = list(AnnotationCollection(image=image_id(server), includeAlgo=True, showWKT=True).fetch())
    centres = np.array([from_cytomine(shapely.from_wkt(a.location), SLIDE_SIZE[1]).centroid.coords[0]
                        for a in found]).reshape(-1, 2)
    truth = np.array([(n.x, n.y) for n in slide.nuclei])
    assert len(found) == len(truth)
    distance, nearest = cKDTree(centres).query(truth)
    assert distance.max() < 1.5 and len(set(nearest.tolist())) == len(truth)
    for annotation in found:
        keys = sorted(p.key for p in PropertyCollection(annotation).fetch())
        assert keys == [upload.CLASS_KEY, upload.SCORE_KEY], (annotation.id, keys)
    records = [p for p in PropertyCollection(ImageInstance().fetch(image_id(server))).fetch()
               if p.key.startswith(upload.MANIFEST_PREFIX)]
    assert len(records) == 1
    users = records[0].value.split(",")
    assert len(users) == len(set(users))


def assert_every_job_ended(server: Endpoint) -> None:
    """No job left NOT_LAUNCHED or RUNNING; a failed one says why; parameters recorded once each."""
    connect(server)
    for listed in JobCollection(project=server.project_id).fetch():
        job = Job().fetch(listed.id)
        assert job.status in (TERMINATED, FAILED), (job.id, job.status, job.statusComment)
        assert job.status == TERMINATED or job.statusComment
        parameters = [p["softwareParameter"] for p in job.jobParameters or []]
        assert len(parameters) == len(set(parameters))
        files = [f.filename for f in AttachedFileCollection(job).fetch()]
        assert len(files) == len(set(files)), (job.id, files)
        assert job.status == FAILED or SUMMARY_NAME in files


# --- seeded faults on every request -----------------------------------------------------------------

def test_job_under_random_faults_stores_everything_once_and_a_rerun_adds_nothing(
        run: Runner, proxy: FaultProxy, server: Endpoint, slide: DemoSlide) -> None:
    proxy.rate = RATE
    first, job = run(**PARAMETERS)
    assert (first, job.status) == (0, TERMINATED), job.statusComment
    again, rerun = run(**PARAMETERS)
    assert (again, rerun.status) == (0, TERMINATED), rerun.statusComment
    assert rerun.id != job.id
    assert {s.fault for s in proxy.faulted()} == set(FAULTS)
    assert_server_holds_each_nucleus_once(server, slide)
    assert_every_job_ended(server)


# --- each phase, each kind of failure ---------------------------------------------------------------

@pytest.mark.parametrize("phase", list(PHASES))
def test_failures_in_one_phase_are_retried_without_duplicates(
        run: Runner, proxy: FaultProxy, server: Endpoint, slide: DemoSlide, phase: str) -> None:
    """The first try of every request of the phase fails: a 502/503, or an answer lost or cut short after the
    server acted."""
    proxy.rate, proxy.where = 1.0, every_other(PHASES[phase], (ERROR, DROP, CUT))
    exit_code, job = run(**PARAMETERS)
    assert {s.fault for s in proxy.faulted(PHASES[phase])} == {ERROR, DROP, CUT}
    assert (exit_code, job.status) == (0, TERMINATED), job.statusComment
    assert_server_holds_each_nucleus_once(server, slide)
    assert_every_job_ended(server)


# --- start-up ---------------------------------------------------------------------------------------

def test_project_unavailable_at_start_up_fails_the_job_naming_the_request(
        run: Runner, proxy: FaultProxy, server: Endpoint, capsys: pytest.CaptureFixture) -> None:
    """A 503 on every GET project/{id}.json: a job launched from the UI (it exists already) ends FAILED
    naming the request and the status; one typed by hand (none exists yet) exits 1 with the same line."""
    proxy.rate, proxy.faults = 1.0, (ERROR,)
    proxy.where = lambda method, path: method == "GET" and f"/project/{server.project_id}.json" in path
    launched = router_job(server)
    exit_code, job = run(keys=job_keys(launched))
    assert exit_code == 1 and job.id == launched.id and job.status == FAILED
    expected = f"GET project/{server.project_id}.json (the job's project) failed: it answered HTTP 50"
    assert expected in job.statusComment
    assert run.module.main(run.argv()) == 1
    assert expected in capsys.readouterr().err.splitlines()[-1]
    assert last_job(server).id == launched.id  # no job was created
    assert_every_job_ended(server)


def test_server_down_for_good_exits_with_one_line_and_a_later_run_finishes_the_job(
        run: Runner, proxy: FaultProxy, server: Endpoint, slide: DemoSlide, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "CONNECT_WAIT_S", 0.0)
    launched = router_job(server)
    keys = job_keys(launched)
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
    proxy.upstream = nowhere
    assert run.module.main(run.argv(keys)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (f"cyseg job failed: Cytomine server {proxy.host}: GET user/current.json (the user of "
                         f"these keys) failed: it answered HTTP 502")
    proxy.upstream = server.host
    exit_code, job = run(keys=keys)
    assert exit_code == 0 and job.id == launched.id and job.status == TERMINATED
    assert_server_holds_each_nucleus_once(server, slide)
    assert_every_job_ended(server)


@pytest.mark.parametrize(("parameter", "value", "message"), [
    ("threshold", "abc", "invalid job parameter threshold='abc': expected a number"),
    ("cytomine_id_result_term", "abc", "invalid job parameter cytomine_id_result_term='abc': expected an id"),
])
def test_bad_value_from_the_ui_fails_the_job_naming_it(run: Runner, server: Endpoint, parameter: str, value: str,
                                                       message: str) -> None:
    """A value the client's argparse would reject (exit 2, job left NOT_LAUNCHED) fails the job instead."""
    launched = router_job(server)
    exit_code, job = run(keys=job_keys(launched), **{parameter: value})
    assert exit_code == 1 and job.id == launched.id and job.status == FAILED
    assert message in job.statusComment
    assert_every_job_ended(server)


# --- killed, restarted ------------------------------------------------------------------------------

def test_job_killed_during_its_upload_is_completed_by_a_rerun_and_by_its_own_resume(
        run: Runner, proxy: FaultProxy, server: Endpoint, slide: DemoSlide) -> None:
    """SIGKILL once the annotations are stored and the first property request is on its way: a new run
    (another job user) completes the properties, and the killed job run again with its own keys ends
    TERMINATED, both under random faults, and nothing is stored twice."""
    proxy.hold = properties_phase
    code = "import sys, run, tests.job.helpers; sys.exit(run.main(sys.argv[1:]))"
    with subprocess.Popen([sys.executable, "-c", code, *run.argv()], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as child:
        try:
            assert proxy.held.wait(120), "the job never reached its property requests"
        finally:
            child.send_signal(signal.SIGKILL)
        assert child.wait(60) == -signal.SIGKILL
    proxy.hold = None
    proxy.release()
    connect(server)
    killed = last_job(server)
    assert killed.status == RUNNING
    stored = list(AnnotationCollection(image=image_id(server), includeAlgo=True).fetch())
    assert len(stored) == len(slide.nuclei)
    assert not any(PropertyCollection(a).fetch() for a in stored)

    proxy.rate = RATE
    exit_code, rerun = run()
    assert (exit_code, rerun.status) == (0, TERMINATED), rerun.statusComment
    assert_server_holds_each_nucleus_once(server, slide)
    exit_code, _ = run(keys=job_keys(killed))
    resumed = Job().fetch(killed.id)
    assert (exit_code, resumed.status) == (0, TERMINATED), resumed.statusComment
    assert_server_holds_each_nucleus_once(server, slide)
    assert_every_job_ended(server)


def test_server_restarted_mid_job_keeps_its_state_and_the_job_completes(
        run: Runner, proxy: FaultProxy, live_server: LocalServer, slide: DemoSlide, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stops once the job reads tiles, the job meets 502s (the proxy is a gateway to a server that
    is gone), and the server starts again on its database, on another port, which the proxy learns."""
    monkeypatch.setattr(connection, "RETRY_BACKOFF_S", 0.1)  # the job's own back-off, to outlast the restart
    monkeypatch.setattr(upload, "BACKOFF_S", 0.1)

    def restart(stack: ExitStack) -> None:
        while not any(tiles(s.method, s.path) for s in list(proxy.log)):
            time.sleep(0.01)
        live_server.server.should_exit = True
        while not proxy.faulted(lambda method, path: True):  # until the job has met the closed port
            time.sleep(0.01)
        again = LocalServer(slide.path.parent, tmp_path / "server", ROOT / "descriptor.json")
        proxy.upstream = stack.enter_context(again.in_thread()).host

    with ExitStack() as stack:
        thread = threading.Thread(target=restart, args=(stack,), daemon=True)
        thread.start()
        exit_code, job = run(**PARAMETERS)
        thread.join(60)
        assert proxy.upstream != live_server.endpoint.host
        assert {s.fault for s in proxy.faulted()} == {UNREACHABLE}
        assert (exit_code, job.status) == (0, TERMINATED), job.statusComment
        assert_server_holds_each_nucleus_once(run.direct, slide)
        assert_every_job_ended(run.direct)
