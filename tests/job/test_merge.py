"""Instance-aware merging across tiles: hand-made tile objects on real topologies, the workflow on
slides whose instances are known exactly, the job end to end (terms and score properties), and the
shipped U-Net on the synthetic slide."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np
import pytest
import shapely
import sldc
from cytomine.models import AnnotationCollection, JobCollection, PropertyCollection
from shapely.geometry import Point, Polygon, box

import segmenter
from cyseg.coordinates import from_cytomine
from cyseg.demo_slide import DemoSlide
from cyseg.job import upload
from cyseg.job.runner import class_terms
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.merge import InstanceMerger, MergedObject, SemanticTileMerger, shared_zone, tile_core
from cyseg.pipeline.results import GEOJSON_NAME
from cyseg.pipeline.source import OpenSlideSource
from cyseg.pipeline.tiles import TilePolygons, inner_edges, region_image, region_size, tile_box, tile_topology
from cyseg.pipeline.timing import StageTimes
from cyseg.pipeline.tissue import detect_tissue, everywhere
from cyseg.pipeline.workflow import Workflow
from cyseg.polygons import label_polygons
from cyseg.server.fault_proxy import ERROR, FaultProxy
from cyseg.server.runner import Endpoint, LocalServer
from cyseg.synthetic import render
from segmenter.base import Instances, Segmenter
from segmenter.checkpoint import Checkpoint
from .helpers import SLIDE_SIZE, ArraySource, RunJob, ThresholdSegmenter, connect, job_argv, threshold_segmenter

TILE = 128


# --- hand-made tile objects ------------------------------------------------------------------------

def topology_of(width: int, height: int, overlap: int, tile: int = TILE) -> sldc.TileTopology:
    return tile_topology(region_image(ArraySource(np.zeros((height, width, 3), dtype=np.uint8))), tile, overlap)


def seen_by_tiles(objects: Sequence[Polygon], topology: sldc.TileTopology, labels: Sequence[int] | None = None,
                  scores: Sequence[float] | None = None, skip: Sequence[int] = ()) -> TilePolygons:
    """What a perfect instance segmenter finds per tile: each object clipped to each tile it meets, cut
    when the piece reaches an inner edge of the tile; tiles in `skip` are not segmented."""
    labels = labels or [1] * len(objects)
    scores = scores or [0.9] * len(objects)
    size = region_size(topology)
    found = TilePolygons([], [], [], [], [])
    for identifier in range(1, topology.tile_count + 1):
        bounds = tile_box(topology.tile(identifier))
        left, top, right, bottom = inner_edges(bounds, size)
        found.tile_ids.append(identifier)
        for column in (found.polygons, found.labels, found.scores, found.cut):
            column.append([])
        if identifier in skip:
            continue
        for obj, label, score in zip(objects, labels, scores):
            piece = obj.intersection(box(*bounds))
            if piece.area == 0:
                continue
            x0, y0, x1, y1 = piece.bounds
            found.polygons[-1].append(piece)
            found.labels[-1].append(label)
            found.scores[-1].append(score)
            found.cut[-1].append((left and x0 <= bounds[0]) or (top and y0 <= bounds[1])
                                 or (right and x1 >= bounds[2]) or (bottom and y1 >= bounds[3]))
    return found


def disk(x: float, y: float, radius: float) -> Polygon:
    return Point(x, y).buffer(radius, quad_segs=16)


def iou(a: Polygon, b: Polygon) -> float:
    return a.intersection(b).area / a.union(b).area


def assert_one_each(merged: list[MergedObject], truth: Sequence[Polygon]) -> None:
    """Exactly one merged object per true object, with the true outline."""
    assert len(merged) == len(truth)
    for obj in truth:
        assert sorted(iou(obj, m.polygon) > 0.99 for m in merged) == [False] * (len(merged) - 1) + [True]


def test_tile_cores_partition_the_region() -> None:
    topology = topology_of(420, 300, 16)  # the last column and row of tiles are narrower
    size = region_size(topology)
    cores = [box(*tile_core(tile_box(topology.tile(i)), size, 16)) for i in range(1, topology.tile_count + 1)]
    assert shapely.union_all(cores).equals(box(0, 0, 420, 300))
    assert sum(core.area for core in cores) == pytest.approx(420 * 300)
    first = tile_box(topology.tile(1))  # top-left: the core reaches the region's borders
    assert tile_core(first, size, 16) == (0, 0, first[2] - 8, first[3] - 8)


def test_shared_zone_is_the_overlap_or_the_seam_line() -> None:
    assert shared_zone((0, 0, 128, 128), (112, 0, 240, 128)).equals(box(112, 0, 128, 128))
    assert shared_zone((0, 0, 128, 128), (128, 0, 256, 128)).length == 128  # overlap 0: the seam
    assert shared_zone((0, 0, 128, 128), (128, 128, 256, 256)) is None  # only a corner point


@pytest.mark.parametrize("overlap", [0, 16])
def test_objects_on_seams_corners_and_borders_are_kept_once(overlap: int) -> None:
    topology = topology_of(420, 300, overlap)
    mid = TILE - overlap / 2  # the first seam, in both directions
    truth = [disk(mid, 50, 6),  # on a seam
             disk(mid, mid, 6),  # on a corner of 4 tiles
             box(0, 200, 9, 214), box(410, 286, 420, 300),  # on the slide's border (the second in its corner)
             disk(60, 60, 8)]  # inside one tile
    merged = InstanceMerger().merge(seen_by_tiles(truth, topology), topology)
    assert_one_each(merged, truth)


def test_touching_pair_across_a_seam_is_never_fused() -> None:
    topology = topology_of(420, 300, 16)
    pair = [box(111, 40, 120, 60), box(120, 40, 133, 60)]  # sharing the edge x = 120, each cut in one tile
    found = seen_by_tiles(pair, topology)
    assert_one_each(InstanceMerger().merge(found, topology), pair)
    assert len(SemanticTileMerger().merge(found, topology)) == 1  # SLDC's semantic merger fuses them


@pytest.mark.parametrize("overlap", [0, 16, 31])
def test_object_larger_than_the_overlap_is_unioned_once(overlap: int) -> None:
    topology = topology_of(420, 300, overlap)
    mid = TILE - overlap / 2
    big = [disk(mid, 60, 25),  # cut in both tiles
           disk(2 * (TILE - overlap) + overlap / 2, mid, 25)]  # cut in four tiles around a corner
    merged = InstanceMerger().merge(seen_by_tiles(big, topology, scores=[0.8, 0.6]), topology)
    assert_one_each(merged, big)
    assert sorted(m.score for m in merged) == pytest.approx([0.6, 0.8])


def test_touching_pair_both_larger_than_the_overlap_stays_two_objects() -> None:
    topology = topology_of(420, 300, 16)
    pair = [box(100, 140, 140, 180), box(100, 180, 140, 220)]  # both straddle the seam x = 120, touching at y = 180
    assert_one_each(InstanceMerger().merge(seen_by_tiles(pair, topology), topology), pair)


def test_touching_pieces_of_different_classes_are_not_unioned() -> None:
    topology = topology_of(420, 300, 0)
    pair = [box(100, 40, 128, 60), box(128, 40, 150, 60)]  # overlap 0: both touch the seam x = 128
    merged = InstanceMerger().merge(seen_by_tiles(pair, topology, labels=[1, 2]), topology)
    assert_one_each(merged, pair)
    assert sorted(m.label for m in merged) == [1, 2]


def test_versions_that_differ_slightly_are_kept_once_with_the_best_score() -> None:
    topology = topology_of(420, 300, 16)
    found = seen_by_tiles([], topology)
    # the same object seen by tiles 1 and 2 a pixel apart: each version's centroid lies in its own tile's core
    for tile, x, score in ((1, 119.5, 0.7), (2, 120.5, 0.9)):
        index = found.tile_ids.index(tile)
        found.polygons[index].append(disk(x, 50, 5))
        found.labels[index].append(1)
        found.scores[index].append(score)
        found.cut[index].append(False)
    merged = InstanceMerger().merge(found, topology)
    assert [(m.polygon.centroid.x, m.score) for m in merged] == [(pytest.approx(120.5), 0.9)]
    backwards = TilePolygons(*(column[::-1] for column in (found.tile_ids, found.polygons, found.labels,
                                                              found.scores, found.cut)))
    assert [m.polygon.wkt for m in InstanceMerger().merge(backwards, topology)] == [m.polygon.wkt for m in merged]


def test_piece_whose_other_tile_was_not_segmented_is_kept() -> None:
    topology = topology_of(420, 300, 16)
    obj = disk(240, 50, 20)  # straddles tiles 2 and 3; tile 3 has no tissue
    merged = InstanceMerger().merge(seen_by_tiles([obj], topology, skip=[3]), topology)
    assert len(merged) == 1 and merged[0].polygon.equals(obj.intersection(box(*tile_box(topology.tile(2)))))


def test_instance_merger_needs_instances() -> None:
    topology = topology_of(200, 200, 16)
    with pytest.raises(ValueError, match="returns instances"):
        InstanceMerger().merge(TilePolygons([1], [[disk(50, 50, 5)]], [[1]]), topology)
    with pytest.raises(ValueError, match="needs a segmenter that returns instances"):
        Workflow(SemanticOnly(), JobConfig(), merger=InstanceMerger())


# --- the workflow on slides whose instances are known ----------------------------------------------

class SemanticOnly(sldc.SemanticSegmenter):
    """A plain SLDC segmenter: class masks only."""

    def segment(self, image: np.ndarray) -> np.ndarray:
        return (image[..., 0] > 0).astype(np.int32)


class IdSegmenter(Segmenter):
    """Reads the instances drawn in the pixels: red = object id, green = its class; score = id / 100."""

    name = "test-ids"

    def __init__(self) -> None:
        super().__init__(["background", "nucleus", "other"], "cpu")
        self.extras = 0

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, device: Any = None, **options: Any) -> "IdSegmenter":
        return cls()

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.stack([image[..., 0] == 0, image[..., 0] > 0]).astype(np.float32) for image in images]

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        found = []
        for image in images:
            ids = image[..., 0].astype(np.int64)
            present = np.unique(ids[ids > 0])
            lookup = np.zeros(256, dtype=np.int64)
            lookup[present] = np.arange(1, len(present) + 1)
            classes = np.zeros(256, dtype=np.int32)
            classes[ids.ravel()] = image[..., 1].ravel()
            self.extras += 1
            found.append(Instances(lookup[ids], present / 100, classes[present], extra={"tile": self.extras}))
        return found


def drawn_slide(width: int, height: int, objects: list[tuple[float, float, float, int]]) -> np.ndarray:
    """RGB pixels of disks (x, y, radius, class), object i + 1 in red; a later disk covers an earlier one."""
    rows, cols = np.indices((height, width))
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    for index, (x, y, radius, label) in enumerate(objects, start=1):
        inside = (cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2 <= radius ** 2
        pixels[inside] = (index, label, 255)
    return pixels


def seam_layout(overlap: int) -> list[tuple[float, float, float, int]]:
    """Disks around the seams of 128-pixel tiles on a 420 × 300 slide (seam k at k·stride + overlap/2)."""
    stride = TILE - overlap
    seam = [k * stride + overlap / 2 for k in range(4)]
    return [(seam[1], 50, 6, 1),  # on a seam
            (seam[1], seam[1], 6, 1),  # on a corner of four tiles
            (seam[2] - 4, 60, 7, 1), (seam[2] + 9, 60, 7, 1),  # a touching pair across a seam
            (40, seam[1] - 4, 7, 2), (40, seam[1] + 9, 7, 2),  # another, of the second class
            (seam[3], 60, 20, 1),  # larger than the overlap, across a seam
            (seam[2], seam[2], 20, 1),  # larger than the overlap, on a corner
            (seam[1], 160, 20, 1), (seam[1], 199, 20, 1),  # a touching pair, both larger than the overlap
            (6, 250, 9, 1), (250, 295, 9, 1), (415, 150, 8, 2)]  # on the slide's borders


@pytest.mark.parametrize("overlap", [0, 16, 31])
def test_workflow_keeps_every_drawn_object_once(overlap: int) -> None:
    layout = seam_layout(overlap)
    pixels = drawn_slide(420, 300, layout)
    truth = label_polygons(pixels[..., 0])
    model = IdSegmenter()
    config = JobConfig(tile_size=TILE, tile_overlap=overlap, batch_size=4, min_area=10, simplify_tolerance=0)
    result = Workflow(model, config).run(ArraySource(pixels), everywhere(420, 300))
    found = [(from_cytomine(o.polygon, 300), o) for o in result.objects]
    assert len(found) == len(truth)
    for label, outline in truth.items():
        matches = [o for polygon, o in found if iou(polygon, outline) > 0.99]
        assert len(matches) == 1, f"object {label} at {outline.centroid}"
        assert (matches[0].label, matches[0].score) == (layout[label - 1][3], pytest.approx(label / 100))


def test_workflow_keeps_each_tiles_extra() -> None:
    pixels = drawn_slide(300, 200, [(60, 60, 8, 1)])
    model = IdSegmenter()
    config = JobConfig(tile_size=TILE, tile_overlap=16, batch_size=2)
    topology = tile_topology(region_image(ArraySource(pixels)), TILE, 16)
    found = Workflow(model, config).tiles.run(topology, [1, 2, 4], StageTimes())
    assert {tile: extra["tile"] for tile, extra in found.extras.items()} == {1: 1, 2: 2, 4: 3}  # tiles 3, 5, 6 skipped


def test_semantic_merger_can_be_chosen_for_an_instance_segmenter() -> None:
    pixels = drawn_slide(300, 200, [(120, 60, 6, 1), (60, 150, 6, 1)])
    model = threshold_segmenter()
    calls: list[int] = []
    segment = model.segment_batch
    model.segment_batch = lambda images: calls.append(len(images)) or segment(images)
    config = JobConfig(tile_size=TILE, tile_overlap=16, batch_size=4, min_area=10)
    result = Workflow(model, config, merger=SemanticTileMerger()).run(ArraySource(pixels), everywhere(300, 200))
    assert len(result.objects) == 2 and sum(calls) == result.tiles
    assert all(o.score is None for o in result.objects)


# --- the job end to end: terms and properties ------------------------------------------------------

@pytest.fixture(scope="session")
def cell_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The threshold model, its class named like no term of the test project."""
    checkpoint = Checkpoint(family=ThresholdSegmenter.name, architecture={}, class_names=["background", "cell"],
                            in_channels=3, normalization={}, state_dict={}, threshold=0.5)
    return checkpoint.save(tmp_path_factory.mktemp("cell-model") / "cell.pt")


