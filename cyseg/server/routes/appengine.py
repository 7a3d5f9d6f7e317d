"""A local App Engine: the part of Cytomine's App Engine API (app-engine-openapi.v0.1.0.yml) that a
task's life uses, under /app-engine/v1.

Register a task (upload a bundle zip holding its descriptor.yml; cyseg's own task is registered at
start), create a run, provision its inputs (JSON values, an image as the request body, or the id of
one of this server's images), start it, follow its state (CREATED -> PROVISIONED -> QUEUING ->
QUEUED -> RUNNING -> FINISHED or FAILED) and fetch its outputs, each or as a zip. Requests carry
`Authorization: Bearer <the admin's private key>`. Runs execute cyseg's task from this checkout in
a subprocess (`cyseg.server.task_runner`), or in the container of the built task image named by
CYSEG_TASK_IMAGE, not the image of an uploaded bundle, so only tasks of cyseg's namespace are accepted. Errors are the App Engine's `{"errorCode": "APPE-...", "message", "details"}`.

Extension: a run's JSON has a `message` (why it FAILED) beside the spec's fields.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import yaml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from PIL import Image as PilImage

from cyseg.errors import CysegError
from cyseg.server.bootstrap import ADMIN_USERNAME
from cyseg.server.errors import ApiError, NotFound
from cyseg.server.routes.deps import get_store
from cyseg.server.store import Store
from cyseg.server.task_runner import TASK_IMAGE_VARIABLE, TaskRunner
from cyseg.server.task_store import DuplicateTask, Run, Task, TaskStore
from cyseg.task.descriptor import DESCRIPTOR_PATH, load_descriptor, type_spec
from cyseg.task.io import check, decode, encode

PREFIX = "/app-engine/v1"
DESCRIPTOR_NAME = "descriptor.yml"
PICTURE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff"}


class AppEngineError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def body(self) -> dict[str, Any]:
        return {"errorCode": f"APPE-{self.code}", "message": self.message, "details": self.details}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class AppEngineRoute(APIRoute):
    """Errors in the App Engine's shape (the rest of the server answers in Cytomine's)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AppEngineError as error:
                return error.response()
            except ApiError as error:
                return AppEngineError(error.status, type(error).__name__.lower(), error.message).response()
        return route


def get_tasks(request: Request) -> TaskStore:
    return request.app.state.task_store


def get_runner(request: Request) -> TaskRunner:
    return request.app.state.task_runner


def bearer(request: Request, store: Store = Depends(get_store)) -> None:
    """401 unless the request carries the admin's private key as its bearer token."""
    admin = store.user_by_name(ADMIN_USERNAME)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or admin is None or token.strip() != admin.private_key:
        raise AppEngineError(401, "unauthorized", "send Authorization: Bearer <the admin's private key>")


router = APIRouter(prefix=PREFIX, route_class=AppEngineRoute, dependencies=[Depends(bearer)],
                   include_in_schema=False)


def install(app: FastAPI, root: Path) -> None:
    """Serve the local App Engine with its state under `root`, cyseg's own task registered."""
    tasks = TaskStore(root)
    own = load_descriptor()
    if tasks.find(own["namespace"], own["version"]) is None:
        tasks.register(DESCRIPTOR_PATH.read_bytes())
    app.state.task_store = tasks
    app.state.task_runner = TaskRunner(tasks, image=os.environ.get(TASK_IMAGE_VARIABLE) or None)
    app.include_router(router)


def describe_task(task: Task) -> dict[str, Any]:
    d = task.descriptor
    return {"id": task.id, "name": d["name"], "namespace": d["namespace"], "version": d["version"],
            "description": d.get("description", ""), "authors": d["authors"]}


def describe_run(tasks: TaskStore, run: Run) -> dict[str, Any]:
    described = {"task": describe_task(tasks.task(run.task_id)), "id": run.id, "state": run.state,
                 "created_at": run.created_at, "updated_at": run.updated_at}
    return described | ({"message": run.message} if run.message else {})


def _task(tasks: TaskStore, task_id: str) -> Task:
    task = tasks.task(task_id)
    if task is None:
        raise AppEngineError(404, "task-not-found", f"task {task_id} not found")
    return task


def _task_by(tasks: TaskStore, namespace: str, version: str) -> Task:
    task = tasks.find(namespace, version)
    if task is None:
        raise AppEngineError(404, "task-not-found", f"task {namespace} {version} not found")
    return task


