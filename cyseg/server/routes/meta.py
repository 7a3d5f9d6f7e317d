"""Properties (key/value pairs) and attached files of projects, images, annotations, jobs and software.

Routes exist both as `domain/{class}/{id}/...` and, for annotations, `annotation/{id}/...`, the
two forms the client builds. Attached files are stored under the data folder named by their id:
the client's file name is kept only as metadata, so no request can choose a path on disk.
"""
from __future__ import annotations

import mimetypes
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import FileResponse

from cyseg.server import cytomine_json as cj
from cyseg.server.errors import BadRequest, NotFound
from cyseg.server.records import PROPERTY_CLASS
from cyseg.server.routes.deps import as_id, get_files_dir, get_store, get_urls, json_body, text_value
from cyseg.server.store import ANNOTATION_ALIAS, Store

router = APIRouter()

DOMAIN = "/domain/{domain_class}/{ident:int}"
ANNOTATION = "/annotation/{ident:int}"


def _property_item(item: Any) -> tuple[str, str | None]:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
        raise BadRequest("a property is a JSON object with a non-empty 'key'")
    return item["key"], text_value(item.get("value"))


def _object_of(item: dict[str, Any], domain_class: str, ident: int) -> tuple[str, int]:
    """The (class name, id) a property of an array is for: its own `domainClassName`/`domainIdent` when it names
    them (as Cytomine core's bulk property route reads them), else the route's."""
    if item.get("domainIdent") in (None, ""):
        return domain_class, ident
    return str(item.get("domainClassName") or domain_class), as_id(item["domainIdent"], "domainIdent")


@router.get(f"{DOMAIN}/property.json")
@router.get(f"{ANNOTATION}/property.json")
def list_properties(ident: int, domain_class: str = ANNOTATION_ALIAS,
                    store: Store = Depends(get_store)) -> cj.JsonObject:
    store.domain_class(domain_class, ident)
    return cj.collection([cj.property_(p) for p in store.properties(ident)])


@router.post(f"{DOMAIN}/property.json")
@router.post(f"{ANNOTATION}/property.json")
def create_properties(ident: int, domain_class: str = ANNOTATION_ALIAS, payload: Any = Depends(json_body),
                      store: Store = Depends(get_store)) -> cj.JsonObject:
    """One property (object) of this object, or several (array) of this object or of the objects each one
    names (Cytomine core's bulk form: one request for the properties of many annotations, answered with their
    ids only), all stored or none."""
    single = isinstance(payload, dict)
    if not single and not (isinstance(payload, list) and payload):
        raise BadRequest("expected a property object or a non-empty array of them")
    if single:
        stored = store.add_properties([(store.domain_class(domain_class, ident), ident, *_property_item(payload))])
        return cj.created("Property", cj.property_(stored[0]))
    properties = [_property_item(item) for item in payload]
    objects = [_object_of(item, domain_class, ident) for item in payload]
    classes = store.domain_classes(objects)
    stored = store.add_properties([(class_name, own, key, value) for class_name, (_, own), (key, value)
                                   in zip(classes, objects, properties)])
    return cj.added(PROPERTY_CLASS, [p.id for p in stored])


@router.get("/user/{user}/imageinstance/{image}/annotationposition.json")
def annotation_positions(user: int, image: int, key: str = Query(min_length=1),
                         store: Store = Depends(get_store)) -> cj.JsonObject:
    """For one property key, the centroid and value of each of a user's annotations in an image that has it
    (as Cytomine core answers: {idAnnotation, x, y, value} items)."""
    store.user(user)
    store.image(image)
    return cj.collection([{"idAnnotation": ident, "x": x, "y": y, "value": value}
                          for ident, x, y, value in store.annotation_positions(user, image, key)])


