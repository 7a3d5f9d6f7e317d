"""Fixtures for the task tests: slides with known nuclei (an asymmetric demo slide, and a slide
larger than 4000 x 4000 that is empty but for one patch of nuclei near its bottom-right corner),
the embedded server over them with its local App Engine, and a client that checks every request
and response against the App Engine's OpenAPI spec."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cyseg.demo_slide import DemoSlide, write_demo_slide
from cyseg.server.runner import Endpoint, LocalServer
from cyseg.synthetic import Nucleus, random_nuclei, render
from .openapi import CheckedClient

ROOT = Path(__file__).resolve().parents[2]
SLIDE_NAME = "nuclei.tif"
LARGE_NAME = "large.tif"
LARGE_SIZE = (6000, 4400)
PATCH = (4400, 3800, 640, 448)  # left, top, width, height of the only nuclei of the large slide


def write_large_slide(path: Path) -> list[Nucleus]:
    """A dark LARGE_SIZE slide (3 pyramid levels) with nuclei in PATCH only; their centres (image coordinates)."""
    width, height = LARGE_SIZE
    left, top, patch_w, patch_h = PATCH
    rng = np.random.default_rng(7)
    nuclei = random_nuclei((patch_h, patch_w), 60, rng)
    grey = np.full((height, width), 20, dtype=np.uint8)
    grey[top:top + patch_h, left:left + patch_w] = render((patch_h, patch_w), nuclei, rng)[0]
    with tifffile.TiffWriter(path) as tiff:
        for level in range(3):
            step = 2 ** level
            tiff.write(np.repeat(grey[::step, ::step, None], 3, axis=2), tile=(256, 256), photometric="rgb",
                       compression="zlib", subfiletype=1 if level else 0)
    return [Nucleus(n.x + left, n.y + top, n.a, n.b, n.angle) for n in nuclei]


@pytest.fixture(scope="session")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def slide(slides_dir: Path) -> DemoSlide:
    return write_demo_slide(slides_dir / SLIDE_NAME, 1024, 768, seed=3)


@pytest.fixture(scope="session")
def large_nuclei(slides_dir: Path) -> list[Nucleus]:
    return write_large_slide(slides_dir / LARGE_NAME)


@pytest.fixture(scope="module")
def live_server(slide: DemoSlide, large_nuclei: list[Nucleus],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = LocalServer(slide.path.parent, tmp_path_factory.mktemp("server"), ROOT / "descriptor.json")
    with server.in_thread():
        yield server


@pytest.fixture(scope="module")
def server(live_server: LocalServer) -> Endpoint:
    return live_server.endpoint


@pytest.fixture(scope="module")
def engine(server: Endpoint) -> CheckedClient:
    return CheckedClient(server.host, server.private_key)