def _run(tasks: TaskStore, run_id: str) -> Run:
    run = tasks.run(run_id)
    if run is None:
        raise AppEngineError(404, "run-not-found", f"task run {run_id} not found")
    return run


@router.post("/tasks")
async def upload_task(request: Request, tasks: TaskStore = Depends(get_tasks)) -> dict[str, Any]:
    """Register the task of a bundle (a zip with descriptor.yml at its root; its image tar is not run here)."""
    form = await request.form()
    bundle = form.get("task")
    if bundle is None or isinstance(bundle, str):
        raise AppEngineError(400, "task-bundle-missing", "send the task bundle (a zip) as the form field 'task'")
    try:
        with zipfile.ZipFile(io.BytesIO(await bundle.read())) as archive:
            text = archive.read(DESCRIPTOR_NAME)
    except (zipfile.BadZipFile, KeyError) as error:
        raise AppEngineError(400, "task-bundle-invalid", f"the bundle is not a zip with {DESCRIPTOR_NAME}: {error}")
    try:
        namespace = (yaml.safe_load(text) or {}).get("namespace")
    except (yaml.YAMLError, AttributeError):
        namespace = None
    own = load_descriptor()["namespace"]
    if namespace is not None and namespace != own:
        raise AppEngineError(400, "task-not-runnable", f"this local App Engine runs cyseg's task ({own}) from its "
                                                       f"own code, not {namespace}")
    try:
        return describe_task(tasks.register(text))
    except DuplicateTask as error:
        raise AppEngineError(409, "task-exists", str(error))
    except CysegError as error:
        raise AppEngineError(400, "task-descriptor-invalid", str(error))


@router.get("/tasks")
def list_tasks(tasks: TaskStore = Depends(get_tasks)) -> list[dict[str, Any]]:
    return [describe_task(task) for task in tasks.tasks()]


@router.get("/tasks/{task_id}")
def get_task(task_id: str, tasks: TaskStore = Depends(get_tasks)) -> dict[str, Any]:
    return describe_task(_task(tasks, task_id))


@router.get("/tasks/{task_id}/descriptor.yml")
def get_descriptor(task_id: str, tasks: TaskStore = Depends(get_tasks)) -> FileResponse:
    return FileResponse(tasks.descriptor_path(_task(tasks, task_id)), media_type="application/yaml")


@router.get("/tasks/{namespace}/{version}")
def get_task_by_version(namespace: str, version: str, tasks: TaskStore = Depends(get_tasks)) -> dict[str, Any]:
    return describe_task(_task_by(tasks, namespace, version))


@router.get("/tasks/{namespace}/{version}/descriptor.yml")
def get_descriptor_by_version(namespace: str, version: str, tasks: TaskStore = Depends(get_tasks)) -> FileResponse:
    return FileResponse(tasks.descriptor_path(_task_by(tasks, namespace, version)), media_type="application/yaml")


@router.post("/tasks/{task_id}/runs")
def create_run(task_id: str, tasks: TaskStore = Depends(get_tasks)) -> dict[str, Any]:
    return describe_run(tasks, tasks.create_run(_task(tasks, task_id)))


@router.post("/tasks/{namespace}/{version}/runs")
def create_run_by_version(namespace: str, version: str, tasks: TaskStore = Depends(get_tasks)) -> dict[str, Any]:
    return describe_run(tasks, tasks.create_run(_task_by(tasks, namespace, version)))


def _provision_error(name: str, message: str, status: int = 400,
                     code: str = "task-run-invalid-input") -> AppEngineError:
    return AppEngineError(status, code, f"input {name}: {message}", {"param_name": name, "description": message})


def _provisionable(tasks: TaskStore, run: Run) -> Task:
    if run.state not in ("CREATED", "PROVISIONED"):
        raise AppEngineError(400, "task-run-not-provisionable", f"task run {run.id} is {run.state}: its inputs "
                                                                f"cannot change any more")
    return tasks.task(run.task_id)