def properties(annotation: Any) -> dict[str, str]:
    return {p.key: p.value for p in PropertyCollection(annotation).fetch()}


def test_class_terms_match_names_case_insensitively() -> None:
    assert class_terms(["background", "Nucleus", "mitosis"], {7: "NUCLEUS", 3: "Other", 9: "nucleus"}) == {1: 7}


def test_class_named_like_a_term_gets_it_and_scores_are_properties(run_job: RunJob, server: Endpoint,
                                                                     slide: DemoSlide, tmp_path: Path) -> None:
    outcome = run_job(cytomine_id_result_term=None, tile_size=256)  # the model's class is "nucleus"
    assert outcome.exit_code == 0
    annotations = outcome.annotations()
    assert len(annotations) == len(slide.nuclei)
    assert all(a.term == [server.terms["Nucleus"]] for a in annotations)
    for annotation in annotations:
        found = properties(annotation)
        assert found[upload.CLASS_KEY] == "nucleus" and 0.5 <= float(found[upload.SCORE_KEY]) <= 1
    features = json.loads((tmp_path / "results" / GEOJSON_NAME).read_text())["features"]
    assert len(features) == len(slide.nuclei)
    assert all(f["properties"]["class"] == "nucleus" and 0.5 <= f["properties"]["score"] <= 1 for f in features)


