"""Test-time augmentation: every view is undone exactly, the views are averaged, and a model run with
`tta` is equivariant to flips and turns of its input."""
import numpy as np
import pytest

import segmenter
from segmenter import UNetSegmenter
from segmenter.tta import VIEWS, dihedral_mean

from .conftest import tiny_checkpoint


def test_each_view_is_undone_on_non_square_batches():
    batch = np.random.default_rng(0).random((2, 3, 16, 24)).astype(np.float32)
    seen = []
    np.testing.assert_allclose(dihedral_mean(lambda view: seen.append(view.shape) or view, batch), batch, atol=1e-6)
    assert len(seen) == len(VIEWS) == 8 and {(16, 24), (24, 16)} == {shape[2:] for shape in seen}


def test_views_are_averaged():
    def top_left(view: np.ndarray) -> np.ndarray:  # not equivariant: marks one corner of whatever it sees
        out = np.zeros_like(view)
        out[..., 0, 0] = 1.0
        return out

    mean = dihedral_mean(top_left, np.zeros((1, 1, 8, 8), np.float32))[0, 0]
    corners = mean[[0, 0, -1, -1], [0, -1, 0, -1]]
    np.testing.assert_allclose(corners, 0.25)  # each corner is the top-left of two of the eight views
    assert mean.sum() == pytest.approx(1.0)


def test_model_with_tta_is_equivariant_to_transposition_and_flips():
    image = np.random.default_rng(1).integers(0, 255, (40, 56, 3)).astype(np.uint8)
    plain = UNetSegmenter(tiny_checkpoint(in_channels=3, seed=2))
    augmented = UNetSegmenter(tiny_checkpoint(in_channels=3, seed=2), tta=True)
    proba = augmented.predict_proba(image)
    assert proba.shape == (2, 40, 56)
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    transposed = augmented.predict_proba(image.transpose(1, 0, 2))
    np.testing.assert_allclose(transposed, proba.transpose(0, 2, 1), atol=1e-5)
    np.testing.assert_allclose(augmented.predict_proba(image[::-1]), proba[:, ::-1], atol=1e-5)
    assert not np.allclose(plain.predict_proba(image), proba, atol=1e-4)  # the views do change the answer


def test_detection_refuses_it_and_the_network_free_baseline_ignores_it():
    with pytest.raises(ValueError, match="no test-time augmentation"):
        segmenter.load("detection", tta=True)
    image = np.random.default_rng(3).integers(0, 255, (48, 48)).astype(np.uint8)
    np.testing.assert_array_equal(segmenter.load("otsu", tta=True).instances(image).labels,
                                  segmenter.load("otsu").instances(image).labels)


def test_bns_runs_its_segmentation_with_tta():
    model = segmenter.load("default", tta=True)
    assert model.segmentation.tta