def _staged(task: Task, images: Store, name: str, value: Any = None,
           data: bytes | None = None) -> Callable[[Path], None]:
    """Check one input (a JSON value, or an image's bytes); what writes it to its file. An image's value may
    be the id of one of this server's images (linked, not copied): 404 when there is no such image."""
    if name not in task.inputs:
        raise _provision_error(name, f"not an input of {task.namespace} (its inputs: {', '.join(task.inputs)})")
    kind = type_spec(task.inputs[name])
    if kind["id"] != "image":
        if data is not None:
            raise _provision_error(name, f'send the value as JSON: {{"param_name": "{name}", "value": ...}}')
        try:
            checked = check(kind, value)
        except ValueError as error:
            raise _provision_error(name, str(error))
        return lambda target: encode(kind, target, checked)
    if data is not None:
        if not data:
            raise _provision_error(name, "the request body (the image) is empty")
        return lambda target: target.write_bytes(data)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _provision_error(name, "send the image as the request body (image/png, image/jpeg, image/tiff) "
                                     "or the id of one of this server's images as the value")
    try:
        path = images.image(value).path
    except NotFound as error:
        raise _provision_error(name, error.message, 404, "task-run-image-not-found")
    return lambda target: os.symlink(path, target)


def _provision(tasks: TaskStore, run: Run, writers: dict[str, Callable[[Path], None]]) -> None:
    """Write checked inputs (name -> writer) to the run's folder; PROVISIONED once every required input is there."""
    task = tasks.task(run.task_id)
    for name, write in writers.items():
        target = tasks.inputs_dir(run) / name
        tasks.clear(target)
        write(target)
    done = sorted(set(run.provisioned) | set(writers))
    required = {n for n, spec in task.inputs.items() if not spec.get("optional", False)}
    tasks.update(run, provisioned=done, state="PROVISIONED" if required <= set(done) else "CREATED")


def _body_value(body: Any, name: str) -> Any:
    if not isinstance(body, dict) or "value" not in body:
        raise _provision_error(name, 'send {"param_name": ..., "value": ...}')
    if body.get("param_name", name) != name:
        raise _provision_error(name, f"the body names {body.get('param_name')!r}, the path {name!r}")
    return body["value"]


@router.put("/task-runs/{run_id}/input-provisions/{param_name}")
async def provision_one(run_id: str, param_name: str, request: Request, tasks: TaskStore = Depends(get_tasks),
                        images: Store = Depends(get_store)) -> dict[str, Any]:
    run = _run(tasks, run_id)
    task = _provisionable(tasks, run)
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            value = _body_value(json.loads(raw), param_name)
        except json.JSONDecodeError as error:
            raise _provision_error(param_name, f"the body is not JSON: {error}")
        _provision(tasks, run, {param_name: _staged(task, images, param_name, value)})
    else:
        _provision(tasks, run, {param_name: _staged(task, images, param_name, data=raw)})
        value = len(raw)
    return {"param_name": param_name, "value": value, "task_run_id": run.id}


@router.put("/task-runs/{run_id}/input-provisions")
async def provision_batch(run_id: str, request: Request, tasks: TaskStore = Depends(get_tasks),
                          images: Store = Depends(get_store)) -> list[dict[str, Any]]:
    """Every input of the batch, or none: one that is wrong refuses the batch (each error in `details.errors`)."""
    run = _run(tasks, run_id)
    task = _provisionable(tasks, run)
    try:
        body = json.loads(await request.body())
    except json.JSONDecodeError as error:
        raise AppEngineError(400, "task-run-invalid-input", f"the body is not JSON: {error}")
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise AppEngineError(400, "task-run-invalid-input", "send a JSON array of {param_name, value}")
    writers, values, errors = {}, {}, []
    for item in body:
        name = str(item.get("param_name"))
        try:
            values[name] = _body_value(item, name)
            writers[name] = _staged(task, images, name, values[name])
        except AppEngineError as error:
            errors.append(error)
    if errors:
        raise AppEngineError(max(e.status for e in errors), "task-run-invalid-inputs",
                             "; ".join(e.message for e in errors), {"errors": [e.body() for e in errors]})
    _provision(tasks, run, writers)
    return [{"param_name": name, "value": value, "task_run_id": run.id} for name, value in values.items()]


@router.get("/task-runs/{run_id}")
def get_run(run_id: str, tasks: TaskStore = Depends(get_tasks)) -> dict[str, Any]:
    return describe_run(tasks, _run(tasks, run_id))


