"""A training dataset from a Cytomine project: image crops and instance masks of chosen annotations.

The annotations are chosen by term, user and image. Windows (crops) are laid out either as a grid of
tiles over the annotated part of each image (`layout="tiles"`: every tile that overlaps an annotation)
or around the annotations (`layout="around"`: each annotation lies whole in at least one crop,
windows centred on annotations not yet covered). Pixels come from the same source as the segmentation
job's (the slide file when this machine can read it, else the window API), at the chosen zoom level.
Each annotation that covers pixel centres of a window is one instance of its mask (uint16 labels 1..N,
larger objects drawn first), rasterised from its polygon after one conversion from Cytomine's
bottom-left origin (`cyseg.coordinates`). Annotations with no area (points, lines) are skipped.

The slides are split into train/val/test (seeded; a slide is in exactly one split), and the result is
a folder per split that `cyseg train --data` reads directly, plus `manifest.json`:

    OUT/manifest.json  OUT/train/{images,labels}  OUT/val/{images,labels}  OUT/test/{images,labels}
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from cytomine.models import AnnotationCollection, ImageInstanceCollection, Project, TermCollection
from PIL import Image
from rasterio import features
from shapely import STRtree, affinity, wkt
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from cyseg.coordinates import from_cytomine
from cyseg.cytomine.connection import call, host
from cyseg.cytomine.images import image_name, max_zoom_level
from cyseg.cytomine.source import open_source
from cyseg.errors import CysegError
from transforms import Augmenter, RandomDefocus, relabel_consecutive

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT = "cyseg-dataset/1"
SPLITS = ("train", "val", "test")
LAYOUTS = ("tiles", "around")
OUTSIDE_TOLERANCE = 1.0  # pixels an annotation may stick out of its image (rounding of drawn polygons)

#: `progress(done, total, message)`, called as the work advances.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Selection:
    """Which annotations make the dataset: those of `project` with any of `terms` (ids or names; none =
    any term or none), by any of `users` (ids; none = anyone), in `images` (ids or file names; none = all)."""

    project: int
    terms: tuple[int | str, ...] = ()
    users: tuple[int, ...] = ()
    images: tuple[int | str, ...] = ()


@dataclass(frozen=True)
class DatasetConfig:
    """How crops are cut and split. Sizes are in pixels of the zoom level (full resolution / 2^zoom)."""

    zoom: int = 0
    crop_size: int = 256
    layout: str = "tiles"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # shares of slides in train, val, test
    seed: int = 0
    augment: int = 0  # augmented copies of each training crop (flips, 90° turns, optional defocus)
    defocus_levels: tuple[float, ...] = ()  # defocus of the augmented copies (px at the zoom level)

    def __post_init__(self) -> None:
        checks = [
            (self.zoom >= 0, f"zoom must be >= 0, got {self.zoom}"),
            (self.crop_size >= 16, f"crop size must be at least 16 pixels, got {self.crop_size}"),
            (self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}, got '{self.layout}'"),
            (len(self.split) == 3 and min(self.split) >= 0 and math.isclose(sum(self.split), 1.0, abs_tol=1e-6)
             and self.split[0] > 0, f"split must be three shares (train, val, test) >= 0 summing to 1 with "
                                    f"train > 0, got {self.split}"),
            (self.augment >= 0, f"augment must be >= 0, got {self.augment}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CysegError(f"invalid dataset parameter: {message}")


@dataclass
class Annotated:
    """One selected annotation, its geometry in full-resolution image coordinates (origin top-left)."""

    id: int
    geometry: BaseGeometry


@dataclass(frozen=True)
class Window:
    """A crop in level coordinates (origin top-left)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def shape(self) -> BaseGeometry:
        return box(self.x, self.y, self.x + self.width, self.y + self.height)


@dataclass
class SlidePlan:
    """An image with its selected annotations (level coordinates) and the windows to cut from it."""

    image: Any  # cytomine.models.ImageInstance
    annotations: list[Annotated]
    level: list[BaseGeometry]  # the annotations' geometries at the zoom level
    windows: list[Window]


def resolve_terms(project_id: int, wanted: Sequence[int | str]) -> dict[int, str]:
    """The wanted terms (ids or names) as id -> name; CysegError for a term not in the project's ontology."""
    if not wanted:
        return {}
    terms = call(f"listing the terms of project {project_id}",
                 lambda: TermCollection().fetch_with_filter("project", project_id))
    by_id = {term.id: term.name for term in terms}
    by_name = {term.name.lower(): term.id for term in terms}
    chosen: dict[int, str] = {}
    for term in wanted:
        term_id = int(term) if str(term).isdigit() else by_name.get(str(term).lower())
        if term_id not in by_id:
            known = ", ".join(f"{i} ({n})" for i, n in sorted(by_id.items())) or "none"
            raise CysegError(f"term '{term}' is not a term of project {project_id} (its terms: {known})")
        chosen[term_id] = by_id[term_id]
    return chosen


