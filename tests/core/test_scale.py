"""Running a model at its own pixel size: resampling (`segmenter.scale`) and the per-image model choice
(`segmenter.picker`)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from segmenter.checkpoint import Checkpoint
from segmenter.picker import ModelPicker
from segmenter.scale import Rescaled, estimate_pixel_size, median_diameter, zoom_for
from tests.job.helpers import ThresholdSegmenter, disks

CENTRES = [(60.0 + 90 * i, 60.0 + 90 * j) for i in range(4) for j in range(4)]


def stand_in(pixel_size_um: float | None = 0.5, diameter_px: float | None = 20.0) -> tuple[Checkpoint, ThresholdSegmenter]:
    """A threshold model whose checkpoint records a pixel size and a training object diameter."""
    checkpoint = Checkpoint(family=ThresholdSegmenter.name, architecture={}, class_names=["background", "nucleus"],
                            in_channels=3, normalization={}, state_dict={}, pixel_size_um=pixel_size_um,
                            training={"data": {"median_diameter_px": diameter_px}} if diameter_px else {})
    return checkpoint, ThresholdSegmenter(checkpoint)


def test_zoom_is_one_within_tolerance_or_when_a_size_is_unknown():
    assert zoom_for(0.5, 0.25) == 0.5
    assert zoom_for(0.25, 0.5) == 2.0
    assert zoom_for(0.5, 0.52) == 1.0
    assert zoom_for(None, 0.25) == 1.0 and zoom_for(0.5, None) == 1.0
    with pytest.raises(ValueError, match="positive"):
        zoom_for(0.5, -1.0)


@pytest.mark.parametrize("zoom", [0.5, 2.0])
def test_rescaled_results_come_back_at_the_image_size_with_every_object(zoom):
    image = disks((400, 400), CENTRES, radius=12)
    _, model = stand_in()
    found = Rescaled(model, zoom).instances(image)
    assert found.labels.shape == image.shape[:2]
    assert len(found) == len(CENTRES)
    expected = np.pi * 12 ** 2
    areas = np.bincount(found.labels.ravel())[1:]
    assert np.all(np.abs(areas - expected) < 0.2 * expected)
    proba = Rescaled(model, zoom).predict_proba(image)
    assert proba.shape == (2, 400, 400)


def test_objects_that_vanish_when_shrunk_are_dropped_consistently():
    image = disks((400, 400), CENTRES[:8], radius=12) | disks((400, 400), CENTRES[8:], radius=1)
    _, model = stand_in()
    found = Rescaled(model, 0.25).instances(image)
    assert 8 <= len(found) < len(CENTRES)
    assert int(found.labels.max()) == len(found) == len(found.scores) == len(found.classes)


def test_the_pixel_size_is_estimated_from_the_objects_diameter():
    checkpoint, model = stand_in(pixel_size_um=0.5, diameter_px=20.0)
    image = disks((400, 400), CENTRES, radius=20)  # diameter 40 px: twice the training diameter
    estimate = estimate_pixel_size(model, checkpoint, image)
    assert estimate.pixel_size_um == pytest.approx(0.25, rel=0.05)
    assert "40" in estimate.reason


def test_no_estimate_without_enough_objects_or_a_recorded_diameter():
    checkpoint, model = stand_in()
    few = estimate_pixel_size(model, checkpoint, disks((400, 400), CENTRES[:3], radius=20))
    assert few.pixel_size_um is None and "3 objects" in few.reason
    checkpoint, model = stand_in(diameter_px=None)
    assert estimate_pixel_size(model, checkpoint, disks((400, 400), CENTRES, radius=20)).pixel_size_um is None


def test_median_diameter():
    labels = np.zeros((50, 50), dtype=np.int32)
    labels[:10, :10], labels[20:30, 20:40] = 1, 2
    assert median_diameter(labels) == pytest.approx(np.sqrt(4 * 150 / np.pi))
    assert median_diameter(np.zeros((5, 5), dtype=np.int32)) == 0.0


def test_a_named_model_runs_at_the_images_pixel_size(tmp_path):
    checkpoint, _ = stand_in(pixel_size_um=0.5)
    path = checkpoint.save(tmp_path / "model.pt")
    picker = ModelPicker(str(path))
    image = disks((400, 400), CENTRES, radius=20)
    at_quarter = picker.pick(image, pixel_size_um=0.25)
    assert isinstance(at_quarter.model, Rescaled) and at_quarter.model.zoom == 0.5
    assert at_quarter.choice is None and "resampled ×0.50" in at_quarter.scale_reason
    assert not isinstance(picker.pick(image, pixel_size_um=0.5).model, Rescaled)
    estimated = picker.pick(image)  # unknown: estimated from the 40 px disks at 20 px training diameter
    assert estimated.pixel_size_um == pytest.approx(0.25, rel=0.05) and "estimated" in estimated.scale_reason


def test_an_unknown_model_fails_when_the_picker_is_made():
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        ModelPicker("no-such-model")


def test_auto_picks_the_shipped_model_of_each_modality():
    picker = ModelPicker("auto")
    rng = np.random.default_rng(0)
    stained = np.full((256, 256, 3), (235, 225, 235), dtype=np.uint8)
    stained[disks((256, 256), CENTRES[:4], radius=10)[..., 0] > 100] = (90, 40, 130)
    dark = disks((256, 256), CENTRES[:4], radius=10) // 2 + rng.integers(0, 5, (256, 256, 3), dtype=np.uint8)
    brightfield, fluorescence = picker.pick(stained, 0.25), picker.pick(dark)
    assert (brightfield.name, brightfield.choice.modality) == ("he", "brightfield")
    assert (fluorescence.name, fluorescence.choice.modality) == ("default", "fluorescence")
    assert brightfield.to_dict()["modality"] == "brightfield" and "brightfield" in brightfield.describe()


def test_the_estimate_follows_the_magnification_of_real_he_tiles(shared_data):
    """The same H&E tiles at 40× and downsampled to 20×: the estimated pixel sizes differ by about 2×."""
    import cv2
    picker = ModelPicker("he")
    stems = ["monuseg_TCGA-21-5784-01Z-00-DX1", "monuseg_TCGA-KB-A93J-01A-01-TS1"]
    for stem in stems:
        image = tifffile.imread(shared_data / "he_train" / "images" / f"{stem}.tif")
        half = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        at_40, at_20 = picker.pick(image).pixel_size_um, picker.pick(half).pixel_size_um
        assert at_40 is not None and at_20 is not None
        ratio = at_20 / at_40
        assert ratio > 1.4 and ratio < 2.8, (stem, at_40, at_20)