def test_failing_property_request_fails_the_job_and_stops_the_others(
        live_server: LocalServer, run_module: ModuleType, threshold_model: Path, slide: DemoSlide,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A property request that keeps failing (a gateway answering 503 to the third one and its retries)
    ends the job FAILED, naming it, with every annotation stored once and no further property request sent."""
    monkeypatch.setattr(upload, "BACKOFF_S", 0.0)
    monkeypatch.setattr(upload, "PROPERTY_CHUNK", 10)
    monkeypatch.setattr(upload, "WORKERS", 1)
    requests_sent: list[str] = []  # property POSTs, by URL (a chunk's URL names its first annotation)

    def doomed(method: str, path: str) -> bool:
        if method != "POST" or not path.endswith("/property.json") or "Annotation/" not in path:
            return False
        if path not in requests_sent:
            requests_sent.append(path)
        return requests_sent.index(path) == 2

    with FaultProxy(live_server.endpoint.host, rate=1.0, faults=(ERROR,), where=doomed) as proxy:
        through_proxy = dataclasses.replace(live_server.endpoint, host=proxy.host)
        exit_code = run_module.main(job_argv(through_proxy, threshold_model, cytomine_id_result_term=None,
                                             tile_size=256))
    connect(live_server.endpoint)
    job = JobCollection(project=live_server.endpoint.project_id).fetch()[-1]
    assert exit_code == 1 and job.status == 4  # FAILED
    assert "adding the properties of 10 annotations in image" in job.statusComment
    assert "failed after 8 attempt(s): it answered HTTP 50" in job.statusComment
    annotations = list(AnnotationCollection(job=job.id, includeAlgo=True, showWKT=True).fetch())
    assert len(annotations) == len(slide.nuclei)
    assert len(requests_sent) == 3 < math.ceil(len(slide.nuclei) / 10)
    assert sum(bool(properties(a)) for a in annotations) == 20  # the first two requests' annotations


def test_other_classes_get_the_result_term(run_job: RunJob, server: Endpoint, slide: DemoSlide,
                                           cell_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "SCORE_PROPERTIES", False)
    outcome = run_job(model=str(cell_model), cytomine_id_result_term=server.terms["ROI"], tile_size=256)
    assert outcome.exit_code == 0
    annotations = outcome.annotations()
    assert len(annotations) == len(slide.nuclei)
    assert all(a.term == [server.terms["ROI"]] for a in annotations)
    assert properties(annotations[0]) == {}  # properties switched off


# --- the shipped U-Net ------------------------------------------------------------------------------

@pytest.mark.slow
def test_shipped_model_finds_each_nucleus_at_most_once(slide: DemoSlide) -> None:
    """The default U-Net (watershed instances) over many seams: no nucleus is found twice."""
    if not segmenter.model_path("default").is_file():
        pytest.skip("the default model has not been trained yet")
    model = segmenter.load("default", device="cpu", batch_size=4)
    width, height = SLIDE_SIZE
    truth = render((height, width), slide.nuclei, np.random.default_rng(0))[1]
    config = JobConfig(tile_size=192, tile_overlap=32, batch_size=4, simplify_tolerance=0)
    with OpenSlideSource(slide.path, 0) as source:
        result = Workflow(model, config).run(source, detect_tissue(source.thumbnail(1024), source.width))
    outlines = [from_cytomine(o.polygon, height) for o in result.objects]
    hits = [int(truth[int(p.centroid.y), int(p.centroid.x)]) for p in outlines]
    matched = [hit for hit in hits if hit]
    assert len(set(matched)) > 0.9 * len(slide.nuclei)
    assert len(matched) == len(set(matched))  # no nucleus twice
    tree = shapely.STRtree(outlines)
    first, second = tree.query(outlines, predicate="intersects")
    pairs = [(i, j) for i, j in zip(first.tolist(), second.tolist()) if i < j]
    assert all(outlines[i].intersection(outlines[j]).area < 0.1 * min(outlines[i].area, outlines[j].area)
               for i, j in pairs)