def resolve_images(project_id: int, wanted: Sequence[int | str]) -> list[Any]:
    """The wanted images (ids or file names) of the project, all of them when none are named."""
    images = list(call(f"listing the images of project {project_id}",
                       lambda: ImageInstanceCollection().fetch_with_filter("project", project_id)))
    if not wanted:
        if not images:
            raise CysegError(f"project {project_id} has no images")
        return images
    by_key = {str(image.id): image for image in images} | {image_name(image): image for image in images}
    missing = [str(key) for key in wanted if str(key) not in by_key]
    if missing:
        known = ", ".join(f"{image.id} ({image_name(image)})" for image in images) or "none"
        raise CysegError(f"image(s) {', '.join(missing)} not in project {project_id} (its images: {known})")
    return list({by_key[str(key)].id: by_key[str(key)] for key in wanted}.values())


def fetch_annotations(selection: Selection, term_ids: Sequence[int], images: list[Any]) -> dict[int, list[Annotated]]:
    """The selected annotations with an area (points and lines are skipped with a warning) per image id, in
    image coordinates; CysegError when there are none or when one lies outside its image."""
    filters: dict[str, Any] = dict(project=selection.project, images=[image.id for image in images],
                                   showWKT=True, showMeta=True)
    if term_ids:
        filters["terms"] = list(term_ids)
    if selection.users:
        filters["users"] = list(selection.users)
    found = call(f"listing the annotations of project {selection.project}",
                 lambda: AnnotationCollection(**filters).fetch())
    by_id = {image.id: image for image in images}
    by_image: dict[int, list[Annotated]] = {}
    flat = []
    for annotation in sorted(found, key=lambda a: a.id):
        image = by_id.get(annotation.image)
        if image is None:  # a server that ignores the images filter
            continue
        geometry = from_cytomine(wkt.loads(annotation.location), image.height)
        if geometry.area <= 0:
            flat.append(annotation.id)
            continue
        by_image.setdefault(image.id, []).append(Annotated(annotation.id, geometry))
    if flat:
        log.warning("%d annotation(s) without an area (points or lines) skipped: %s", len(flat),
                    ", ".join(map(str, flat[:10])) + (" ..." if len(flat) > 10 else ""))
    if not by_image:
        skipped = f" ({len(flat)} without an area were skipped)" if flat else ""
        raise CysegError(f"no annotations match the selection{skipped}: {describe(selection, term_ids, images)}")
    for image_id, listed in by_image.items():
        check_inside(by_id[image_id], listed)
    return by_image


def describe(selection: Selection, term_ids: Sequence[int], images: list[Any]) -> str:
    """The selection in words, for error messages."""
    return (f"project {selection.project}, terms {', '.join(map(str, term_ids)) or 'any'}, "
            f"users {', '.join(map(str, selection.users)) or 'any'}, "
            f"images {', '.join(str(image.id) for image in images)}")


def check_inside(image: Any, annotations: list[Annotated]) -> None:
    """CysegError naming the annotations that stick out of their image by more than a pixel."""
    bounds = box(-OUTSIDE_TOLERANCE, -OUTSIDE_TOLERANCE, image.width + OUTSIDE_TOLERANCE,
                 image.height + OUTSIDE_TOLERANCE)
    outside = [a for a in annotations if a.geometry.is_empty or not bounds.contains(a.geometry)]
    if outside:
        listed = ", ".join(f"{a.id} (bounds {', '.join(f'{b:g}' for b in a.geometry.bounds)})" for a in outside[:5])
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        raise CysegError(f"annotation(s) {listed}{more} lie outside image {image.id} ({image_name(image)}, "
                         f"{image.width}x{image.height} pixels, image coordinates from the top-left): "
                         f"correct or delete them, or leave the image out of the selection")


def to_level(geometry: BaseGeometry, zoom: int) -> BaseGeometry:
    """Full-resolution image coordinates -> coordinates of the zoom level."""
    return affinity.scale(geometry, 0.5 ** zoom, 0.5 ** zoom, origin=(0, 0))


def _clamp(start: float, size: int, limit: int) -> int:
    """The start of a `size` window near `start` that stays within [0, limit] when it fits."""
    return int(max(0, min(round(start), limit - size)))


