"""Running the server: open the state, bind a socket, serve with uvicorn (in the foreground or a thread)."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from cyseg.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from cyseg.server.bootstrap import Seed, bootstrap
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import Store

log = logging.getLogger(__name__)

DATABASE_NAME = "cyseg-server.sqlite3"
FILES_DIR_NAME = "files"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A started server: where it listens and the keys and ids to use it with."""
    host: str  # e.g. http://127.0.0.1:8080, as given to `Cytomine(host, ...)`
    public_key: str
    private_key: str
    project_id: int
    software_id: int | None
    images: dict[str, int]
    terms: dict[str, int]

    @property
    def credentials(self) -> dict[str, Any]:
        """The credentials file's content."""
        return {"host": self.host, "public_key": self.public_key, "private_key": self.private_key,
                "project_id": self.project_id, "software_id": self.software_id, "images": self.images,
                "terms": self.terms}

    def cli_arguments(self) -> list[str]:
        """The `CytomineJob.from_cli` arguments that run a job against this server."""
        arguments = ["--cytomine_host", self.host, "--cytomine_public_key", self.public_key,
                     "--cytomine_private_key", self.private_key, "--cytomine_id_project", str(self.project_id)]
        if self.software_id is not None:
            arguments += ["--cytomine_id_software", str(self.software_id)]
        return arguments


def write_credentials(path: Path, endpoint: Endpoint) -> None:
    """Write the credentials as JSON, readable by the owner only (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(endpoint.credentials, stream, indent=2)
        stream.write("\n")


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections; without it every
    # keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class LocalServer:
    """The server over a slides folder and a data folder (SQLite database and attached files)."""

    def __init__(self, slides_dir: Path, data_dir: Path, software: Path | None = None, *,
                 address: str = "127.0.0.1", port: int = 0, project_name: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, access_log: bool = False) -> None:
        files_dir = data_dir / FILES_DIR_NAME
        files_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(data_dir / DATABASE_NAME)
        self.slides = SlideLibrary()
        try:
            seed = bootstrap(self.store, slides_dir, software, project_name)
            self.socket = _bind(address, port)
        except BaseException:
            self._close_state()
            raise
        self.endpoint = self._endpoint(seed, address, self.socket.getsockname()[1])
        config = uvicorn.Config(create_app(self.store, self.slides, files_dir, max_body_bytes), lifespan="off",
                                log_config=None, access_log=access_log, timeout_graceful_shutdown=5,
                                timeout_keep_alive=75)  # as nginx: clients reuse connections safely
        self.server = uvicorn.Server(config)

    @staticmethod
    def _endpoint(seed: Seed, address: str, port: int) -> Endpoint:
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
        host = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        return Endpoint(host, seed.user.public_key, seed.user.private_key, seed.project_id, seed.software_id,
                        seed.images, seed.terms)

    def _close_state(self) -> None:
        self.slides.close()
        self.store.close()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C), then release everything."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()
            self._close_state()

    @contextmanager
    def in_thread(self) -> Iterator[Endpoint]:
        """Serve from a background thread for the duration of the block."""
        thread = threading.Thread(target=self.serve_forever, name="cyseg-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError("the cyseg server did not start")
            time.sleep(0.01)
        try:
            yield self.endpoint
        finally:
            self.server.should_exit = True
            thread.join(timeout=START_TIMEOUT_S)
