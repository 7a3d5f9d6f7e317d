"""The Otsu + watershed baseline as a Segmenter: grey and RGB input, splitting, checkpoint round trip."""
from __future__ import annotations

import numpy as np
import pytest

import segmenter
from segmenter.classical import OtsuWatershed, nuclear_signal
from transforms import PostProcess


def touching_pair(shape=(96, 96)) -> np.ndarray:
    yy, xx = np.indices(shape)
    image = np.full(shape, 100.0)
    for cx in (34, 58):                                   # two discs of radius 14 overlapping by 4 px
        image[(yy - 48) ** 2 + (xx - cx) ** 2 <= 14 ** 2] = 1000.0
    return (image + np.random.default_rng(0).normal(0, 10, shape)).astype(np.uint16)


def test_baseline_splits_touching_nuclei_and_ignores_the_background():
    model = OtsuWatershed(PostProcess(min_distance=7, min_size=30))
    found = model.instances(touching_pair())
    assert len(found) == 2 and set(found.classes) == {1}
    left, right = found.labels[48, 28], found.labels[48, 64]
    assert left and right and left != right
    assert found.labels[5, 5] == 0
    proba = model.predict_proba(touching_pair())
    assert proba.shape == (2, 96, 96) and np.allclose(proba.sum(axis=0), 1)


def test_brightfield_nuclei_are_found_in_the_hematoxylin_channel():
    grey = touching_pair()
    rgb = np.full(grey.shape + (3,), 235, np.uint8)
    rgb[grey > 500] = (80, 60, 150)                       # hematoxylin purple on a pale background
    assert nuclear_signal(rgb)[48, 34] > nuclear_signal(rgb)[5, 5]
    assert len(OtsuWatershed(PostProcess(min_distance=7, min_size=30)).instances(rgb)) == 2
    with pytest.raises(ValueError, match=r"grey \(H, W\) or RGB"):
        nuclear_signal(np.zeros((8, 8, 4)))


def test_shipped_baseline_loads_like_a_model(tmp_path):
    model = segmenter.load("otsu", backend="openvino")     # network options mean nothing here
    assert isinstance(model, OtsuWatershed) and model.postprocess.min_distance >= 3
    path = model.to_checkpoint().save(tmp_path / "otsu.pt")
    again = segmenter.load(path)
    assert again.postprocess == model.postprocess
    with pytest.raises(ValueError, match="takes no options"):
        segmenter.load(path, threshold=0.3)
    assert len(OtsuWatershed(PostProcess()).instances(np.zeros((32, 32), np.uint16))) == 0
