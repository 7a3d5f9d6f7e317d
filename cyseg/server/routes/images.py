"""Image instances, their reference slice, windows, thumbnails and the original file."""
from __future__ import annotations

import os
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response
from PIL import Image as PilImage

from cyseg.server import cytomine_json as cj
from cyseg.server import regions, render
from cyseg.server.errors import BadRequest, NotFound
from cyseg.server.pictures import Mode, picture, thumbnail_picture
from cyseg.server.records import Image
from cyseg.server.routes.deps import get_slides, get_store, get_urls, id_list
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import AnnotationQuery, Store

router = APIRouter()

ImageKind = Literal["imageinstance", "sliceinstance"]


def resolve(store: Store, kind: ImageKind, ident: int) -> Image:
    """The image an `imageinstance` or `sliceinstance` id names."""
    return store.image(ident) if kind == "imageinstance" else store.image_by_slice(ident)


def check_bits(bits: str | None) -> None:
    """Only 8-bit pictures exist here; the client asks for 8 by default."""
    if bits not in (None, "8", "max"):
        raise BadRequest(f"only 8-bit images are served, not bits={bits}")


def image_response(image: PilImage.Image, extension: str) -> Response:
    return Response(render.encode(image, extension), media_type=render.media_type(extension))


def image_json(store: Store, image: Image, urls: cj.Urls) -> cj.JsonObject:
    return cj.image(image, store.annotation_counts("image", image.id), urls)


@router.get("/project/{project_id}/imageinstance.json")
def project_images(project_id: int, store: Store = Depends(get_store), urls: cj.Urls = Depends(get_urls),
                   max: int = 0, offset: int = 0) -> cj.JsonObject:
    images = store.images(store.project(project_id).id)
    page = images[offset:offset + max] if max else images[offset:]
    return cj.collection([image_json(store, i, urls) for i in page], len(images), offset, max)


@router.get("/imageinstance/{image_id}.json")
def get_image(image_id: int, store: Store = Depends(get_store), urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return image_json(store, store.image(image_id), urls)


@router.get("/imageinstance/{image_id}/sliceinstance/reference.json")
def reference_slice(image_id: int, store: Store = Depends(get_store),
                    urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return cj.slice_instance(store.image(image_id), urls)


@router.get("/sliceinstance/{slice_id}.json")
def get_slice(slice_id: int, store: Store = Depends(get_store), urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return cj.slice_instance(store.image_by_slice(slice_id), urls)


@router.get("/{kind}/{ident:int}/window-{x:int}-{y:int}-{w:int}-{h:int}.{extension}")
def window(kind: ImageKind, ident: int, x: int, y: int, w: int, h: int, extension: str,
           zoom: int | None = None, max_size: int | None = Query(None, alias="maxSize"),
           mask: bool = False, alpha_mask: bool = Query(False, alias="alphaMask"),
           annotations: str | None = None, terms: str | None = None, users: str | None = None,
           bits: str | None = None, store: Store = Depends(get_store),
           slides: SlideLibrary = Depends(get_slides)) -> Response:
    """A rectangle of the image (top-left origin), optionally as a mask of its annotations."""
    check_bits(bits)
    render.media_type(extension)
    image = resolve(store, kind, ident)
    region = regions.window(image, x, y, w, h, zoom, max_size)
    mode = Mode.ALPHA if alpha_mask else Mode.MASK if mask else Mode.CROP
    shapes = ()
    if mode is not Mode.CROP:
        shapes, _ = store.annotations(AnnotationQuery(
            images=(image.id,), annotations=id_list(annotations, "annotations"), terms=id_list(terms, "terms"),
            users=id_list(users, "users"), include_algo=True))
    return image_response(picture(slides, image, region, mode, shapes), extension)


@router.get("/{kind}/{ident:int}/thumb.{extension}")
def thumb(kind: ImageKind, ident: int, extension: str, max_size: int = Query(cj.THUMB_SIZE, alias="maxSize"),
          bits: str | None = None, store: Store = Depends(get_store),
          slides: SlideLibrary = Depends(get_slides)) -> Response:
    check_bits(bits)
    render.media_type(extension)
    return image_response(thumbnail_picture(slides, resolve(store, kind, ident), max_size), extension)


@router.get("/imageinstance/{image_id}/download")
def download(image_id: int, store: Store = Depends(get_store)) -> FileResponse:
    """The original slide file, found through the database, never through a client-supplied path."""
    image = store.image(image_id)
    if not os.path.isfile(image.path):
        raise NotFound(f"slide file of image {image_id} is missing")
    return FileResponse(image.path, filename=os.path.basename(image.filename))
