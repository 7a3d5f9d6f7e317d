"""The local App Engine's state on disk, and how its runner starts a task image."""
from __future__ import annotations

import os
from pathlib import Path

from cyseg.server.task_runner import container_command
from cyseg.server.task_store import TaskStore
from cyseg.task.descriptor import DESCRIPTOR_PATH


def test_tasks_and_runs_survive_a_restart_and_a_running_run_fails(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    task = store.register(DESCRIPTOR_PATH.read_bytes())
    first, second = store.create_run(task), store.create_run(task)
    store.update(first, state="RUNNING")
    store.update(second, state="PROVISIONED", provisioned=["image"])
    again = TaskStore(tmp_path)
    assert [t.id for t in again.tasks()] == [task.id] and again.find(task.namespace, task.version) == task
    assert {r.id for r in again.runs()} == {first.id, second.id}
    assert again.run(first.id).state == "FAILED" and "stopped" in again.run(first.id).message
    assert (again.run(second.id).state, again.run(second.id).provisioned) == ("PROVISIONED", ["image"])
    assert again.run("no-such-run") is None and again.task("no-such-task") is None


def test_a_task_image_runs_with_the_runs_folders_and_linked_slides_mounted(tmp_path: Path) -> None:
    inputs, outputs, slide = tmp_path / "inputs", tmp_path / "outputs", tmp_path / "slides" / "a.svs"
    inputs.mkdir()
    slide.parent.mkdir()
    slide.write_bytes(b"")
    (inputs / "image").symlink_to(slide)
    (inputs / "threshold").write_text("0.5")
    command = container_command("org/cyseg/nuclei/segmentation:0.1.0", inputs, outputs)
    assert command[:6] == ["docker", "run", "--rm", "--network", "none", "--user"]
    assert command[6] == f"{os.getuid()}:{os.getgid()}"
    mounts = [command[i + 1] for i, word in enumerate(command) if word == "-v"]
    assert mounts == [f"{inputs}:/inputs:ro", f"{outputs}:/outputs", f"{slide}:{slide}:ro"]
    assert command[-1] == "org/cyseg/nuclei/segmentation:0.1.0"  # its own entry point, no command
