"""The tile protocols sldc-cytomine's tile classes speak, served under /api/ims (see Urls.image_server).

IIP (`CytomineIIPTile`) and Zoomify (`CytomineZoomifyTile`) tiles are PNG, so they equal OpenSlide's
pixels; the PIMS routes (`CytominePimsTile`, `CytominePims20241Tile`) honour their extension.
Slides are looked up by their registered path in the database, never opened from a client path.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cyseg.server import cytomine_json as cj
from cyseg.server import regions
from cyseg.server.pictures import Mode, picture
from cyseg.server.records import Image
from cyseg.server.regions import Region
from cyseg.server.routes.deps import get_slides, get_store, get_urls
from cyseg.server.routes.images import image_response
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import Store

router = APIRouter()

LOSSLESS = "png"


def tile_response(slides: SlideLibrary, image: Image, region: Region, extension: str = LOSSLESS) -> Response:
    return image_response(picture(slides, image, region, Mode.CROP), extension)


@router.get("/imaging_server.json")
def imaging_servers(urls: cj.Urls = Depends(get_urls)) -> cj.JsonObject:
    return cj.collection([{"id": 1, "class": "be.cytomine.image.server.ImageServer", "url": urls.image_server,
                           "available": True, "name": "cyseg"}])


@router.get("/ims/slice/tile")
def iip_tile(fif: str, tile_index: int = Query(alias="tileIndex"), z: int = Query(), store: Store = Depends(get_store),
             slides: SlideLibrary = Depends(get_slides)) -> Response:
    image = store.image_by_ims_path(fif)
    return tile_response(slides, image, regions.tile_by_index(image, z, tile_index))


@router.get("/ims/image/tile")
def zoomify_tile(zoomify: str, x: int, y: int, z: int, store: Store = Depends(get_store),
                 slides: SlideLibrary = Depends(get_slides)) -> Response:
    image = store.image_by_ims_path(zoomify)
    return tile_response(slides, image, regions.tile(image, z, x, y))


@router.get("/ims/image/{path:path}/normalized-tile/zoom/{zoom:int}/ti/{index:int}.{extension}")
def pims_tile(path: str, zoom: int, index: int, extension: str, store: Store = Depends(get_store),
              slides: SlideLibrary = Depends(get_slides)) -> Response:
    image = store.image_by_ims_path(path)
    return tile_response(slides, image, regions.tile_by_index(image, zoom, index), extension)


@router.get("/sliceinstance/{slice_id:int}/normalized-tile/zoom/{zoom:int}/tx/{column:int}/ty/{row:int}.{extension}")
def pims_2024_tile(slice_id: int, zoom: int, column: int, row: int, extension: str,
                   store: Store = Depends(get_store), slides: SlideLibrary = Depends(get_slides)) -> Response:
    image = store.image_by_slice(slice_id)
    return tile_response(slides, image, regions.tile(image, zoom, column, row), extension)
