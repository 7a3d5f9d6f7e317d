"""sldc-cytomine's slides and tile classes against the server: tiles equal OpenSlide's pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cytomine.models import ImageInstance
from sldc_cytomine import CytomineSlide, CytomineTileBuilder
from sldc_cytomine.autodetect import infer_protocols
from sldc_cytomine.tile import (CytomineIIPTile, CytominePims20241Tile, CytominePimsTile, CytomineWindowTile,
                                CytomineZoomifyTile)

from cyseg.server.runner import Endpoint

from .helpers import PYRAMID_NAME, GeneratedSlides

LOSSLESS = [CytomineIIPTile, CytomineZoomifyTile, CytomineWindowTile]
JPEG = [CytominePimsTile, CytominePims20241Tile]


@pytest.fixture
def slide(client, server: Endpoint) -> CytomineSlide:
    return CytomineSlide(ImageInstance().fetch(server.images[PYRAMID_NAME]))


def tile_pixels(slide: CytomineSlide, tile_class: type, folder: Path, x: int, y: int, w: int, h: int) -> np.ndarray:
    builder = CytomineTileBuilder(str(folder), tile_class=tile_class, n_jobs=1)
    return builder.build(slide, (x, y), w, h).np_image


def test_autodetect_picks_iip(client, server: Endpoint) -> None:
    assert infer_protocols(server.images[PYRAMID_NAME]) == (CytomineSlide, CytomineIIPTile)


@pytest.mark.parametrize("tile_class", LOSSLESS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("x, y, w, h", [(0, 0, 256, 256), (300, 700, 512, 400), (1200, 1000, 300, 100)])
def test_lossless_tiles_equal_openslide(slide: CytomineSlide, generated_slides: GeneratedSlides, read_openslide,
                                        tmp_path: Path, tile_class: type, x: int, y: int, w: int, h: int) -> None:
    got = tile_pixels(slide, tile_class, tmp_path, x, y, w, h)
    width, height = min(w, slide.width - x), min(h, slide.height - y)
    assert np.array_equal(got, read_openslide(generated_slides.folder / PYRAMID_NAME, x, y, width, height))


@pytest.mark.parametrize("tile_class", JPEG, ids=lambda c: c.__name__)
def test_jpeg_tiles_are_close(slide: CytomineSlide, generated_slides: GeneratedSlides, tmp_path: Path,
                              tile_class: type) -> None:
    got = tile_pixels(slide, tile_class, tmp_path, 256, 512, 512, 256).astype(int)
    assert np.abs(got - generated_slides.pyramid[512:768, 256:768]).mean() < 12


def test_iip_tiles_at_a_lower_zoom_are_the_pyramid_level(client, server: Endpoint,
                                                          generated_slides: GeneratedSlides, tmp_path: Path) -> None:
    half = CytomineSlide(ImageInstance().fetch(server.images[PYRAMID_NAME]), zoom_level=1)
    assert (half.width, half.height) == (750, 550)
    got = tile_pixels(half, CytomineIIPTile, tmp_path, 100, 200, 300, 256)
    assert np.array_equal(got, generated_slides.pyramid[::2, ::2][200:456, 100:400])


def test_tiles_outside_the_pyramid_are_404(client, server: Endpoint) -> None:
    image = ImageInstance().fetch(server.images[PYRAMID_NAME])
    path = image.reference_slice().path
    for query in ({"fif": path, "tileIndex": 999, "z": 3}, {"fif": path, "tileIndex": 0, "z": 9},
                  {"fif": "no/such/slide.tif", "tileIndex": 0, "z": 0}):
        response = client._get("ims/slice/tile", query)
        assert response.status_code == 404 and response.json()["message"]


def test_real_slide_tiles_equal_openslide(shared_server: Endpoint, shared_data: Path, connect, read_openslide,
                                          tmp_path: Path) -> None:
    connect(shared_server)
    name = "TCGA-CR-7395-01A-01-TS1.svs"
    slide = CytomineSlide(ImageInstance().fetch(shared_server.images[name]))
    got = tile_pixels(slide, CytomineIIPTile, tmp_path, 3900, 3300, 543, 267)
    assert np.array_equal(got, read_openslide(shared_data / "slides" / name, 3900, 3300, 543, 267))
