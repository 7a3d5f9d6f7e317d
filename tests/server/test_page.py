"""The web page at `/`: projects, thumbnails, annotation overlays and jobs, checked in headless Chromium."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from cytomine import CytomineJob
from cytomine.models import Annotation, AnnotationCollection

from cyseg.server.runner import Endpoint
from cyseg.server.testing import run_server

from .helpers import DESCRIPTOR, PYRAMID_NAME, GeneratedSlides, read_picture

CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)
OVERLAY_BOX = (600, 400, 800, 600)  # an annotation drawn on the pyramid image (Cytomine coordinates)


@pytest.fixture(scope="module")
def populated(generated_slides: GeneratedSlides, connect) -> Iterator[Endpoint]:
    """A server of its own with a finished job, one of its annotations and a failed job."""
    with run_server(generated_slides.folder, software=DESCRIPTOR) as server:
        connect(server)
        populate(server)
        connect(server)
        yield server


def populate(server: Endpoint) -> None:
    x0, y0, x1, y1 = OVERLAY_BOX
    with CytomineJob.from_cli(server.cli_arguments(), configure_logging=False) as job:
        nuclei = AnnotationCollection()
        nuclei.append(Annotation(location=f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))",
                                 id_image=server.images[PYRAMID_NAME], id_terms=[server.terms["Nucleus"]]))
        assert nuclei.save()
        job.job.update(progress=100, statusComment="1 nucleus")
    try:
        with CytomineJob.from_cli(server.cli_arguments(), configure_logging=False):
            raise ValueError("bad model <checkpoint>")
    except ValueError:
        pass


def test_home_lists_projects_images_and_jobs(populated: Endpoint) -> None:
    page = requests.get(f"{populated.host}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert PYRAMID_NAME in html and f"/ui/image/{populated.images[PYRAMID_NAME]}/thumb.png" in html
    assert "SUCCESS" in html and "FAILED" in html
    assert "bad model &lt;checkpoint&gt;" in html  # escaped


def test_overlay_draws_annotations(populated: Endpoint) -> None:
    image_id = populated.images[PYRAMID_NAME]
    assert requests.get(f"{populated.host}/ui/image/{image_id}").status_code == 200
    overlay = read_picture(requests.get(f"{populated.host}/ui/image/{image_id}/overlay.png").content)
    thumb = read_picture(requests.get(f"{populated.host}/ui/image/{image_id}/thumb.png").content)
    assert overlay.shape == (751, 1024, 3) and thumb.shape == (188, 256, 3)
    nucleus_red = np.all(overlay == (0xe6, 0x19, 0x4b), axis=-1)
    rows, columns = np.nonzero(nucleus_red)
    scale = 1024 / 1500
    x0, y0, x1, y1 = OVERLAY_BOX
    assert columns.min() == pytest.approx(x0 * scale, abs=3) and columns.max() == pytest.approx(x1 * scale, abs=3)
    # Cytomine's y grows upwards: the box's top edge (y1) is drawn nearer the top of the picture.
    assert rows.min() == pytest.approx((1100 - y1) * scale, abs=3)
    assert rows.max() == pytest.approx((1100 - y0) * scale, abs=3)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("page", ["home", "image"])
def test_page_renders_in_chromium(populated: Endpoint, tmp_path: Path, page: str) -> None:
    url = f"{populated.host}/" if page == "home" else f"{populated.host}/ui/image/{populated.images[PYRAMID_NAME]}"
    screenshot = tmp_path / f"{page}.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={screenshot}", "--window-size=1200,900", "--virtual-time-budget=5000", url],
                   check=True, capture_output=True, timeout=120)
    picture = read_picture(screenshot)[..., :3]
    assert picture.shape == (900, 1200, 3)
    colours = len(np.unique(picture.reshape(-1, 3), axis=0))
    assert colours > 1000, "the page should show slide thumbnails, not just text"
    assert (picture < 250).any(axis=-1).mean() > 0.05
