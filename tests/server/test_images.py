"""Projects, images and pixels through the real client: windows equal OpenSlide's pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cytomine import Cytomine
from cytomine.models import ImageInstance, ImageInstanceCollection, Project, ProjectCollection

from cyseg.server.runner import Endpoint

from .helpers import PNG_NAME, PYRAMID_NAME, GeneratedSlides, read_picture


def images_by_name(project_id: int) -> dict[str, ImageInstance]:
    return {image.originalFilename: image for image in ImageInstanceCollection().fetch_with_filter("project",
                                                                                                  project_id)}


def window(image: ImageInstance, tmp_path: Path, x: int, y: int, w: int, h: int, extension: str = "png",
           **options) -> np.ndarray:
    destination = tmp_path / f"{image.id}-{x}-{y}-{w}-{h}-{len(options)}.{extension}"
    assert image.window(x, y, w, h, dest_pattern=str(destination), **options)
    return read_picture(destination)


def test_project_and_images(client: Cytomine, server: Endpoint, generated_slides: GeneratedSlides) -> None:
    projects = ProjectCollection().fetch()
    assert [p.id for p in projects] == [server.project_id]
    project = Project().fetch(server.project_id)
    assert project.numberOfImages == 2
    images = images_by_name(server.project_id)
    assert set(images) == {PYRAMID_NAME, PNG_NAME}
    pyramid = images[PYRAMID_NAME]
    assert (pyramid.width, pyramid.height) == (generated_slides.pyramid.shape[1], generated_slides.pyramid.shape[0])
    assert pyramid.physicalSizeX == pytest.approx(0.5)
    assert pyramid.zoom == 3
    assert ImageInstance().fetch(pyramid.id).baseImage == pyramid.baseImage
    reference = pyramid.reference_slice()
    assert reference.image == pyramid.id and reference.imageServerUrl.startswith(server.host)


def test_window_equals_openslide_pixels(client: Cytomine, server: Endpoint, generated_slides: GeneratedSlides,
                                        read_openslide, tmp_path: Path) -> None:
    image = images_by_name(server.project_id)[PYRAMID_NAME]
    got = window(image, tmp_path, 123, 457, 301, 209)
    assert np.array_equal(got, read_openslide(generated_slides.folder / PYRAMID_NAME, 123, 457, 301, 209))
    assert np.array_equal(got, generated_slides.pyramid[457:457 + 209, 123:123 + 301])


def test_window_of_a_plain_png(client: Cytomine, server: Endpoint, generated_slides: GeneratedSlides,
                               tmp_path: Path) -> None:
    image = images_by_name(server.project_id)[PNG_NAME]
    assert np.array_equal(window(image, tmp_path, 10, 20, 100, 50), generated_slides.png[20:70, 10:110])


def test_window_beyond_the_edge_is_white(client: Cytomine, server: Endpoint, generated_slides: GeneratedSlides,
                                         tmp_path: Path) -> None:
    image = images_by_name(server.project_id)[PNG_NAME]
    got = window(image, tmp_path, 300, 0, 100, 10)
    assert np.array_equal(got[:, :33], generated_slides.png[:10, 300:])
    assert (got[:, 33:] == 255).all()


def test_window_zoom_max_size_and_jpeg(client: Cytomine, server: Endpoint, generated_slides: GeneratedSlides,
                                       tmp_path: Path) -> None:
    image = images_by_name(server.project_id)[PYRAMID_NAME]
    zoomed = window(image, tmp_path, 0, 0, 512, 256, zoom=1)
    assert zoomed.shape == (128, 256, 3)
    assert np.array_equal(zoomed, generated_slides.pyramid[:256:2, :512:2])  # pyramid level 1, exactly
    assert window(image, tmp_path, 0, 0, 400, 200, max_size=100).shape == (50, 100, 3)
    jpeg = window(image, tmp_path, 0, 0, 64, 64, extension="jpg").astype(int)
    assert jpeg.shape == (64, 64, 3)
    assert np.abs(jpeg - generated_slides.pyramid[:64, :64]).mean() < 12


def test_thumbnail(client: Cytomine, server: Endpoint, tmp_path: Path) -> None:
    image = images_by_name(server.project_id)[PYRAMID_NAME]
    assert image.dump(str(tmp_path / "thumb.png"), max_size=256)
    assert read_picture(tmp_path / "thumb.png").shape == (188, 256, 3)


def test_bad_windows_are_refused(client: Cytomine, server: Endpoint) -> None:
    image_id = server.images[PYRAMID_NAME]
    for path, fragment in (
            (f"imageinstance/{image_id}/window-0-0-9000-9000.png", "exceeds the limit"),
            (f"imageinstance/{image_id}/window-5000-0-10-10.png", "outside image"),
            (f"imageinstance/{image_id}/window-0-0-10-10.gif", "unsupported image format"),
            (f"imageinstance/{image_id}/window-0-0-10-10.png?bits=16", "8-bit")):
        response = client._get(path, None)
        assert response.status_code == 400, path
        assert fragment in response.json()["message"]


def test_original_download(client: Cytomine, server: Endpoint, generated_slides: GeneratedSlides,
                           tmp_path: Path) -> None:
    image = images_by_name(server.project_id)[PNG_NAME]
    assert image.download(str(tmp_path / "{originalFilename}"))
    assert (tmp_path / PNG_NAME).read_bytes() == (generated_slides.folder / PNG_NAME).read_bytes()


@pytest.mark.parametrize("name, box", [("CMU-1-Small-Region.svs", (1000, 1500, 512, 384)),
                                       ("TCGA-CR-7395-01A-01-TS1.svs", (4000, 3000, 443, 567)),
                                       ("kidney-48-5.tif", (700, 400, 256, 256))])
def test_real_slides_window_equals_openslide(shared_server: Endpoint, shared_data: Path, connect, read_openslide,
                                             tmp_path: Path, name: str, box: tuple[int, int, int, int]) -> None:
    connect(shared_server)
    image = images_by_name(shared_server.project_id)[name]
    expected = read_openslide(shared_data / "slides" / name, *box)
    assert np.array_equal(window(image, tmp_path, *box), expected)


def test_real_slide_metadata(shared_server: Endpoint, connect) -> None:
    connect(shared_server)
    cmu = images_by_name(shared_server.project_id)["CMU-1-Small-Region.svs"]
    assert (cmu.width, cmu.height, cmu.physicalSizeX, cmu.magnification) == (2220, 2967, 0.499, 20)
