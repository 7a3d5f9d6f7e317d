"""Uploading objects as annotations with their score and class: in bulk, concurrently, and never twice.

Idempotence. A run is identified by its *result key* (model file digest + every parameter that
decides which objects are found, see `JobConfig.result_key`). Each image keeps, as a property
`cyseg.run.<result key>` (the *run record*), the ids of the job users that uploaded objects for that
key. Before uploading to an image, the uploader reads the run record, lists those users'
annotations in the image, and skips every new object whose centroid lies within
`DUPLICATE_DISTANCE` pixels of one of theirs. So running the same job again (a new job user, same
key), resuming it (same user), or a retried request whose first answer was lost never adds an
object twice, while a run with other settings adds its own objects. Centroids are compared rather
than outlines because a server may store an outline slightly differently than it was sent.

Requests, and what is checked before a retry (a POST whose answer was lost may have been stored):

1. the run record: read, then created (POST) or extended (PUT) once; before a retry it is read
   again, and nothing is sent when it already names this user;
2. annotations: `POST annotation.json` with an array of `CHUNK_SIZE` annotations (Cytomine core
   stores an array in one request and answers with a message naming the new ids in order, see
   `added_ids`), `WORKERS` chunks at a time; before a retry, this user's annotations in the image
   are listed and the chunk keeps only the objects not among them;
3. properties (`cyseg.score`, `cyseg.class`, when `SCORE_PROPERTIES` is on): the ids of the
   annotations are matched by centroid among those of earlier runs (listed before the upload) and
   those the answers named (their class read from one of them); only when some object is in
   neither (an answer lost, or not understood), this user's annotations in the image are listed
   again. Which of them already have each key comes from Cytomine's
   `user/{user}/imageinstance/{image}/annotationposition.json?key=` (one request per user and key);
   the missing ones are sent `PROPERTY_CHUNK` annotations per request as one array on
   `domain/{class}/{id}/property.json`, each property naming its own annotation (Cytomine core's
   bulk form), `WORKERS` requests at a time; before a retry, which ones are present is read again.
   Properties are completed for every object of the run, the ones an earlier (interrupted) run
   stored included, so a rerun completes what a killed run left without them.

Retries are bounded (`ATTEMPTS` per request, back-off capped, see `connection.call`) and run
concurrently with the other requests, so faults cost a few back-offs, not one per object.
`on_progress(done, total)` is told, in objects, after each request.

The job's result files (`cyseg.pipeline.results`) are attached the same way, once: `attach`.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import requests
import shapely
from cytomine import Cytomine
from cytomine.models import (Annotation, AnnotationCollection, AttachedFile, AttachedFileCollection, ImageInstance,
                             Property, PropertyCollection)
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree
from shapely.geometry.base import BaseGeometry

from cyseg.cytomine.connection import ServerError, call, host
from cyseg.pipeline.objects import DetectedObject
from cyseg.pipeline.results import DUPLICATE, NOT_UPLOADED, UPLOADED

log = logging.getLogger(__name__)

CHUNK_SIZE = 500  # annotations per request
PROPERTY_CHUNK = 1000  # annotations whose properties go in one request (two properties each)
WORKERS = 4  # requests in flight at once
ATTEMPTS = 8
BACKOFF_S = 0.1  # after the first failure; doubled after each, capped (connection.MAX_BACKOFF_S)
DUPLICATE_DISTANCE = 2.0  # full-resolution pixels between centroids
WKT_DECIMALS = 2
LISTING_PAGE = 5000  # annotations per request when listing what earlier runs uploaded
MANIFEST_PREFIX = "cyseg.run."
SCORE_PROPERTIES = True  # attach cyseg.score and cyseg.class to every annotation
SCORE_KEY, CLASS_KEY = "cyseg.score", "cyseg.class"
SCORE_DECIMALS = 4
ADDED = re.compile(r"\w+ ([\d,]+) added")  # the message of Cytomine core's answer to a bulk creation

Progress = Callable[[int, int], None]
T = TypeVar("T")


class CentroidIndex:
    """Points, to ask quickly which of many positions lie within `distance` of one of them (safe to use from
    several threads)."""

    def __init__(self, distance: float = DUPLICATE_DISTANCE) -> None:
        self.distance = distance
        self.parts: list[np.ndarray] = []
        self.tree: cKDTree | None = None  # of the points added so far, built when first asked
        self.lock = threading.Lock()

    def __len__(self) -> int:
        with self.lock:
            return sum(len(part) for part in self.parts)

    def add(self, points: ArrayLike) -> None:
        """Index these (x, y) points."""
        with self.lock:
            self.parts.append(np.asarray(points, dtype=float).reshape(-1, 2))
            self.tree = None

    def near(self, points: ArrayLike) -> np.ndarray:
        """For each (x, y) point, whether an indexed point lies within `distance` of it."""
        with self.lock:
            if self.tree is None:
                self.tree = cKDTree(np.concatenate(self.parts) if self.parts else np.empty((0, 2)))
            tree = self.tree
        return tree.query(np.asarray(points, dtype=float).reshape(-1, 2))[0] <= self.distance


def centroids(geometries: Sequence[BaseGeometry] | np.ndarray) -> np.ndarray:
    """The (x, y) centroid of each geometry, computed together."""
    points = shapely.centroid(np.asarray(geometries, dtype=object))
    return np.column_stack([shapely.get_x(points), shapely.get_y(points)])


@dataclass
class UploadReport:
    """What became of each object of one upload (statuses in the objects' order)."""

    statuses: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return self.statuses.count(status)


class UploadError(ServerError):
    """An upload that stopped part-way; `report` tells which objects made it."""

    def __init__(self, message: str, report: UploadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class StoredAnnotation:
    """An annotation as listed: its centroid (Cytomine coordinates), its user and its class name."""

    x: float
    y: float
    user: int
    class_name: str


def added_ids(answer: Any) -> list[int]:
    """The ids an answer to a bulk creation names, in the order of the objects sent: Cytomine core's
    `ModelService.addMultiple` answers `{"message": "algoannotations 12,13 added"}`; empty for any other answer."""
    match = ADDED.fullmatch(str(answer.get("message"))) if isinstance(answer, dict) else None
    return [int(ident) for ident in match.group(1).split(",")] if match else []


def stored_annotations(image_id: int, user_ids: Iterable[int]) -> dict[int, StoredAnnotation]:
    """Id -> the annotations these users made in an image, read page by page."""
    users = sorted(set(user_ids))
    found: dict[int, StoredAnnotation] = {}
    while users:
        offset = len(found)
        page = call(f"listing the annotations of image {image_id}",
                    lambda: AnnotationCollection(image=image_id, users=users, includeAlgo=True, showWKT=True,
                                                 showMeta=True, showGIS=False, showTerm=False, max=LISTING_PAGE,
                                                 offset=offset).fetch(),
                    attempts=ATTEMPTS, backoff_s=BACKOFF_S)
        points = centroids(shapely.from_wkt([annotation.location for annotation in page]))
        for annotation, (x, y) in zip(page, points.tolist()):
            found[annotation.id] = StoredAnnotation(x, y, annotation.user, annotation.class_)
        if len(page) < LISTING_PAGE:
            break
    return found


def keyed_annotations(image_id: int, user_ids: Iterable[int], key: str) -> set[int]:
    """The ids of these users' annotations in the image that have the property `key`."""
    found: set[int] = set()
    for user in sorted(set(user_ids)):
        answer = call(f"reading which annotations of user {user} in image {image_id} have {key}",
                      lambda: Cytomine.get_instance().get(
                          f"user/{user}/imageinstance/{image_id}/annotationposition.json", {"key": key}),
                      attempts=ATTEMPTS, backoff_s=BACKOFF_S)
        found.update(int(item["idAnnotation"]) for item in answer["collection"])
    return found


class ImageUploader:
    """Uploads the objects of one image for one run (see the module's notes)."""

    def __init__(self, image: ImageInstance, project_id: int, user_id: int, result_key: str,
                 term_id: int | None, chunk_size: int | None = None, *,
                 class_terms: Mapping[int, int] | None = None, class_names: Sequence[str] = (),
                 on_progress: Progress | None = None) -> None:
        """`class_terms`: class label -> term; objects of other classes get `term_id` (may be None).
        `class_names`: the model's classes, indexed by label (for the `cyseg.class` property)."""
        self.image = image
        self.project_id = project_id
        self.user_id = user_id
        self.term_id = term_id
        self.class_terms = dict(class_terms or {})
        self.class_names = list(class_names)
        self.chunk_size = chunk_size or CHUNK_SIZE
        self.manifest_key = MANIFEST_PREFIX + result_key
        self.on_progress = on_progress
        self.index = CentroidIndex()
        self.users: set[int] = {user_id}
        self.stored: dict[int, StoredAnnotation] = {}
        self.created: dict[int, tuple[float, float]] = {}  # id -> centroid, of what this run's answers named
        self.lock = threading.Lock()  # over `created`
        self.prepared = False

    # --- the run record ---------------------------------------------------------------------------
    def _run_record(self) -> tuple[Property | None, set[int]]:
        """The image's run record for this key and the users it names (several records: all their users)."""
        properties = call(f"reading the properties of image {self.image.id}",
                          lambda: PropertyCollection(self.image).fetch(), attempts=ATTEMPTS, backoff_s=BACKOFF_S)
        records = [p for p in properties if p.key == self.manifest_key]
        users = {int(u) for p in records for u in str(p.value or "").split(",") if u.strip()}
        return (records[0] if records else None), users

    def _record_run(self) -> set[int]:
        """Name this user in the run record (once, whatever answers are lost); the users it names."""
        record, users = self._run_record()

        def save() -> bool:
            if self.user_id in users:
                return True
            value = ",".join(str(u) for u in sorted(users | {self.user_id}))
            if record is None:
                return Property(self.image, key=self.manifest_key, value=value).save()
            return record.update(value=value)

        def read_again() -> None:
            nonlocal record, users
            record, users = self._run_record()

        call(f"recording this run in the properties of image {self.image.id}", save, attempts=ATTEMPTS,
             backoff_s=BACKOFF_S, before_retry=read_again)
        return users | {self.user_id}

    def prepare(self) -> None:
        """Index the objects earlier runs with the same key uploaded, and record this user as an
        uploader for the key (before anything is sent, so an interrupted upload is found again)."""
        self.users = self._record_run()
        self.stored = stored_annotations(self.image.id, self.users)
        self.index.add([(annotation.x, annotation.y) for annotation in self.stored.values()])
        log.info("image %s: %d objects already uploaded by earlier runs with the same settings",
                 self.image.id, len(self.index))
        self.prepared = True

    # --- annotations ------------------------------------------------------------------------------
    def _annotations_json(self, objects: list[DetectedObject]) -> str:
        """The JSON array of these objects' annotations (their outlines written as WKT together)."""
        locations = shapely.to_wkt(np.asarray([obj.polygon for obj in objects], dtype=object),
                                   rounding_precision=WKT_DECIMALS, trim=True).tolist()
        items = []
        for obj, location in zip(objects, locations):
            item = {"location": location, "image": self.image.id, "project": self.project_id}
            if (term := self.class_terms.get(obj.label, self.term_id)) is not None:
                item["term"] = [term]
            items.append(item)
        return json.dumps(items)

    def _send(self, chunk: list[DetectedObject], points: np.ndarray) -> None:
        """Send one chunk (`points`: the objects' centroids); before a retry, drop the objects the server did
        store (a lost answer)."""
        pending = np.arange(len(chunk))

        def send() -> Any:
            if not pending.size:
                return True
            answer = Cytomine.get_instance().post("annotation.json",
                                                  self._annotations_json([chunk[i] for i in pending]))
            if len(ids := added_ids(answer)) == len(pending):
                with self.lock:
                    self.created.update(zip(ids, map(tuple, points[pending].tolist())))
            return answer

        def forget_stored() -> None:
            nonlocal pending
            self.index.add([(a.x, a.y) for a in stored_annotations(self.image.id, [self.user_id]).values()])
            pending = pending[~self.index.near(points[pending])]

        call(f"uploading {len(chunk)} annotations to image {self.image.id}", send, attempts=ATTEMPTS,
             backoff_s=BACKOFF_S, before_retry=forget_stored)
        self.index.add(points)

    # --- properties -------------------------------------------------------------------------------
    def _properties(self, obj: DetectedObject) -> dict[str, str]:
        """The properties of an object's annotation: its score and class name, when known."""
        properties = {}
        if obj.score is not None:
            properties[SCORE_KEY] = f"{obj.score:.{SCORE_DECIMALS}f}"
        if 0 <= obj.label < len(self.class_names):
            properties[CLASS_KEY] = self.class_names[obj.label]
        return properties

    def _annotation_ids(self, points: np.ndarray) -> list[int]:
        """The id of the annotation at each centroid: an earlier run's, or one of this run's, which the answers
        to their uploads named (this user's annotations are listed only when some centroid has none)."""
        if self.created:
            class_name = self._class_of(next(iter(self.created)))
            self.stored.update((ident, StoredAnnotation(x, y, self.user_id, class_name))
                               for ident, (x, y) in self.created.items())
        nearest, distances = self._nearest(points)
        if (distances > DUPLICATE_DISTANCE).any():
            self.stored.update(stored_annotations(self.image.id, [self.user_id]))
            nearest, distances = self._nearest(points)
        for point, distance in zip(points.tolist(), distances.tolist()):
            if distance > DUPLICATE_DISTANCE:
                raise ServerError(f"Cytomine server {host()}: the annotation uploaded at {tuple(point)} is missing "
                                  f"from image {self.image.id}")
        ids = list(self.stored)
        return [ids[i] for i in nearest.tolist()]

    def _nearest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each centroid, the position in `stored` of the nearest annotation and how far it lies."""
        stored = np.array([(a.x, a.y) for a in self.stored.values()]).reshape(-1, 2)
        distances, nearest = cKDTree(stored).query(points)
        return nearest, distances

    def _class_of(self, annotation_id: int) -> str:
        """The class of one annotation (UserAnnotation or AlgoAnnotation), as the server names it."""
        return call(f"reading annotation {annotation_id}", lambda: Annotation().fetch(annotation_id),
                    attempts=ATTEMPTS, backoff_s=BACKOFF_S).class_

    def _missing(self, wanted: dict[int, dict[str, str]]) -> dict[int, dict[str, str]]:
        """`wanted` (annotation id -> properties) less the properties the server already has."""
        keys = {key for properties in wanted.values() for key in properties}
        users = {self.stored[i].user for i in wanted}
        present = {key: keyed_annotations(self.image.id, users, key) for key in sorted(keys)}
        missing = {i: {k: v for k, v in properties.items() if i not in present[k]} for i, properties in wanted.items()}
        return {i: properties for i, properties in missing.items() if properties}

    def _send_properties(self, chunk: dict[int, dict[str, str]]) -> None:
        """One request for the properties of these annotations; before a retry, drop those stored."""
        pending = dict(chunk)

        def send() -> bool:
            if not pending:
                return True
            first = next(iter(pending))
            items = [{"domainClassName": self.stored[i].class_name, "domainIdent": i, "key": key, "value": value}
                     for i, properties in pending.items() for key, value in properties.items()]
            return Cytomine.get_instance().post(
                f"domain/{self.stored[first].class_name}/{first}/property.json", json.dumps(items))

        def forget_stored() -> None:
            remaining = self._missing(pending)
            pending.clear()
            pending.update(remaining)

        call(f"adding the properties of {len(chunk)} annotations in image {self.image.id}", send,
             attempts=ATTEMPTS, backoff_s=BACKOFF_S, before_retry=forget_stored)

    # --- one upload -------------------------------------------------------------------------------
    def upload(self, objects: list[DetectedObject]) -> UploadReport:
        """Upload the objects not uploaded yet and complete the properties of all of them; UploadError
        (with the statuses so far) if the server fails."""
        if not self.prepared:
            self.prepare()
        points = centroids([obj.polygon for obj in objects])
        duplicate = self.index.near(points)
        report = UploadReport([DUPLICATE if found else NOT_UPLOADED for found in duplicate.tolist()])
        fresh = np.flatnonzero(~duplicate).tolist()
        wanted = [(position, properties) for position, obj in enumerate(objects)
                  if SCORE_PROPERTIES and (properties := self._properties(obj))]
        progress = _Progress(len(fresh) + len(wanted), self.on_progress)

        def send(positions: list[int]) -> None:
            self._send([objects[p] for p in positions], points[positions])
            for p in positions:
                report.statuses[p] = UPLOADED
            progress.add(len(positions))

        def send_properties(chunk: dict[int, dict[str, str]]) -> None:
            self._send_properties(chunk)
            progress.add(len(chunk))

        try:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="cyseg-send") as pool:
                _each(pool, send, _chunks(fresh, self.chunk_size))
                if wanted:
                    ids = self._annotation_ids(points[[position for position, _ in wanted]])
                    missing = list(self._missing({i: p for i, (_, p) in zip(ids, wanted)}).items())
                    progress.add(len(wanted) - len(missing))
                    _each(pool, send_properties, map(dict, _chunks(missing, PROPERTY_CHUNK)))
        except ServerError as error:
            raise UploadError(str(error), report) from error
        log.info("image %s: %d objects uploaded, %d already there", self.image.id, report.count(UPLOADED),
                 report.count(DUPLICATE))
        return report


class _Progress:
    """Counts the objects done (uploaded, or their properties completed) and tells `on_progress`."""

    def __init__(self, total: int, on_progress: Progress | None) -> None:
        self.total, self.done, self.on_progress = total, 0, on_progress
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            done = self.done
        if self.on_progress is not None and count:
            self.on_progress(done, self.total)


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _each(pool: ThreadPoolExecutor, function: Callable[[T], None], items: Iterable[T]) -> None:
    """`function(item)` for every item, on the pool's threads; after a failure, the items not started yet
    are skipped, and the failure is raised once those in flight have ended (so none is left half-done)."""
    failed = threading.Event()

    def guarded(item: T) -> None:
        if failed.is_set():
            return
        try:
            function(item)
        except BaseException:
            failed.set()
            raise

    futures = [pool.submit(guarded, item) for item in items]
    wait(futures)
    for future in futures:
        if future.exception() is not None:
            raise future.exception()


def attach(job: Any, path: Path) -> None:
    """Attach a file to the job, once: before a retry the job's files are listed, and a file of that name
    already there (the answer to an upload that did arrive was lost) is not sent again."""
    stored = False

    def upload() -> bool:
        return stored or AttachedFile(job, file=str(path), filename=path.name).upload()

    def check() -> None:
        nonlocal stored
        try:
            stored = any(f.filename == path.name for f in AttachedFileCollection(job).fetch() or [])
        except requests.RequestException as error:
            log.warning("cannot list the files of job %s before retrying (%s)", job.id, error)

    call(f"attaching {path.name} to job {job.id}", upload, attempts=ATTEMPTS, backoff_s=BACKOFF_S, before_retry=check)
    log.info("attached %s to job %s", path.name, job.id)
