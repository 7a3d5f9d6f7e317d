"""Fixtures for the server's contract tests: generated slides, a running server, a real client."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openslide
import pytest
from cytomine import Cytomine
from PIL import Image

from cyseg.server.runner import Endpoint
from cyseg.server.testing import run_server, slide_pixels, write_test_slide
from .helpers import DESCRIPTOR, PNG_NAME, PYRAMID_NAME, GeneratedSlides


@pytest.fixture(scope="session")
def generated_slides(tmp_path_factory: pytest.TempPathFactory) -> GeneratedSlides:
    """A 3-level tiled pyramidal TIFF (OpenSlide generic TIFF) and a plain PNG, made for the tests."""
    folder = tmp_path_factory.mktemp("slides")
    pyramid = write_test_slide(folder / PYRAMID_NAME)
    png = slide_pixels(333, 257, seed=1)
    Image.fromarray(png).save(folder / PNG_NAME)
    return GeneratedSlides(folder, pyramid, png)


@pytest.fixture(scope="session")
def server(generated_slides: GeneratedSlides) -> Iterator[Endpoint]:
    """One server for the session, over the generated slides, with the test descriptor registered."""
    with run_server(generated_slides.folder, software=DESCRIPTOR) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def shared_server(shared_data: Path) -> Iterator[Endpoint]:
    """A server over the real slides in ../shared/data/slides (skipped when they are absent)."""
    with run_server(shared_data / "slides") as endpoint:
        yield endpoint


Connect = Callable[..., Cytomine]


@pytest.fixture(scope="session")
def connect() -> Connect:
    """`connect(endpoint, public_key=None, private_key=None)`: a fresh client.

    The client is a singleton: the last one connected is the one its models use.
    """
    def make(endpoint: Endpoint, public_key: str | None = None, private_key: str | None = None) -> Cytomine:
        return Cytomine(endpoint.host, public_key or endpoint.public_key, private_key or endpoint.private_key,
                        configure_logging=False, verbose=logging.WARNING)
    return make


@pytest.fixture
def client(server: Endpoint, connect: Connect) -> Cytomine:
    """The real client, connected as the server's user."""
    return connect(server)


ReadOpenSlide = Callable[[Path, int, int, int, int], np.ndarray]


@pytest.fixture(scope="session")
def read_openslide() -> ReadOpenSlide:
    """`read_openslide(path, x, y, w, h)`: OpenSlide's full-resolution region flattened on white, as RGB."""
    def read(path: Path, x: int, y: int, width: int, height: int) -> np.ndarray:
        with openslide.open_slide(path) as slide:
            region = slide.read_region((x, y), 0, (width, height))
        white = Image.new("RGBA", region.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, region).convert("RGB"))
    return read
