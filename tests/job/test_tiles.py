"""Tiles -> polygons -> merged objects, on in-memory slides with disks at known places."""
from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from cyseg.coordinates import from_cytomine
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.source import OpenSlideSource
from cyseg.pipeline.tiles import LevelImage, region_image, remove_specks, same_size_batches, tile_topology
from cyseg.pipeline.tissue import detect_tissue, everywhere
from cyseg.pipeline.workflow import Workflow
from .helpers import ArraySource, disks, threshold_segmenter


def centres(result, height: int) -> list[tuple[float, float]]:
    return sorted((round(c.x, 1), round(c.y, 1)) for c in
                  (from_cytomine(o.polygon, height).centroid for o in result.objects))


@pytest.mark.parametrize("size", [(1000, 700), (200, 700)])
def test_tiles_cover_the_region_and_batches_have_one_size(size: tuple[int, int]) -> None:
    source = ArraySource(np.zeros((size[1], size[0], 3), dtype=np.uint8))
    topology = tile_topology(region_image(source), 256, 32)
    tiles = [topology.tile(i) for i in range(1, topology.tile_count + 1)]
    covered = np.zeros((size[1], size[0]), dtype=bool)
    for tile in tiles:
        assert tile.offset_x + tile.width <= size[0] and tile.offset_y + tile.height <= size[1]
        covered[tile.offset_y:tile.offset_y + tile.height, tile.offset_x:tile.offset_x + tile.width] = True
    assert covered.all()
    batches = same_size_batches(tiles, 3)
    assert sorted(t.identifier for b in batches for t in b) == list(range(1, topology.tile_count + 1))
    assert all(len(b) <= 3 and len({(t.width, t.height) for t in b}) == 1 for b in batches)
    assert (batches[0][0].width, batches[0][0].height) == (min(256, size[0]), 256)


def test_specks_are_removed_objects_kept() -> None:
    mask = np.zeros((20, 20), dtype=np.int32)
    mask[1, 1] = 1
    mask[5:10, 5:10] = 1
    cleaned = remove_specks(mask, 4)
    assert cleaned[1, 1] == 0 and cleaned[5:10, 5:10].all()


def test_objects_across_tile_seams_are_merged_once_and_in_place() -> None:
    # disks on the seams of 128-pixel tiles (overlap 16), one in a corner shared by four tiles
    positions = [(120.0, 60.0), (60.0, 118.0), (115.0, 115.0), (200.0, 200.0)]
    source = ArraySource(disks((300, 400), positions, 9))
    config = JobConfig(tile_size=128, tile_overlap=16, batch_size=3, min_area=10, simplify_tolerance=0)
    result = Workflow(threshold_segmenter(), config).run(source, everywhere(400, 300))
    found = centres(result, 300)
    assert len(found) == len(positions)
    for x, y in positions:
        assert min(np.hypot(x - fx, y - fy) for fx, fy in found) < 0.5
    assert result.tiles > 4


def test_roi_windows_and_zoom_levels_give_full_resolution_coordinates() -> None:
    positions = [(300.0, 200.0), (340.0, 260.0), (700.0, 500.0)]
    pixels = disks((600, 800), positions, 12)
    roi = box(250, 150, 420, 320)  # image coordinates: holds the first two disks only
    for zoom in (0, 1):
        config = JobConfig(tile_size=64, tile_overlap=16, batch_size=4, min_area=50, zoom_level=zoom)
        source = ArraySource(pixels, zoom)
        result = Workflow(threshold_segmenter(), config).run(source, everywhere(source.width, source.height), roi)
        found = centres(result, 600)
        assert len(found) == 2
        for (x, y), (fx, fy) in zip(positions[:2], found):
            assert abs(x - fx) < 1.5 and abs(y - fy) < 1.5
        assert all(roi.contains(Point(p)) for p in found)


def test_tiles_without_tissue_are_not_segmented(slide) -> None:
    source = OpenSlideSource(slide.path, 0)
    tissue = detect_tissue(source.thumbnail(1024), source.width)
    calls = []
    model = threshold_segmenter()
    segment = model.instances_batch
    model.instances_batch = lambda images: calls.append(len(images)) or segment(images)
    config = JobConfig(tile_size=128, tile_overlap=16, batch_size=4)
    result = Workflow(model, config).run(source, tissue)
    source.close()
    assert result.tiles_with_tissue < result.tiles and sum(calls) == result.tiles_with_tissue
    assert len(result.objects) == len(slide.nuclei)


def test_level_image_is_never_loaded_whole() -> None:
    with pytest.raises(NotImplementedError):
        LevelImage(ArraySource(np.zeros((10, 10, 3), dtype=np.uint8))).np_image