@router.post("/task-runs/{run_id}/state-actions")
async def state_action(run_id: str, request: Request, tasks: TaskStore = Depends(get_tasks),
                       runner: TaskRunner = Depends(get_runner)) -> dict[str, Any]:
    run = _run(tasks, run_id)
    try:
        desired = json.loads(await request.body() or b"{}").get("desired")
    except (json.JSONDecodeError, AttributeError):
        desired = None
    if desired != "running" or run.state != "PROVISIONED":
        why = (f"the only state action is 'running', not {desired!r}" if desired != "running" else
               f"task run {run.id} is {run.state}: it starts once PROVISIONED (every required input given)")
        raise AppEngineError(403, "task-run-invalid-state", why, {"resource": describe_run(tasks, run)})
    runner.submit(run)
    return {"status": "success", "resource": describe_run(tasks, run)}


def _parameters(tasks: TaskStore, run: Run, specs: dict[str, dict[str, Any]], folder: Path,
                names: list[str]) -> list[dict[str, Any]]:
    """The run's parameters as the spec's typed_task_run_parameter (an image without its value)."""
    listed = []
    for name in names:
        kind = type_spec(specs[name])
        entry = {"param_name": name, "task_run_id": run.id, "type": kind["id"]}
        if kind["id"] != "image":
            entry["value"] = decode(kind, folder / name)
        if kind["id"] == "enumeration":
            entry["enum_values"] = kind["values"]
        listed.append(entry)
    return listed


def _finished(run: Run) -> None:
    if run.state != "FINISHED":
        raise AppEngineError(403, "task-run-not-finished", f"task run {run.id} is {run.state}: outputs come once "
                                                           f"it is FINISHED")


@router.get("/task-runs/{run_id}/inputs")
def get_inputs(run_id: str, tasks: TaskStore = Depends(get_tasks)) -> list[dict[str, Any]]:
    run = _run(tasks, run_id)
    return _parameters(tasks, run, tasks.task(run.task_id).inputs, tasks.inputs_dir(run), run.provisioned)


@router.get("/task-runs/{run_id}/outputs")
def get_outputs(run_id: str, tasks: TaskStore = Depends(get_tasks)) -> list[dict[str, Any]]:
    run = _run(tasks, run_id)
    _finished(run)
    outputs = tasks.task(run.task_id).outputs
    return _parameters(tasks, run, outputs, tasks.outputs_dir(run), list(outputs))


def _file(specs: dict[str, dict[str, Any]], folder: Path, name: str) -> FileResponse:
    path = folder / name
    if name not in specs or not path.exists():
        raise AppEngineError(404, "parameter-not-found", f"no parameter {name} in this run")
    kind = type_spec(specs[name])["id"]
    if kind == "array":
        raise AppEngineError(404, "parameter-is-array", f"{name} is an array (a folder): fetch the zip")
    if kind == "image":
        try:
            with PilImage.open(path) as picture:
                media = PICTURE_TYPES.get(picture.format, "application/octet-stream")
        except (OSError, PilImage.DecompressionBombError):  # a slide format Pillow does not know
            media = "application/octet-stream"
    else:
        media = "application/json" if kind == "geometry" else "text/plain"
    return FileResponse(path, media_type=media)


@router.get("/task-runs/{run_id}/inputs/{param_name}/file")
def get_input_file(run_id: str, param_name: str, tasks: TaskStore = Depends(get_tasks)) -> FileResponse:
    run = _run(tasks, run_id)
    return _file(tasks.task(run.task_id).inputs, tasks.inputs_dir(run), param_name)


@router.get("/task-runs/{run_id}/outputs/{param_name}/file")
def get_output_file(run_id: str, param_name: str, tasks: TaskStore = Depends(get_tasks)) -> FileResponse:
    run = _run(tasks, run_id)
    _finished(run)
    return _file(tasks.task(run.task_id).outputs, tasks.outputs_dir(run), param_name)


def zipped(folder: Path) -> Response:
    """Every file under `folder` (links followed), named relative to it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return Response(buffer.getvalue(), media_type="application/zip")


@router.get("/task-runs/{run_id}/inputs.zip")
def get_inputs_zip(run_id: str, tasks: TaskStore = Depends(get_tasks)) -> Response:
    return zipped(tasks.inputs_dir(_run(tasks, run_id)))


@router.get("/task-runs/{run_id}/outputs.zip")
def get_outputs_zip(run_id: str, tasks: TaskStore = Depends(get_tasks)) -> Response:
    run = _run(tasks, run_id)
    if run.state != "FINISHED":
        raise AppEngineError(400, "task-run-not-finished", f"task run {run.id} is {run.state}: no outputs to zip")
    return zipped(tasks.outputs_dir(run))
