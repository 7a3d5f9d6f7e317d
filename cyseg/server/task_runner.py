"""Running the local App Engine's task runs, one at a time, as the App Engine's local mode does
with its containers: the task's command in a subprocess whose input and output folders are the
run's own (`--inputs`, `--outputs` in place of the container's /inputs and /outputs mounts), or,
with a task image (CYSEG_TASK_IMAGE), that image's container with the run's folders mounted there.

A run goes QUEUED when started, RUNNING when its process starts, then FINISHED when the process
exits with 0 and every output of the descriptor is there and well-formed, FAILED otherwise, with
the task's last `cyseg task failed: ...` line (or the output problem) as its message.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from cyseg.server.task_store import Run, TaskStore
from cyseg.task.io import ParameterError, decode
from cyseg.task.descriptor import type_spec

log = logging.getLogger(__name__)

TASK_COMMAND = (sys.executable, "-m", "cyseg.task")
TASK_IMAGE_VARIABLE = "CYSEG_TASK_IMAGE"
FAILURE_PREFIX = "cyseg task failed: "


def failure_line(log_path: Path, exit_code: int) -> str:
    """What went wrong, from the task's log: its failure line, else its last line."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    stated = [line[len(FAILURE_PREFIX):] for line in lines if line.startswith(FAILURE_PREFIX)]
    if stated:
        return stated[-1]
    return f"the task exited with code {exit_code}" + (f": {lines[-1]}" if lines else "")


def container_command(image: str, inputs: Path, outputs: Path) -> list[str]:
    """`docker run` of a task image as the App Engine runs it: its entry point, /inputs (read-only) and
    /outputs mounted, no network; the targets of linked inputs (the server's slides) at their own paths."""
    mounts = ["-v", f"{inputs}:/inputs:ro", "-v", f"{outputs}:/outputs"]
    for link in sorted(path for path in inputs.rglob("*") if path.is_symlink()):
        target = link.resolve()
        mounts += ["-v", f"{target}:{target}:ro"]
    return ["docker", "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}", *mounts, image]


class TaskRunner:
    """Runs submitted runs in submission order, in a background (daemon) thread: `command` in a
    subprocess, or the container of `image` when one is given."""

    def __init__(self, store: TaskStore, command: Sequence[str] = TASK_COMMAND, image: str | None = None) -> None:
        self.store = store
        self.command = list(command)
        self.image = image
        self._queue: queue.Queue[Run] = queue.Queue()
        threading.Thread(target=self._work, name="cyseg-task-runner", daemon=True).start()

    def submit(self, run: Run) -> None:
        self.store.update(run, state="QUEUING")
        self._queue.put(run)
        self.store.update(run, state="QUEUED")

    def _work(self) -> None:
        while True:
            run = self._queue.get()
            try:
                self._execute(run)
            except Exception as error:  # the run fails, the runner goes on
                log.exception("task run %s failed", run.id)
                self.store.update(run, state="FAILED", message=f"{type(error).__name__}: {error}")

    def _execute(self, run: Run) -> None:
        task = self.store.task(run.task_id)
        log_path = self.store.log_path(run)
        inputs, outputs = self.store.inputs_dir(run), self.store.outputs_dir(run)
        command = (container_command(self.image, inputs, outputs) if self.image else
                   self.command + ["--inputs", str(inputs), "--outputs", str(outputs)])
        with log_path.open("w") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=os.environ | {"PYTHONUNBUFFERED": "1"})
            self.store.update(run, state="RUNNING")
            log.info("task run %s: running %s (pid %d)", run.id, " ".join(command), process.pid)
            exit_code = process.wait()
        if exit_code != 0:
            self.store.update(run, state="FAILED", message=failure_line(log_path, exit_code))
            return
        for name, spec in task.outputs.items():
            path = self.store.outputs_dir(run) / name
            try:
                if not path.exists():
                    raise ParameterError(f"output {name}: missing")
                decode(type_spec(spec), path)
            except (ParameterError, ValueError) as error:
                message = str(error) if isinstance(error, ParameterError) else f"output {name}: {error}"
                self.store.update(run, state="FAILED", message=message)
                return
        self.store.update(run, state="FINISHED", message=None)
