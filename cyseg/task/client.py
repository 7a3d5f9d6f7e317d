"""Driving a task run through an App Engine's HTTP API (the local one of `cyseg serve`, or Cytomine's):
create a run, provision its inputs, start it, wait for the end, fetch its outputs."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import requests

from cyseg.errors import CysegError
from cyseg.task.descriptor import load_descriptor

log = logging.getLogger(__name__)

APP_ENGINE_PATH = "/app-engine/v1"
TERMINAL = ("FINISHED", "FAILED")


class AppEngineClient:
    """An App Engine at `base_url` (e.g. http://127.0.0.1:8080/app-engine/v1), with a bearer token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **options: Any) -> requests.Response:
        response = self.session.request(method, self.base_url + path, timeout=120, **options)
        if response.status_code >= 400:
            raise CysegError(f"App Engine {method} {path}: {response.status_code} {response.text[:300]}")
        return response

    def create_run(self, namespace: str, version: str) -> dict[str, Any]:
        return self.call("POST", f"/tasks/{namespace}/{version}/runs").json()

    def provision(self, run_id: str, name: str, value: Any) -> dict[str, Any]:
        return self.call("PUT", f"/task-runs/{run_id}/input-provisions/{name}",
                         json={"param_name": name, "value": value}).json()

    def provision_file(self, run_id: str, name: str, path: Path, content_type: str = "image/tiff") -> dict[str, Any]:
        return self.call("PUT", f"/task-runs/{run_id}/input-provisions/{name}", data=path.read_bytes(),
                         headers={"Content-Type": content_type}).json()

    def start(self, run_id: str) -> dict[str, Any]:
        return self.call("POST", f"/task-runs/{run_id}/state-actions", json={"desired": "running"}).json()

    def wait(self, run_id: str, timeout_s: float = 3600.0, poll_s: float = 0.5) -> dict[str, Any]:
        """The run once it is FINISHED or FAILED (each new state is logged)."""
        deadline, state = time.monotonic() + timeout_s, None
        while True:
            run = self.call("GET", f"/task-runs/{run_id}").json()
            if run["state"] != state:
                state = run["state"]
                log.info("task run %s: %s", run_id, state)
            if state in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise CysegError(f"task run {run_id} still {state} after {timeout_s:g} s")
            time.sleep(poll_s)

    def outputs(self, run_id: str) -> dict[str, Any]:
        """Output name -> value."""
        return {o["param_name"]: o.get("value") for o in self.call("GET", f"/task-runs/{run_id}/outputs").json()}


def run_once(host: str, token: str, image_id: int, **inputs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run cyseg's task once on image `image_id` of a `cyseg serve` server at `host` (token: its admin's
    private key), with optional `inputs`; the finished (or failed) run and its outputs (empty unless FINISHED)."""
    descriptor = load_descriptor()
    client = AppEngineClient(host + APP_ENGINE_PATH, token)
    run = client.create_run(descriptor["namespace"], descriptor["version"])
    client.provision(run["id"], "image", image_id)
    for name, value in inputs.items():
        client.provision(run["id"], name, value)
    client.start(run["id"])
    run = client.wait(run["id"])
    return run, client.outputs(run["id"]) if run["state"] == "FINISHED" else {}
