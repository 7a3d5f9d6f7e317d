"""Fixtures for the dataset and IDI tests: small synthetic nuclei slides with known instance labels, the
embedded server over them, and expert annotations of some of their nuclei uploaded with the real client."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from cytomine import Cytomine
from cytomine.models import Annotation, AnnotationCollection

from cyseg.coordinates import to_cytomine
from cyseg.polygons import label_polygons
from cyseg.server.records import User
from cyseg.server.runner import Endpoint, LocalServer
from cyseg.synthetic import random_nuclei, render

# name -> (width, height, nuclei asked for); "empty.tif" gets no annotations, "d.tif" also a point
SLIDES = {"a.tif": (320, 256, 30), "b.tif": (192, 160, 10), "c.tif": (192, 160, 10), "d.tif": (192, 160, 10),
          "empty.tif": (192, 160, 10)}
ANNOTATED_SHARE = 0.6  # of slide a's nuclei, by the admin
EXPERT_COUNT = 4  # nuclei of slide b annotated by a second user


@dataclass
class Slide:
    name: str
    id: int
    pixels: np.ndarray  # full-resolution RGB
    labels: np.ndarray  # every nucleus (uint16, top-left origin)
    annotated: dict[int, int]  # annotation id -> label id in `labels`


@dataclass
class Project:
    endpoint: Endpoint
    server: LocalServer
    expert: User
    slides: dict[str, Slide]

    def connect(self) -> Cytomine:
        return Cytomine(self.endpoint.host, self.endpoint.public_key, self.endpoint.private_key,
                        configure_logging=False, verbose=logging.WARNING)


def write_slide(path: Path, width: int, height: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2-level tiled pyramidal TIFF of synthetic nuclei (grey as RGB); its pixels and labels."""
    rng = np.random.default_rng(seed)
    grey, labels = render((height, width), random_nuclei((height, width), count, rng), rng)
    pixels = np.repeat(grey[..., None], 3, axis=2)
    with tifffile.TiffWriter(path) as tiff:
        for level in range(2):
            step = 2 ** level
            tiff.write(pixels[::step, ::step], tile=(256, 256), photometric="rgb", compression="zlib",
                       subfiletype=1 if level else 0)
    return pixels, labels


def upload(client: Cytomine, image_id: int, labels: np.ndarray, ids: list[int], term: int) -> dict[int, int]:
    """Upload the outlines of the nuclei `ids` of `labels`; annotation id -> label id."""
    polygons = label_polygons(labels)
    collection = AnnotationCollection()
    collection.extend(Annotation(location=to_cytomine(polygons[i], labels.shape[0]).wkt, id_image=image_id,
                                 id_terms=[term]) for i in ids)
    assert collection.save()
    back = AnnotationCollection(image=image_id, user=client.current_user.id, showWKT=True).fetch()
    # The server returns the WKT as sent, which identifies each nucleus.
    by_wkt = {to_cytomine(polygons[i], labels.shape[0]).wkt: i for i in ids}
    return {a.id: by_wkt[a.location] for a in back if a.location in by_wkt}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the tiny networks here gain nothing from more, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("idi-slides")
    made = {name: write_slide(folder / name, *size, seed=index) for index, (name, size) in enumerate(SLIDES.items())}
    server = LocalServer(folder, tmp_path_factory.mktemp("idi-server"))
    expert = server.store.create_user("expert")
    with server.in_thread() as endpoint:
        nucleus = endpoint.terms["Nucleus"]
        slides = {}
        for name, (pixels, labels) in made.items():
            slides[name] = Slide(name, endpoint.images[name], pixels, labels, {})
        admin = Cytomine(endpoint.host, endpoint.public_key, endpoint.private_key, configure_logging=False,
                         verbose=logging.WARNING)
        a = slides["a.tif"]
        count = int(a.labels.max())
        chosen = sorted(np.random.default_rng(7).choice(np.arange(1, count + 1), int(ANNOTATED_SHARE * count),
                                                        replace=False).tolist())
        a.annotated = upload(admin, a.id, a.labels, chosen, nucleus)
        b = slides["b.tif"]
        b.annotated = upload(admin, b.id, b.labels, list(range(EXPERT_COUNT + 1, int(b.labels.max()) + 1)), nucleus)
        for name in ("c.tif", "d.tif"):
            slides[name].annotated = upload(admin, slides[name].id, slides[name].labels,
                                            list(range(1, int(slides[name].labels.max()) + 1)), nucleus)
        assert Annotation(location="POINT (20 30)", id_image=slides["d.tif"].id, id_terms=[nucleus]).save()
        expert_client = Cytomine(endpoint.host, expert.public_key, expert.private_key, configure_logging=False,
                                 verbose=logging.WARNING)
        b.annotated |= upload(expert_client, b.id, b.labels, list(range(1, EXPERT_COUNT + 1)), nucleus)
        yield Project(endpoint, server, expert, slides)


@pytest.fixture
def client(project: Project) -> Cytomine:
    """The admin's client (the client library uses the last one connected)."""
    return project.connect()