def _overlaps(shape: BaseGeometry, window: Window) -> bool:
    """Whether the shape and the window share more than a boundary."""
    frame = window.shape
    return shape.intersects(frame) and not shape.touches(frame)


def tile_windows(shapes: list[BaseGeometry], width: int, height: int, size: int) -> list[Window]:
    """The tiles of a `size` grid (shifted inside the image at its right and bottom edges) that overlap a
    shape, top to bottom, left to right."""
    w, h = min(size, width), min(size, height)
    windows: dict[tuple[int, int], Window] = {}
    for shape in shapes:
        left, top, right, bottom = shape.bounds
        for y in range(max(0, int(top)) // size * size, math.ceil(bottom), size):
            for x in range(max(0, int(left)) // size * size, math.ceil(right), size):
                window = Window(_clamp(x, w, width), _clamp(y, h, height), w, h)
                if (window.y, window.x) not in windows and _overlaps(shape, window):
                    windows[window.y, window.x] = window
    return [windows[key] for key in sorted(windows)]


def around_windows(shapes: list[BaseGeometry], width: int, height: int, size: int) -> list[Window]:
    """Windows centred on shapes, in order, skipping shapes already whole in an earlier window."""
    w, h = min(size, width), min(size, height)
    windows: list[Window] = []
    corners = np.empty((0, 2))  # top-left corner of each window
    for shape in shapes:
        left, top, right, bottom = shape.bounds
        inside = ((corners[:, 0] <= left) & (right <= corners[:, 0] + w)
                  & (corners[:, 1] <= top) & (bottom <= corners[:, 1] + h))
        if inside.any():
            continue
        window = Window(_clamp((left + right - w) / 2, w, width), _clamp((top + bottom - h) / 2, h, height), w, h)
        windows.append(window)
        corners = np.vstack([corners, [window.x, window.y]])
    return windows


def rasterize(shapes: list[tuple[int, BaseGeometry]], window: Window) -> tuple[np.ndarray, list[int]]:
    """uint16 instance labels 1..N of the (annotation id, level geometry) shapes that cover a pixel centre of
    the window (larger shapes drawn first, so a small one on a large one shows), and the annotation id of
    each label."""
    canvas = np.zeros((window.height, window.width), dtype=np.uint16)
    if not shapes:
        return canvas, []
    order = sorted(range(len(shapes)), key=lambda i: -shapes[i][1].area)
    moved = [(affinity.translate(shapes[i][1], -window.x, -window.y), i + 1) for i in order]
    drawn = features.rasterize(moved, out_shape=canvas.shape, fill=0, dtype=np.uint16)
    present = np.unique(drawn)
    present = present[present > 0]
    return relabel_consecutive(drawn), [shapes[i - 1][0] for i in present]


def split_slides(image_ids: Sequence[int], shares: tuple[float, float, float], seed: int) -> dict[int, str]:
    """Each slide's split: a seeded shuffle cut by the shares (largest remainders), train never empty."""
    ids = sorted(image_ids)
    exact = np.asarray(shares) * len(ids)
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[:len(ids) - counts.sum()]:
        counts[index] += 1
    if ids and counts[0] == 0:
        counts[int(np.argmax(counts))] -= 1
        counts[0] = 1
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    names = np.repeat(SPLITS, counts)
    return {image_id: str(name) for image_id, name in zip(order, names)}


def split_folders(dataset: str | Path) -> dict[str, Path]:
    """The split folders of a dataset written by `build_dataset` that hold crops (train first)."""
    dataset = Path(dataset)
    manifest_path = dataset / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CysegError(f"{dataset} is not a cyseg dataset (no {MANIFEST_NAME})")
    manifest = json.loads(manifest_path.read_text())
    return {name: dataset / name for name in SPLITS if manifest["splits"].get(name, {}).get("crops")}


def _prepare(out: Path, splits: set[str]) -> None:
    if out.exists() and any(out.iterdir()):
        raise CysegError(f"output folder {out} is not empty: choose a new or empty folder")
    for split in splits:
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(exist_ok=True)


def _write(folder: Path, name: str, pixels: np.ndarray, labels: np.ndarray) -> None:
    Image.fromarray(pixels).save(folder / "images" / f"{name}.png")
    tifffile.imwrite(folder / "labels" / f"{name}.tif", labels, compression="zlib")


def _augmented(pixels: np.ndarray, labels: np.ndarray, augmenter: Augmenter,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image, labels = augmenter(pixels.astype(np.float32), labels, rng)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels.astype(np.uint16)


def plan(selection: Selection, config: DatasetConfig) -> tuple[dict[int, str], list[SlidePlan]]:
    """The terms of the selection and, per image with selected annotations, the windows to cut."""
    terms = resolve_terms(selection.project, selection.terms)
    images = resolve_images(selection.project, selection.images)
    for image in images:
        if config.zoom > max_zoom_level(image):
            raise CysegError(f"zoom {config.zoom} is beyond image {image.id} ({image_name(image)}), "
                             f"whose lowest resolution is zoom level {max_zoom_level(image)}")
    annotations = fetch_annotations(selection, list(terms), images)
    layout = tile_windows if config.layout == "tiles" else around_windows
    factor = 2 ** config.zoom
    plans = []
    for image in images:
        if image.id in annotations:
            level = [to_level(a.geometry, config.zoom) for a in annotations[image.id]]
            windows = layout(level, image.width // factor, image.height // factor, config.crop_size)
            plans.append(SlidePlan(image, annotations[image.id], level, windows))
    return terms, plans


def build_dataset(selection: Selection, config: DatasetConfig, out: str | Path,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Download the crops and masks of the selected annotations into `out` (new or empty) through the
    connected client (the last `Cytomine(...)` or running `CytomineJob`); return the manifest (also
    written to `out/manifest.json`)."""
    out = Path(out)
    project = call(f"fetching project {selection.project}", lambda: Project().fetch(selection.project))
    terms, plans = plan(selection, config)
    splits = split_slides([p.image.id for p in plans], config.split, config.seed)
    _prepare(out, set(splits.values()))
    augmenter = Augmenter(translate=0, jitter=False, defocus_levels=config.defocus_levels, defocus_prob=1.0,
                          blur=RandomDefocus.plain("optical"))
    crops: list[dict[str, Any]] = []
    slides: dict[str, dict[str, Any]] = {}
    total, done = sum(len(p.windows) for p in plans), 0
    for slide in plans:
        image, split = slide.image, splits[slide.image.id]
        shapes = [(a.id, g) for a, g in zip(slide.annotations, slide.level)]
        index = STRtree(slide.level)
        with open_source(image, config.zoom) as source:
            for window in slide.windows:
                name = f"{image.id}-z{config.zoom}-{window.x}-{window.y}"
                pixels = source.read(window.x, window.y, window.width, window.height)
                labels, drawn = rasterize([shapes[i] for i in sorted(index.query(window.shape))], window)
                _write(out / split, name, pixels, labels)
                record = dict(name=name, split=split, image=image.id, zoom=config.zoom, **dataclasses.asdict(window),
                              objects=len(drawn), annotations=drawn)
                crops.append(record)
                if split == "train":
                    rng = np.random.default_rng([config.seed, image.id, window.x, window.y])
                    for copy in range(1, config.augment + 1):
                        _write(out / split, f"{name}-aug{copy}", *_augmented(pixels, labels, augmenter, rng))
                done += 1
                if progress:
                    progress(done, total, f"image {image.id} ({image_name(image)}): {len(slide.windows)} crops")
        slides[str(image.id)] = dict(name=image_name(image), width=image.width, height=image.height, split=split,
                                     annotations=len(slide.annotations), crops=len(slide.windows))
        log.info("image %s (%s, %s): %d annotations, %d crops", image.id, image_name(image), split,
                 len(slide.annotations), len(slide.windows))
    manifest = _manifest(project, selection, config, terms, slides, crops)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest(project: Any, selection: Selection, config: DatasetConfig, terms: dict[int, str],
              slides: dict[str, dict[str, Any]], crops: list[dict[str, Any]]) -> dict[str, Any]:
    per_split = {}
    for split in SPLITS:
        mine = [c for c in crops if c["split"] == split]
        per_split[split] = dict(slides=[int(i) for i, s in slides.items() if s["split"] == split], crops=len(mine),
                                objects=sum(c["objects"] for c in mine),
                                augmented=len(mine) * config.augment if split == "train" else 0)
    return dict(
        format=FORMAT, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source=dict(host=host(), project=project.id, project_name=project.name),
        selection=dict(terms={str(i): n for i, n in terms.items()}, users=list(selection.users),
                       images=list(selection.images)),
        parameters=dataclasses.asdict(config),
        counts=dict(slides=len(slides), annotations=sum(s["annotations"] for s in slides.values()), crops=len(crops),
                    objects=sum(c["objects"] for c in crops)),
        splits=per_split, slides=slides, crops=crops,
        coordinates="crops: x, y, width, height in pixels of the zoom level, origin top-left")
