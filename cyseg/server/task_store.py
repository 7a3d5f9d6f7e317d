"""The local App Engine's state: registered tasks and their runs, as folders and JSON files.

    ROOT/tasks/<task uuid>/descriptor.yml, task.json
    ROOT/runs/<run uuid>/run.json, inputs/, outputs/, task.log

A restart on the same folder keeps tasks and runs; a run that was queued or running when the
server stopped is FAILED (its process is gone).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from cyseg.task.descriptor import parse_descriptor

TERMINAL = ("FINISHED", "FAILED")
ACTIVE = ("QUEUING", "QUEUED", "PENDING", "RUNNING")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(partial, path)


@dataclass(frozen=True)
class Task:
    id: str
    descriptor: dict[str, Any]
    created_at: str

    @property
    def namespace(self) -> str:
        return self.descriptor["namespace"]

    @property
    def version(self) -> str:
        return self.descriptor["version"]

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        return self.descriptor["inputs"]

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.descriptor["outputs"]


@dataclass
class Run:
    id: str
    task_id: str
    state: str
    created_at: str
    updated_at: str
    message: str | None = None
    provisioned: list[str] = field(default_factory=list)


Record = TypeVar("Record", Task, Run)


class Records(Generic[Record]):
    """Tasks or runs by id, listed in creation order, behind the store's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._by_id: dict[str, Record] = {}

    def add(self, record: Record) -> Record:
        with self._lock:
            self._by_id[record.id] = record
            return record

    def get(self, ident: str) -> Record | None:
        with self._lock:
            return self._by_id.get(ident)

    def all(self) -> list[Record]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda record: record.created_at)


class DuplicateTask(Exception):
    """A task with this namespace and version is registered already."""


class TaskStore:
    """Tasks and runs under `root` (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._tasks: Records[Task] = Records(self._lock)
        self._runs: Records[Run] = Records(self._lock)
        for folder in sorted((root / "tasks").glob("*/")):
            meta = json.loads((folder / "task.json").read_text(encoding="utf-8"))
            descriptor = parse_descriptor((folder / "descriptor.yml").read_bytes())
            self._tasks.add(Task(meta["id"], descriptor, meta["created_at"]))
        for path in sorted((root / "runs").glob("*/run.json")):
            run = self._runs.add(Run(**json.loads(path.read_text(encoding="utf-8"))))
            if run.state in ACTIVE:
                self.update(run, state="FAILED", message="the server stopped while the task was running")

    def register(self, descriptor_text: bytes) -> Task:
        """Register the task a descriptor describes (CysegError when it breaks the schema)."""
        descriptor = parse_descriptor(descriptor_text)
        with self._lock:
            if self.find(descriptor["namespace"], descriptor["version"]) is not None:
                raise DuplicateTask(f"task {descriptor['namespace']} {descriptor['version']} is already registered")
            task = Task(str(uuid.uuid4()), descriptor, now())
            folder = self.root / "tasks" / task.id
            folder.mkdir(parents=True)
            (folder / "descriptor.yml").write_bytes(descriptor_text)
            _write_json(folder / "task.json", {"id": task.id, "created_at": task.created_at})
            return self._tasks.add(task)

    def tasks(self) -> list[Task]:
        return self._tasks.all()

    def task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def find(self, namespace: str, version: str) -> Task | None:
        return next((t for t in self._tasks.all() if (t.namespace, t.version) == (namespace, version)), None)

    def descriptor_path(self, task: Task) -> Path:
        return self.root / "tasks" / task.id / "descriptor.yml"

    def create_run(self, task: Task) -> Run:
        with self._lock:
            stamp = now()
            run = Run(str(uuid.uuid4()), task.id, "CREATED", stamp, stamp)
            for folder in ("inputs", "outputs"):
                (self.folder(run) / folder).mkdir(parents=True)
            self._save(run)
            return self._runs.add(run)

    def runs(self) -> list[Run]:
        return self._runs.all()

    def run(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def folder(self, run: Run) -> Path:
        return self.root / "runs" / run.id

    def inputs_dir(self, run: Run) -> Path:
        return self.folder(run) / "inputs"

    def outputs_dir(self, run: Run) -> Path:
        return self.folder(run) / "outputs"

    def log_path(self, run: Run) -> Path:
        return self.folder(run) / "task.log"

    def update(self, run: Run, **changes: Any) -> Run:
        with self._lock:
            for key, value in changes.items():
                setattr(run, key, value)
            run.updated_at = now()
            self._save(run)
            return run

    def clear(self, path: Path) -> None:
        """Remove a provisioned input (file, link or folder) before it is provisioned again."""
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)

    def _save(self, run: Run) -> None:
        _write_json(self.folder(run) / "run.json", dataclasses.asdict(run))
