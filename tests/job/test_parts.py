"""Smaller parts of the job: tissue detection, the duplicate index, the synthetic slide."""
from __future__ import annotations

import json

import numpy as np
import openslide

from cyseg.demo_slide import read_truth, truth_path_for
from cyseg.job.tissue import detect_tissue
from cyseg.job.upload import CentroidIndex
from .helpers import disks


def test_tissue_is_found_on_dark_and_on_white_backgrounds() -> None:
    fluorescence = disks((200, 300), [(50.0, 50.0)], 10)
    mask = detect_tissue(fluorescence, level_width=3000)  # thumbnail of a 10x larger level
    assert mask.covers(400, 400, 200, 200) and not mask.covers(2000, 1000, 500, 500)
    brightfield = 255 - fluorescence
    assert detect_tissue(brightfield, 3000).covers(400, 400, 200, 200)


def test_without_a_clear_background_everything_is_tissue() -> None:
    rng = np.random.default_rng(0)
    busy = rng.integers(90, 170, (100, 100, 3)).astype(np.uint8)
    assert detect_tissue(busy, 100).fraction == 1.0


def test_centroid_index_finds_neighbours_across_cells() -> None:
    index = CentroidIndex(distance=2.0)
    index.add(10.0, 10.0)
    assert index.near(11.9, 10.0) and index.near(8.5, 11.0)
    assert not index.near(12.5, 10.0)
    assert len(index) == 1


def test_demo_slide_is_a_pyramid_with_its_truth(slide) -> None:
    with openslide.OpenSlide(slide.path) as opened:
        assert opened.dimensions == (slide.width, slide.height)
        assert opened.level_count >= 2 and opened.level_downsamples[1] == 2.0
        pixels = np.asarray(opened.read_region((0, 0), 0, (slide.width, slide.height)).convert("L"))
    assert json.loads(truth_path_for(slide.path).read_text())["width"] == slide.width
    truth = read_truth(slide.path)
    assert len(truth) == len(slide.nuclei) > 50
    bright = [pixels[int(n.y), int(n.x)] for n in truth]
    assert min(bright) > 100 and np.median(pixels) < 40  # nuclei where the truth says, dark elsewhere
    assert all(n.x < 2 * slide.width / 3 for n in truth)  # the right third is empty
