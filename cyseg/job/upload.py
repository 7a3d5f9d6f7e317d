"""Uploading objects as annotations: in chunks, with retries, and never twice.

Idempotence. A run is identified by its *result key* (model file digest + every parameter that
decides which objects are found, see `JobConfig.result_key`). Each image keeps, as a property
`cyseg.run.<result key>`, the ids of the job users that uploaded objects for that key. Before
uploading to an image, the uploader reads that property, lists those users' annotations in the
image, and skips every new object whose centroid lies within `DUPLICATE_DISTANCE` pixels of one
of theirs. So running the same job again (a new job user, same key), resuming it (same user),
or a retried chunk whose first answer was lost never adds an object twice, while a run with other
settings adds its own objects. Centroids are compared rather than outlines because a server may
store an outline slightly differently (validation, simplification) than it was sent.

Terms and properties. An object's annotation gets the term of its class (`class_terms`, resolved
once per job from the project's ontology), else the job's result term; and, when
`SCORE_PROPERTIES` is on, its score and class name as the properties `cyseg.score` and
`cyseg.class`. The 2.4.1 client (and Cytomine) create annotations without properties and a
property request names one annotation, so this costs one request per object (both properties in
one array), sent by the uploader, which runs in the job's background upload thread: after an
upload's annotations are stored, the uploader lists this user's annotations in the image once to
learn their ids (matched by centroid), then sends each one's properties. Only the objects an upload
stores get properties: a run stopped between the two steps and resumed leaves those without them,
and a property request retried after a lost answer may store them twice.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import requests
import shapely
from cytomine.models import Annotation, AnnotationCollection, ImageInstance, Property, PropertyCollection
from scipy.spatial import cKDTree

from cyseg.job.connection import ServerError, call, describe, host
from cyseg.job.objects import DetectedObject

log = logging.getLogger(__name__)

CHUNK_SIZE = 100
ATTEMPTS = 4
BACKOFF_S = 1.0
DUPLICATE_DISTANCE = 2.0  # full-resolution pixels between centroids
WKT_DECIMALS = 2
LISTING_PAGE = 5000  # annotations per request when listing what earlier runs uploaded
MANIFEST_PREFIX = "cyseg.run."
SCORE_PROPERTIES = True  # attach cyseg.score and cyseg.class to every annotation (one request per object)
SCORE_KEY, CLASS_KEY = "cyseg.score", "cyseg.class"
SCORE_DECIMALS = 4

UPLOADED, DUPLICATE, NOT_UPLOADED = "uploaded", "duplicate", "not uploaded"


class CentroidIndex:
    """Points on a grid of `distance`-sized cells, to ask quickly whether one lies near a position."""

    def __init__(self, distance: float = DUPLICATE_DISTANCE) -> None:
        self.distance = distance
        self.cells: dict[tuple[int, int], list[tuple[float, float]]] = {}

    def __len__(self) -> int:
        return sum(len(points) for points in self.cells.values())

    def _cell(self, x: float, y: float) -> tuple[int, int]:
        return math.floor(x / self.distance), math.floor(y / self.distance)

    def add(self, x: float, y: float) -> None:
        self.cells.setdefault(self._cell(x, y), []).append((x, y))

    def near(self, x: float, y: float) -> bool:
        cx, cy = self._cell(x, y)
        return any(math.hypot(x - px, y - py) <= self.distance
                   for i in (-1, 0, 1) for j in (-1, 0, 1) for px, py in self.cells.get((cx + i, cy + j), ()))


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


def annotation_centroids(image_id: int, user_ids: Iterable[int]) -> dict[int, tuple[float, float]]:
    """Id -> centroid (Cytomine coordinates) of the annotations these users made in an image, read page by page."""
    users = sorted(set(user_ids))
    centroids: dict[int, tuple[float, float]] = {}
    while users:
        offset = len(centroids)
        page = call(f"listing the annotations of image {image_id}",
                    lambda: AnnotationCollection(image=image_id, users=users, includeAlgo=True, showWKT=True,
                                                 showMeta=True, showGIS=False, showTerm=False, max=LISTING_PAGE,
                                                 offset=offset).fetch(),
                    attempts=ATTEMPTS, backoff_s=BACKOFF_S)
        for annotation in page:
            point = shapely.from_wkt(annotation.location).centroid
            centroids[annotation.id] = (point.x, point.y)
        if len(page) < LISTING_PAGE:
            break
    return centroids


class ImageUploader:
    """Uploads the objects of one image for one run (see the module's notes on idempotence)."""

    def __init__(self, image: ImageInstance, project_id: int, user_id: int, result_key: str,
                 term_id: int | None, chunk_size: int | None = None, *,
                 class_terms: Mapping[int, int] | None = None, class_names: Sequence[str] = ()) -> None:
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
        self.index = CentroidIndex()
        self.prepared = False

    def _manifest(self) -> tuple[Property | None, set[int]]:
        properties = call(f"reading the properties of image {self.image.id}",
                          lambda: PropertyCollection(self.image).fetch(), attempts=ATTEMPTS, backoff_s=BACKOFF_S)
        for prop in properties:
            if prop.key == self.manifest_key:
                return prop, {int(u) for u in str(prop.value or "").split(",") if u.strip()}
        return None, set()

    def prepare(self) -> None:
        """Index the objects earlier runs with the same key uploaded, and record this user as an
        uploader for the key (before anything is sent, so an interrupted upload is found again)."""
        prop, users = self._manifest()
        for x, y in annotation_centroids(self.image.id, users | {self.user_id}).values():
            self.index.add(x, y)
        if self.user_id not in users:
            value = ",".join(str(u) for u in sorted(users | {self.user_id}))
            action = f"recording this run in the properties of image {self.image.id}"
            if prop is None:
                call(action, lambda: Property(self.image, key=self.manifest_key, value=value).save(),
                     attempts=ATTEMPTS, backoff_s=BACKOFF_S)
            else:
                call(action, lambda: prop.update(value=value), attempts=ATTEMPTS, backoff_s=BACKOFF_S)
        log.info("image %s: %d objects already uploaded by earlier runs with the same settings",
                 self.image.id, len(self.index))
        self.prepared = True

    def _annotation(self, obj: DetectedObject) -> Annotation:
        location = shapely.to_wkt(obj.polygon, rounding_precision=WKT_DECIMALS, trim=True)
        term = self.class_terms.get(obj.label, self.term_id)
        return Annotation(location=location, id_image=self.image.id, id_project=self.project_id,
                          id_terms=[term] if term is not None else None)

    def _properties(self, obj: DetectedObject) -> dict[str, str]:
        """The properties of an object's annotation: its score and class name, when known."""
        properties = {}
        if obj.score is not None:
            properties[SCORE_KEY] = f"{obj.score:.{SCORE_DECIMALS}f}"
        if 0 <= obj.label < len(self.class_names):
            properties[CLASS_KEY] = self.class_names[obj.label]
        return properties

    def _attach_properties(self, objects: list[DetectedObject]) -> None:
        """Send the properties of these just-uploaded objects, one request per annotation (their ids
        come from one listing of this user's annotations in the image, matched by centroid)."""
        wanted = [(obj, properties) for obj in objects if (properties := self._properties(obj))]
        if not wanted:
            return
        stored = annotation_centroids(self.image.id, [self.user_id])
        ids = list(stored)
        distances, nearest = cKDTree(np.array(list(stored.values())).reshape(-1, 2)).query(
            np.array([obj.centroid for obj, _ in wanted]))
        for (obj, properties), distance, index in zip(wanted, distances.tolist(), nearest.tolist()):
            if distance > DUPLICATE_DISTANCE:
                raise ServerError(f"Cytomine server {host()}: the annotation uploaded at {obj.centroid} is missing "
                                  f"from image {self.image.id}")
            annotation = Annotation()
            annotation.id = ids[index]
            collection = PropertyCollection(annotation)
            collection.extend(Property(annotation, key=key, value=value) for key, value in properties.items())
            call(f"adding properties to annotation {annotation.id}", lambda: collection.save(chunk=None),
                 attempts=ATTEMPTS, backoff_s=BACKOFF_S)

    def _send(self, chunk: list[DetectedObject]) -> None:
        """Send one chunk; between failed attempts, forget what the server did store (a lost answer)."""
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            if attempt > 1:
                for x, y in annotation_centroids(self.image.id, [self.user_id]).values():
                    self.index.add(x, y)
                chunk = [obj for obj in chunk if not self.index.near(*obj.centroid)]
                if not chunk:
                    return
            try:
                collection = AnnotationCollection()
                collection.extend(self._annotation(obj) for obj in chunk)
                if collection.save(chunk=None):
                    return
                reason = "it refused the annotations (see the client log above for the HTTP status)"
            except requests.RequestException as error:
                reason = describe(error)
            if attempt < ATTEMPTS:
                log.warning("uploading %d annotations to image %s failed (attempt %d/%d): %s; retrying",
                            len(chunk), self.image.id, attempt, ATTEMPTS, reason)
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        raise ServerError(f"Cytomine server {host()}: uploading annotations to image {self.image.id} failed "
                          f"after {ATTEMPTS} attempts: {reason}")

    def upload(self, objects: list[DetectedObject]) -> UploadReport:
        """Upload the objects not uploaded yet; UploadError (with the statuses so far) if the server fails."""
        if not self.prepared:
            self.prepare()
        report = UploadReport([NOT_UPLOADED] * len(objects))
        fresh: list[int] = []
        for position, obj in enumerate(objects):
            if self.index.near(*obj.centroid):
                report.statuses[position] = DUPLICATE
            else:
                fresh.append(position)
        for start in range(0, len(fresh), self.chunk_size):
            positions = fresh[start:start + self.chunk_size]
            try:
                self._send([objects[p] for p in positions])
            except ServerError as error:
                raise UploadError(str(error), report) from error
            for p in positions:
                report.statuses[p] = UPLOADED
                self.index.add(*objects[p].centroid)
        if SCORE_PROPERTIES and fresh:
            try:
                self._attach_properties([objects[p] for p in fresh])
            except ServerError as error:
                raise UploadError(str(error), report) from error
        log.info("image %s: %d objects uploaded, %d already there", self.image.id, report.count(UPLOADED),
                 report.count(DUPLICATE))
        return report
