"""First state of a server: its user, a project of the slides in a folder, its ontology and software.

Everything is looked up before it is created, so starting again on the same data folder reuses
the keys and ids of the previous run and only adds slides that are new in the folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from openslide import OpenSlideError
from PIL import Image as PilImage

from cyseg.errors import CysegError
from cyseg.server.descriptor import read_descriptor
from cyseg.server.records import User
from cyseg.server.slides import find_slides, probe
from cyseg.server.store import Store

log = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
DEFAULT_TERMS = (("Nucleus", "#e6194b"), ("ROI", "#3cb44b"))


@dataclass(frozen=True, slots=True)
class Seed:
    """What a developer needs to point a client or a job at the server."""
    user: User
    project_id: int
    software_id: int | None
    images: dict[str, int]  # slide name (relative to the slides folder) -> image instance id
    terms: dict[str, int]  # term name -> id


def register_slides(store: Store, project_id: int, slides_dir: Path) -> dict[str, int]:
    """Register every readable slide under `slides_dir` not yet in the project; all its images by name."""
    known = {image.path for image in store.images(project_id)}
    for path in find_slides(slides_dir):
        if str(path.resolve()) in known:
            continue
        try:
            info = probe(path)
        except (OSError, OpenSlideError, PilImage.DecompressionBombError, ValueError) as error:
            log.warning("skipping %s: not a readable slide (%s)", path, error)
            continue
        image = store.ensure_image(project_id, str(path.resolve()), path.relative_to(slides_dir).as_posix(),
                                   info.width, info.height, info.resolution, info.magnification)
        log.info("registered %s as image %d (%dx%d)", image.filename, image.id, image.width, image.height)
    images = {image.filename: image.id for image in store.images(project_id)}
    if not images:
        log.warning("no slides found in %s", slides_dir)
    return images


def bootstrap(store: Store, slides_dir: Path, descriptor: Path | None = None,
              project_name: str | None = None) -> Seed:
    """Ensure the user, the project of `slides_dir` and (when given) the software of `descriptor`."""
    if not slides_dir.is_dir():
        raise CysegError(f"slides folder {slides_dir} does not exist")
    name = project_name or slides_dir.resolve().name or "slides"
    user = store.user_by_name(ADMIN_USERNAME) or store.create_user(ADMIN_USERNAME)
    ontology = store.ensure_ontology(f"{name} ontology", DEFAULT_TERMS)
    project = store.ensure_project(name, ontology.id)
    images = register_slides(store, project.id, slides_dir)
    software_id = None
    if descriptor is not None:
        spec = read_descriptor(descriptor)
        software_id = store.ensure_software(spec.name, spec.version, spec.digest, spec.parameters).id
    return Seed(user, project.id, software_id, images, {t.name: t.id for t in store.terms(project.ontology)})