@router.get(f"{DOMAIN}/key/{{key}}/property.json")
@router.get(f"{ANNOTATION}/key/{{key}}/property.json")
def property_by_key(ident: int, key: str, domain_class: str = ANNOTATION_ALIAS,
                    store: Store = Depends(get_store)) -> cj.JsonObject:
    store.domain_class(domain_class, ident)
    found = store.properties(ident, key)
    if not found:
        raise NotFound(f"property '{key}' of {domain_class} {ident} not found")
    return cj.property_(found[0])


@router.get(f"{DOMAIN}/property/{{property_id:int}}.json")
@router.get(f"{ANNOTATION}/property/{{property_id:int}}.json")
def get_property(ident: int, property_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.property_(store.property(ident, property_id))


@router.put(f"{DOMAIN}/property/{{property_id:int}}.json")
@router.put(f"{ANNOTATION}/property/{{property_id:int}}.json")
def update_property(ident: int, property_id: int, payload: Any = Depends(json_body),
                    store: Store = Depends(get_store)) -> cj.JsonObject:
    key, value = _property_item(payload)
    return cj.created("Property", cj.property_(store.update_property(ident, property_id, key, value)))


@router.delete(f"{DOMAIN}/property/{{property_id:int}}.json")
@router.delete(f"{ANNOTATION}/property/{{property_id:int}}.json")
def delete_property(ident: int, property_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.created("Property", cj.property_(store.delete_property(ident, property_id)))


def safe_filename(name: str | None) -> str:
    """The last component of a client-supplied name, without control characters; 'file' if nothing is left."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return base if base not in ("", ".", "..") else "file"


@router.post("/attachedfile.json")
def upload_attached_file(
        domain_class: str = Query(alias="domainClassName"), domain_ident: int = Query(alias="domainIdent"),
        filename: str | None = None, upload: UploadFile = File(alias="files[]"),
        store: Store = Depends(get_store), files_dir: Path = Depends(get_files_dir),
        urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    """Attach the multipart part `files[]` to the object (domainClassName, domainIdent)."""
    canonical = store.domain_class(domain_class, domain_ident)
    with tempfile.NamedTemporaryFile(dir=files_dir, prefix="upload-", delete=False) as temporary:
        shutil.copyfileobj(upload.file, temporary)
        size = temporary.tell()
    try:
        record = store.add_attached_file(canonical, domain_ident, safe_filename(filename or upload.filename), size,
                                         lambda file_id: os.replace(temporary.name, files_dir / str(file_id)))
    finally:
        Path(temporary.name).unlink(missing_ok=True)
    return cj.attached_file(record, urls)


@router.get("/attachedfile.json")
def list_attached_files(store: Store = Depends(get_store), urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return cj.collection([cj.attached_file(f, urls) for f in store.attached_files()])


@router.get(f"{DOMAIN}/attachedfile.json")
def domain_attached_files(domain_class: str, ident: int, store: Store = Depends(get_store),
                          urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    store.domain_class(domain_class, ident)
    return cj.collection([cj.attached_file(f, urls) for f in store.attached_files(ident)])


@router.get("/attachedfile/{file_id}.json")
def get_attached_file(file_id: int, store: Store = Depends(get_store),
                      urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return cj.attached_file(store.attached_file(file_id), urls)


@router.get("/attachedfile/{file_id}/download")
def download_attached_file(file_id: int, store: Store = Depends(get_store),
                           files_dir: Path = Depends(get_files_dir)) -> FileResponse:
    record = store.attached_file(file_id)
    path = files_dir / str(record.id)
    if not path.is_file():
        raise NotFound(f"content of attached file {file_id} is missing")
    return FileResponse(path, filename=record.filename,
                        media_type=mimetypes.guess_type(record.filename)[0] or "application/octet-stream")


@router.delete("/attachedfile/{file_id}.json")
def delete_attached_file(file_id: int, store: Store = Depends(get_store), files_dir: Path = Depends(get_files_dir),
                         urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    record = store.delete_attached_file(file_id)
    (files_dir / str(record.id)).unlink(missing_ok=True)
    return cj.created("AttachedFile", cj.attached_file(record, urls))
