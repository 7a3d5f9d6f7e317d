"""Software, its parameters, jobs (with their own user and keys) and job parameters."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from cyseg.server import cytomine_json as cj
from cyseg.server.errors import BadRequest
from cyseg.server.records import Job, User
from cyseg.server.routes.deps import (as_id, authenticated, get_store, json_body, may_run, require_human,
                                      text_value)
from cyseg.server.store import Store

router = APIRouter()

JOB_STATUSES = range(len(cj.JOB_STATUS_NAMES))


def software_json(store: Store, software_id: int) -> cj.JsonObject:
    software = store.software(software_id)
    return cj.software(software, store.software_parameters(software.id), store.jobs(software=software.id))


def job_json(store: Store, job: Job) -> cj.JsonObject:
    parameters = {p.id: p for p in store.software_parameters(job.software)}
    values = [cj.job_parameter(v, parameters[v.software_parameter]) for v in store.job_parameters(job.id)]
    return cj.job(job, store.software(job.software).name, store.user(job.user_job).username, values)


@router.get("/software.json")
@router.get("/project/{project_id}/software.json")
def list_software(project_id: int | None = None, store: Store = Depends(get_store)) -> cj.JsonObject:
    if project_id is not None:
        store.project(project_id)
    return cj.collection([software_json(store, s.id) for s in store.softwares()])


@router.get("/software/{software_id}.json")
def get_software(software_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return software_json(store, software_id)


@router.get("/software/{software_id}/software_parameter.json")
def software_parameters(software_id: int, with_set_by_server: bool = Query(False, alias="withSetByServer"),
                        store: Store = Depends(get_store)) -> cj.JsonObject:
    parameters = store.software_parameters(store.software(software_id).id, with_set_by_server)
    return cj.collection([cj.software_parameter(p) for p in parameters])


@router.get("/software_parameter/{parameter_id}.json")
def get_software_parameter(parameter_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.software_parameter(store.software_parameter(parameter_id))


@router.get("/job.json")
def list_jobs(project: int | None = None, software: int | None = None,
              store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection([job_json(store, j) for j in store.jobs(project, software)])


@router.post("/job.json")
def create_job(payload: Any = Depends(json_body), user: User = Depends(authenticated),
               store: Store = Depends(get_store)) -> cj.JsonObject:
    """A new job of `software` in `project`, with a new user (see `userJob`) whose keys it runs with."""
    require_human(user, "create jobs")
    if not isinstance(payload, dict):
        raise BadRequest("a job is a JSON object with 'project' and 'software'")
    job, _ = store.create_job(as_id(payload.get("project"), "project"), as_id(payload.get("software"), "software"),
                              user.id)
    return cj.created("Job", job_json(store, job))


@router.get("/job/{job_id}.json")
def get_job(job_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return job_json(store, store.job(job_id))


def _status(value: Any, current: int) -> int:
    if value is None:
        return current
    if isinstance(value, bool) or not isinstance(value, int) or value not in JOB_STATUSES:
        raise BadRequest(f"'status' must be a job status 0..{len(JOB_STATUSES) - 1}, got {value!r}")
    return value


def _progress(value: Any, current: int) -> int:
    if value is None:
        return current
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise BadRequest(f"'progress' must be a number in 0..100, got {value!r}")
    return round(value)


@router.put("/job/{job_id}.json")
def update_job(job_id: int, payload: Any = Depends(json_body), user: User = Depends(authenticated),
               store: Store = Depends(get_store)) -> cj.JsonObject:
    """Status, status comment and progress; other fields of the body are ignored."""
    job = store.job(job_id)
    may_run(user, job)
    if not isinstance(payload, dict):
        raise BadRequest("a job update is a JSON object")
    comment = payload.get("statusComment", job.status_comment)
    updated = store.update_job(job.id, _status(payload.get("status"), job.status),
                               None if comment is None else str(comment),
                               _progress(payload.get("progress"), job.progress))
    return cj.created("Job", job_json(store, updated))


@router.get("/job/{job_id}/parameter.json")
def job_parameters(job_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection(job_json(store, store.job(job_id))["jobParameters"])


@router.get("/jobparameter/{parameter_id}.json")
def get_job_parameter(parameter_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    value = store.job_parameter(parameter_id)
    return cj.job_parameter(value, store.software_parameter(value.software_parameter))


@router.post("/jobparameter.json")
def create_job_parameters(payload: Any = Depends(json_body), user: User = Depends(authenticated),
                          store: Store = Depends(get_store)) -> cj.JsonObject:
    """One job parameter value (object) or several (array), all stored or none."""
    single = isinstance(payload, dict)
    items = [payload] if single else payload
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest("expected a job parameter object or an array of them")
    triples = []
    for item in items:
        job = store.job(as_id(item.get("job"), "job"))
        may_run(user, job)
        parameter = store.software_parameter(as_id(item.get("softwareParameter"), "softwareParameter"))
        if parameter.software != job.software:
            raise BadRequest(f"software parameter {parameter.id} does not belong to the software of job {job.id}")
        triples.append((job.id, parameter.id, text_value(item.get("value"))))
    stored = store.add_job_parameters(triples)
    bodies = [cj.job_parameter(v, store.software_parameter(v.software_parameter)) for v in stored]
    if single:
        return cj.created("JobParameter", bodies[0])
    return cj.collection(bodies) | {"success": True}
