"""The job with a focus-gated model: where each of its models ran (a GeoJSON of the tiles, counts in
the summary, a tint on the overlay) and the optional upload of the out-of-focus regions with their own
term, once. The slide is the job tests' demo slide with its left half out of focus; the gate is the
shipped focus classifier in front of the deterministic test model (as both the sharp and the blurry
model), so only the focus decisions are under test."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile
from cytomine.models import Annotation, AnnotationCollection, Project, Term
from PIL import Image
from shapely.geometry import Polygon, box, shape

from cyseg.coordinates import to_cytomine
from cyseg.demo_slide import DemoSlide, write_demo_slide
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.results import FOCUS_NAME, GEOJSON_NAME, SUMMARY_NAME, RegionRecord, write_overlay
from cyseg.pipeline.tissue import everywhere
from cyseg.pipeline.workflow import TileFocus, Workflow, blurry_regions
from cyseg.server.runner import Endpoint
from segmenter.checkpoint import Checkpoint
from segmenter.focus import load_focus_classifier
from segmenter.focus_gated import FocusGated
from segmenter.registry import model_path
from transforms import defocus
from .helpers import SLIDE_SIZE, ArraySource, RunJob, ThresholdSegmenter, connect, threshold_segmenter

BLURRED_NAME = "half-blurred.png"
WIDTH, HEIGHT = SLIDE_SIZE
BLURRED_WIDTH = WIDTH // 2  # the left half is out of focus: tile columns 0 and 1 with TILES
TILES = {"tile_size": 256, "tile_overlap": 0}
SUCCESS = 3


def blurred_pixels(demo: DemoSlide) -> np.ndarray:
    pixels = tifffile.imread(demo.path, key=0)
    pixels[:, :BLURRED_WIDTH] = defocus(pixels[:, :BLURRED_WIDTH], 8, seed=0)
    return pixels


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> DemoSlide:
    """The demo slide with its left half 8 px out of focus, as a PNG the server reads whole (overrides
    conftest's `slide`, so the server of these tests serves this one)."""
    demo = write_demo_slide(tmp_path_factory.mktemp("demo") / "nuclei.tif", *SLIDE_SIZE, seed=3)
    path = tmp_path_factory.mktemp("slides") / BLURRED_NAME
    Image.fromarray(blurred_pixels(demo)).save(path)
    return DemoSlide(path, demo.truth_path, demo.width, demo.height, demo.nuclei)


@pytest.fixture(scope="module")
def gated_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped focus classifier (its own threshold) routing to the test model."""
    part = Checkpoint(family=ThresholdSegmenter.name, architecture={}, class_names=["background", "nucleus"],
                      in_channels=3, normalization={}, state_dict={}, threshold=0.5)
    gated = FocusGated.build_checkpoint(Checkpoint.load(model_path("focus")), part, part)
    return gated.save(tmp_path_factory.mktemp("model") / "gated.pt")


@pytest.fixture
def blurry_term(server: Endpoint) -> int:
    connect(server)
    return Term("Out of focus", Project().fetch(server.project_id).ontology, "#4363d8").save().id


def term_annotations(server: Endpoint, term: int) -> list[Polygon]:
    """The geometries (Cytomine coordinates) of every annotation with `term` in the slide, by any user."""
    found = AnnotationCollection(image=server.images[BLURRED_NAME], term=term, includeAlgo=True, showWKT=True).fetch()
    return [shapely.from_wkt(a.location) for a in found]


def focus_features(results: Path) -> list[dict]:
    return json.loads((results / FOCUS_NAME).read_text())["features"]


def summary_row(results: Path) -> dict[str, str]:
    with (results / SUMMARY_NAME).open() as stream:
        return next(csv.DictReader(stream))


def test_focus_tiles_follow_the_blurred_half_and_its_region_is_uploaded_once(
        run_job: RunJob, server: Endpoint, gated_model: Path, blurry_term: int, tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = run_job(model=str(gated_model), cytomine_id_blurry_term=blurry_term, **TILES)
    assert first.exit_code == 0 and first.job.status == SUCCESS
    assert FOCUS_NAME in first.attached()
    features = focus_features(results)
    row = summary_row(results)
    assert len(features) == int(row["tiles_with_tissue"]) > 6
    for feature in features:
        tile = shape(feature["geometry"])
        left_half = tile.bounds[2] <= BLURRED_WIDTH
        assert feature["properties"]["model"] == ("blurry" if left_half else "sharp"), tile.bounds
        assert feature["properties"]["blurry"] == left_half
        assert feature["properties"]["image_id"] == server.images[BLURRED_NAME]
    assert (int(row["blurry_model_tiles"]), int(row["sharp_model_tiles"])) == (6, len(features) - 6)

    regions = term_annotations(server, blurry_term)
    assert len(regions) == 1  # the six blurry tiles, merged
    assert regions[0].symmetric_difference(box(0, 0, BLURRED_WIDTH, HEIGHT)).area < 1.0
    sharp_tiles = [shape(f["geometry"]) for f in features if f["properties"]["model"] == "sharp"]
    assert all(regions[0].intersection(tile).area == 0 for tile in sharp_tiles)
    nuclei = [a for a in first.annotations() if blurry_term not in a.term]
    assert nuclei and all(a.term == [server.terms["Nucleus"]] for a in nuclei)

    second = run_job(model=str(gated_model), cytomine_id_blurry_term=blurry_term, **TILES)
    assert second.exit_code == 0 and second.job.id != first.job.id
    assert second.annotations() == []
    assert len(term_annotations(server, blurry_term)) == 1


def test_blurry_region_is_clipped_to_the_region_of_interest(
        run_job: RunJob, server: Endpoint, gated_model: Path, blurry_term: int) -> None:
    # image coordinates, across both halves; its window starts at x = 0, so tiles do not straddle them
    roi = Polygon([(0, 50), (900, 200), (0, 700)])
    connect(server)
    assert Annotation(location=to_cytomine(roi, HEIGHT).wkt, id_image=server.images[BLURRED_NAME],
                      id_project=server.project_id, id_terms=[server.terms["ROI"]]).save()
    outcome = run_job(model=str(gated_model), cytomine_id_blurry_term=blurry_term,
                      cytomine_id_roi_term=server.terms["ROI"], **TILES)
    assert outcome.exit_code == 0
    regions = term_annotations(server, blurry_term)
    expected = to_cytomine(roi.intersection(box(0, 0, BLURRED_WIDTH, HEIGHT)), HEIGHT)
    assert len(regions) == 1 and regions[0].symmetric_difference(expected).area < 0.01 * expected.area


def test_model_not_focus_gated_ignores_the_blurry_term(run_job: RunJob, server: Endpoint, blurry_term: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cyseg.job.runner"):
        outcome = run_job(cytomine_id_blurry_term=blurry_term, **TILES)
    assert outcome.exit_code == 0 and outcome.job.status == SUCCESS
    assert f"cytomine_id_blurry_term={blurry_term} ignored" in caplog.text
    assert outcome.annotations() and term_annotations(server, blurry_term) == []
    assert FOCUS_NAME not in outcome.attached() and GEOJSON_NAME in outcome.attached()


def test_blurry_term_must_be_a_term_of_the_project(run_job: RunJob, gated_model: Path) -> None:
    outcome = run_job(model=str(gated_model), cytomine_id_blurry_term=999999)
    assert outcome.exit_code == 1
    assert "cytomine_id_blurry_term=999999 is not a term of project" in outcome.job.statusComment


def test_tile_boxes_are_in_full_resolution_pixels(slide: DemoSlide) -> None:
    gate = FocusGated(load_focus_classifier("focus", device="cpu"), threshold_segmenter(), threshold_segmenter())
    pixels = np.asarray(Image.open(slide.path).convert("RGB"))
    config = JobConfig(zoom_level=1, tile_size=128, tile_overlap=0, batch_size=4)
    source = ArraySource(pixels, zoom_level=1)
    result = Workflow(gate, config).run(source, everywhere(source.width, source.height))
    assert len(result.focus) == result.tiles == 12
    assert all((right - left, bottom - top) == (256, 256) for left, top, right, bottom in
               (d.box for d in result.focus))
    assert shapely.union_all([box(*d.box) for d in result.focus]).equals(box(0, 0, WIDTH, HEIGHT))


def test_blurry_regions_merge_touching_tiles_and_clip_to_the_roi() -> None:
    decisions = [TileFocus((0, 0, 100, 100), 8.0, "blurry"), TileFocus((90, 0, 200, 100), 7.5, "blurry"),
                 TileFocus((100, 100, 300, 300), 0.1, "sharp"), TileFocus((300, 300, 400, 400), 9.0, "blurry")]
    regions = blurry_regions(decisions, image_height=400)
    assert sorted(r.polygon.bounds for r in regions) == [(0, 300, 200, 400), (300, 0, 400, 100)]
    assert all(r.polygon.equals(box(*r.polygon.bounds)) for r in regions)
    clipped = blurry_regions(decisions, image_height=400, roi=box(150, 250, 350, 400))
    assert [r.polygon.bounds for r in clipped] == [(150, 300, 200, 400)]


def test_overlay_tints_the_tiles_of_the_blurry_model(tmp_path: Path) -> None:
    focus = [TileFocus((0, 0, 500, 1000), 8.0, "blurry"), TileFocus((500, 0, 1000, 1000), 0.2, "sharp")]
    record = RegionRecord(1, "slide", 1000, "whole image", focus=focus)
    path = write_overlay(tmp_path / "overlay.png", np.zeros((100, 100, 3), np.uint8), 1000, [record])
    picture = np.asarray(Image.open(path))
    tinted, plain = picture[50, 20], picture[50, 80]
    assert tinted[2] > tinted[0] and tinted[2] > 0
    assert plain.tolist() == [0, 0, 0]
