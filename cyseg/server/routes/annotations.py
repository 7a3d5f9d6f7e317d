"""Annotations: create one or many (one transaction per request), list with filters, fetch, delete, crops.

Annotations a job user creates are algo annotations: listings leave them out unless asked with
`includeAlgo=true` or filtered by their user or job, as Cytomine does.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import shapely
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cyseg.server import cytomine_json as cj
from cyseg.server import regions
from cyseg.server.errors import BadRequest, Forbidden
from cyseg.server.geometry import measures, parse_locations
from cyseg.server.pictures import Mode, picture
from cyseg.server.records import (ALGO_ANNOTATION_CLASS, USER_ANNOTATION_CLASS, Annotation, Image,
                                  NewAnnotation, User)
from cyseg.server.routes.deps import as_id, authenticated, get_slides, get_store, get_urls, id_list, json_body
from cyseg.server.routes.images import check_bits, image_response
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import AnnotationQuery, Store

router = APIRouter()


class Validator:
    """Checks annotations of one request, caching the images and ontologies they refer to."""

    def __init__(self, store: Store, user: User) -> None:
        self.store = store
        self.user = user
        self.job_project = store.job(user.job).project if user.job is not None else None
        self._images: dict[int, Image] = {}
        self._terms: dict[int, set[int]] = {}

    def image(self, image_id: int) -> Image:
        if image_id not in self._images:
            self._images[image_id] = self.store.image(image_id)
        return self._images[image_id]

    def _image_of(self, item: dict[str, Any], label: str) -> Image:
        if item.get("image") is None and item.get("slice") is not None:
            return self.image(self.store.image_by_slice(as_id(item["slice"], f"{label}.slice")).id)
        if item.get("image") is None:
            raise BadRequest(f"{label}: 'image' is required")
        return self.image(as_id(item["image"], f"{label}.image"))

    def _terms_of(self, image: Image, value: Any, label: str) -> tuple[int, ...]:
        raw = [] if value is None else value if isinstance(value, list) else [value]
        terms = tuple(dict.fromkeys(as_id(t, f"{label}.term") for t in raw))
        if image.project not in self._terms:
            ontology = self.store.project(image.project).ontology
            self._terms[image.project] = {t.id for t in self.store.terms(ontology)}
        for term in terms:
            if term not in self._terms[image.project]:
                self.store.term(term)  # 404 when it does not exist at all
                raise BadRequest(f"{label}: term {term} is not in the ontology of project {image.project}")
        return terms

    def _check(self, item: Any, label: str) -> tuple[Image, Any, tuple[int, ...]]:
        """The image, location (unchecked) and terms of one annotation."""
        if not isinstance(item, dict):
            raise BadRequest(f"{label}: an annotation is a JSON object")
        image = self._image_of(item, label)
        if item.get("project") is not None and as_id(item["project"], f"{label}.project") != image.project:
            raise BadRequest(f"{label}: image {image.id} is not in project {item['project']}")
        if self.job_project is not None and image.project != self.job_project:
            raise Forbidden(f"{label}: job user {self.user.id} may only annotate project {self.job_project}")
        return image, item.get("location"), self._terms_of(image, item.get("term", item.get("terms")), label)

    def check(self, items: list[Any], labels: list[str]) -> list[NewAnnotation]:
        """The annotations of one request, their geometries parsed and measured together."""
        checked = [self._check(item, label) for item, label in zip(items, labels)]
        images, locations, _ = zip(*checked)
        sizes = measures(parse_locations(locations, images, labels))
        return [NewAnnotation(image, self.user.id, location, terms, m.area, m.perimeter, m.centroid_x, m.centroid_y)
                for (image, location, terms), m in zip(checked, sizes)]


def annotation_json(store: Store, annotation: Annotation, urls: cj.Urls,
                    fields: cj.AnnotationFields = cj.AnnotationFields()) -> cj.JsonObject:
    return cj.annotation(annotation, store.image(annotation.image), urls, fields)


@router.post("/annotation.json")
def create_annotations(payload: Any = Depends(json_body), user: User = Depends(authenticated),
                       store: Store = Depends(get_store), urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    """One annotation (a JSON object), answered with it, or many (a JSON array), answered with their ids only, as
    Cytomine core answers; all stored or none."""
    single = isinstance(payload, dict)
    if not single and not isinstance(payload, list):
        raise BadRequest("expected an annotation object or an array of annotations")
    items = [payload] if single else payload
    labels = ["annotation"] if single else [f"annotation[{index}]" for index in range(len(items))]
    validator = Validator(store, user)
    stored = store.add_annotations(validator.check(items, labels), algo=user.algo) if items else []
    if single:
        return cj.created("Annotation", cj.annotation(stored[0], validator.image(stored[0].image), urls))
    return cj.added(ALGO_ANNOTATION_CLASS if user.algo else USER_ANNOTATION_CLASS, [a.id for a in stored])


@router.get("/annotation.json")
def list_annotations(
        project: int | None = None, image: int | None = None, images: str | None = None,
        user: int | None = None, users: str | None = None, term: int | None = None, terms: str | None = None,
        job: int | None = None, include_algo: bool = Query(False, alias="includeAlgo"),
        show_meta: bool = Query(True, alias="showMeta"), show_wkt: bool = Query(False, alias="showWKT"),
        show_gis: bool = Query(False, alias="showGIS"), show_term: bool = Query(False, alias="showTerm"),
        max: int = 0, offset: int = 0, store: Store = Depends(get_store),
        urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    if max < 0 or offset < 0:
        raise BadRequest("max and offset must be >= 0")
    user_ids = id_list(users, "users") + ((user,) if user is not None else ())
    if job is not None:
        user_ids += (store.job(job).user_job,)
    query = AnnotationQuery(
        project=store.project(project).id if project is not None else None,
        images=id_list(images, "images") + ((store.image(image).id,) if image is not None else ()),
        users=user_ids, terms=id_list(terms, "terms") + ((term,) if term is not None else ()),
        include_algo=include_algo, max=max, offset=offset)
    found, total = store.annotations(query)
    fields = cj.AnnotationFields(meta=show_meta, wkt=show_wkt, gis=show_gis, term=show_term)
    image_cache = {i: store.image(i) for i in {a.image for a in found}}
    return cj.collection([cj.annotation(a, image_cache[a.image], urls, fields) for a in found], total, offset, max)


@router.get("/annotation/{annotation_id}.json")
def get_annotation(annotation_id: int, store: Store = Depends(get_store),
                   urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return annotation_json(store, store.annotation(annotation_id), urls)


@router.delete("/annotation/{annotation_id}.json")
def delete_annotation(annotation_id: int, user: User = Depends(authenticated), store: Store = Depends(get_store),
                      urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    annotation = store.annotation(annotation_id)
    if user.algo and annotation.user != user.id:
        raise Forbidden(f"job user {user.id} may only delete its own annotations")
    store.delete_annotation(annotation_id)
    return cj.created("Annotation", annotation_json(store, annotation, urls)) | {
        "message": f"Annotation {annotation_id} deleted"}


def crop_box(annotation: Annotation, image: Image, increase_area: float) -> tuple[int, int, int, int]:
    """The annotation's bounding box in raster coordinates, scaled about its centre, clipped to the image."""
    if increase_area <= 0:
        raise BadRequest(f"increaseArea must be > 0, got {increase_area}")
    min_x, min_y, max_x, max_y = shapely.from_wkt(annotation.location).bounds
    center_x, center_y = (min_x + max_x) / 2, image.height - (min_y + max_y) / 2
    half_w, half_h = max(max_x - min_x, 1) * increase_area / 2, max(max_y - min_y, 1) * increase_area / 2
    left, top = max(0, math.floor(center_x - half_w)), max(0, math.floor(center_y - half_h))
    right = min(image.width, math.ceil(center_x + half_w))
    bottom = min(image.height, math.ceil(center_y + half_h))
    return left, top, max(1, right - left), max(1, bottom - top)


def picture_route(mode: Mode) -> Callable[..., Response]:
    """The route of one kind of annotation picture (registered below for crop, mask and alphamask)."""
    def annotation_picture(annotation_id: int, extension: str, zoom: int | None = None,
                           max_size: int | None = Query(None, alias="maxSize"),
                           increase_area: float | None = Query(None, alias="increaseArea"),
                           bits: str | None = None, store: Store = Depends(get_store),
                           slides: SlideLibrary = Depends(get_slides)) -> Response:
        """The annotation's bounding box (optionally enlarged by `increaseArea`) as crop, mask or alphamask."""
        check_bits(bits)
        annotation = store.annotation(annotation_id)
        image = store.image(annotation.image)
        region = regions.window(image, *crop_box(annotation, image, increase_area or 1.0), zoom, max_size)
        return image_response(picture(slides, image, region, mode, [annotation]), extension)
    return annotation_picture


for _mode in Mode:
    router.add_api_route(f"/annotation/{{annotation_id:int}}/{_mode.value}.{{extension}}", picture_route(_mode),
                         methods=["GET"])
