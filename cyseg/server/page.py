"""A small web page for people: projects, images with thumbnails, annotation overlays, jobs, task runs.

No authentication (the server binds to loopback); pictures are drawn server-side with Pillow.
"""
from __future__ import annotations

from collections import Counter
from html import escape

import shapely
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from cyseg.server import render
from cyseg.server.cytomine_json import JOB_STATUS_NAMES
from cyseg.server.geometry import to_raster
from cyseg.server.pictures import thumbnail_picture
from cyseg.server.records import Image, Job, Project
from cyseg.server.routes.appengine import get_tasks
from cyseg.server.routes.deps import get_slides, get_store
from cyseg.server.routes.images import image_response
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import AnnotationQuery, Store
from cyseg.server.task_store import TaskStore

router = APIRouter(include_in_schema=False)

THUMB_SIZE = 256
OVERLAY_SIZE = 1024
HUMAN_COLOR = "#ffd000"
ALGO_COLOR = "#00e5ff"
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
.images { display: flex; flex-wrap: wrap; gap: 1em; }
.image { border: 1px solid #ccc; padding: .5em; width: 260px; text-align: center; font-size: .85em; }
.image img { max-width: 256px; max-height: 256px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .3em .6em; font-size: .9em; }
.bar { width: 120px; height: .8em; background: #eee; display: inline-block; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #3a7; }
.status-FAILED { color: #c00; font-weight: bold; } .status-SUCCESS, .status-FINISHED { color: #080; font-weight: bold; }
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
                        f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _image_card(store: Store, image: Image) -> str:
    human, algo = store.annotation_counts("image", image.id)
    return (f"<div class='image'><a href='/ui/image/{image.id}'><img alt='{escape(image.filename)}' "
            f"src='/ui/image/{image.id}/thumb.png'></a><br>{escape(image.filename)}<br>"
            f"{image.width}&times;{image.height} px &middot; id {image.id}<br>"
            f"{human} annotations, {algo} by jobs</div>")


def _job_row(store: Store, job: Job) -> str:
    status = JOB_STATUS_NAMES[job.status]
    return (f"<tr><td>{job.id}</td><td>{escape(store.software(job.software).name)} #{job.number}</td>"
            f"<td class='status-{escape(status)}'>{escape(status)}</td>"
            f"<td><span class='bar'><span style='width:{job.progress}%'></span></span> {job.progress}%</td>"
            f"<td>{escape(job.status_comment or '')}</td></tr>")


def _project_section(store: Store, project: Project) -> str:
    images = "".join(_image_card(store, i) for i in store.images(project.id)) or "<p>No images.</p>"
    jobs = store.jobs(project.id)
    job_table = ("<table><tr><th>Job</th><th>Software</th><th>Status</th><th>Progress</th><th>Comment</th></tr>"
                 + "".join(_job_row(store, j) for j in reversed(jobs)) + "</table>") if jobs else "<p>No jobs yet.</p>"
    terms = ", ".join(f"<span style='color:{escape(t.color)}'>&#9632;</span> {escape(t.name)} ({t.id})"
                      for t in store.terms(project.ontology))
    return (f"<h2>Project {escape(project.name)} (id {project.id})</h2><p>Terms: {terms or 'none'}</p>"
            f"<div class='images'>{images}</div><h3>Jobs</h3>{job_table}")


def _task_runs_section(tasks: TaskStore) -> str:
    """The local App Engine's task runs, newest first."""
    runs = tasks.runs()
    if not runs:
        return "<h2>Task runs (App Engine)</h2><p>No task runs yet.</p>"
    rows = "".join(f"<tr><td>{escape(run.id)}</td><td>{escape(tasks.task(run.task_id).namespace)} "
                   f"{escape(tasks.task(run.task_id).version)}</td><td class='status-{escape(run.state)}'>"
                   f"{escape(run.state)}</td><td>{escape(run.created_at)}</td><td>{escape(run.updated_at)}</td>"
                   f"<td>{escape(run.message or '')}</td></tr>" for run in reversed(runs))
    return ("<h2>Task runs (App Engine)</h2><table><tr><th>Run</th><th>Task</th><th>State</th><th>Created</th>"
            f"<th>Updated</th><th>Message</th></tr>{rows}</table>")


@router.get("/")
def home(store: Store = Depends(get_store), tasks: TaskStore = Depends(get_tasks)) -> HTMLResponse:
    sections = "".join(_project_section(store, p) for p in store.projects()) or "<p>No projects.</p>"
    return _page("cyseg test server", f"<h1>cyseg test server</h1>{sections}{_task_runs_section(tasks)}")


@router.get("/ui/image/{image_id}")
def image_page(image_id: int, store: Store = Depends(get_store)) -> HTMLResponse:
    image = store.image(image_id)
    annotations, _ = store.annotations(AnnotationQuery(images=(image.id,), include_algo=True))
    by_user = Counter(a.user for a in annotations)
    rows = "".join(f"<tr><td>{escape(store.user(u).username)}</td><td>{n}</td></tr>" for u, n in by_user.items())
    return _page(image.filename, (
        f"<p><a href='/'>&larr; all projects</a></p><h1>{escape(image.filename)}</h1>"
        f"<p>{image.width}&times;{image.height} px, image id {image.id}, "
        f"resolution {image.resolution or '?'} &micro;m/px. Outlines: "
        f"<span style='color:{HUMAN_COLOR}'>people</span>, <span style='color:{ALGO_COLOR}'>jobs</span> "
        f"(or the term colour).</p><img alt='annotations' src='/ui/image/{image.id}/overlay.png'>"
        f"<h2>Annotations</h2><table><tr><th>User</th><th>Count</th></tr>{rows}</table>"))


@router.get("/ui/image/{image_id}/thumb.png")
def image_thumb(image_id: int, store: Store = Depends(get_store),
                slides: SlideLibrary = Depends(get_slides)) -> Response:
    return image_response(thumbnail_picture(slides, store.image(image_id), THUMB_SIZE), "png")


@router.get("/ui/image/{image_id}/overlay.png")
def image_overlay(image_id: int, store: Store = Depends(get_store),
                  slides: SlideLibrary = Depends(get_slides)) -> Response:
    """The thumbnail with every annotation (people's and jobs') outlined."""
    image = store.image(image_id)
    base = thumbnail_picture(slides, image, OVERLAY_SIZE)
    annotations, _ = store.annotations(AnnotationQuery(images=(image.id,), include_algo=True))
    colors = {t.id: t.color for t in store.terms(store.project(image.project).ontology)}
    geometries = to_raster(shapely.from_wkt([a.location for a in annotations]), image.height)
    shapes = [(g, colors.get(a.terms[0], HUMAN_COLOR) if a.terms else ALGO_COLOR if a.algo else HUMAN_COLOR)
              for g, a in zip(geometries, annotations)]
    return image_response(render.outlines(base, shapes, base.width / image.width), "png")
