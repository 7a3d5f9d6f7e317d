"""FocusGated: each tile goes to the sharp or the blurry model by its focus score."""
import numpy as np
import pytest

import segmenter
from segmenter import Checkpoint, ModelLoadError, UNetSegmenter
from segmenter.focus import load_focus_classifier
from segmenter.focus_gated import FocusGated
from transforms import defocus

from .conftest import tiny_checkpoint
from .test_focus import FOCUS_MODEL, nuclei_image

segmenter.register(FocusGated)


@pytest.fixture(scope="module")
def tiles() -> tuple[np.ndarray, np.ndarray]:
    sharp = nuclei_image((256, 256))
    return sharp, defocus(sharp, 8, seed=0)


@pytest.fixture(scope="module")
def gate() -> FocusGated:
    return FocusGated(load_focus_classifier(FOCUS_MODEL, device="cpu"),
                      UNetSegmenter(tiny_checkpoint(seed=0), device="cpu"),
                      UNetSegmenter(tiny_checkpoint(seed=1), device="cpu"))


@pytest.fixture(autouse=True)
def fresh_decisions(gate):
    gate.take_decisions()


def test_a_blurry_tile_goes_to_the_blurry_model_and_a_sharp_one_to_the_sharp(gate, tiles):
    sharp, blurry = tiles
    probas = gate.predict_proba_batch([blurry, sharp, blurry])
    np.testing.assert_array_equal(probas[0], gate.blurry.predict_proba(blurry))
    np.testing.assert_array_equal(probas[1], gate.sharp.predict_proba(sharp))
    assert not np.array_equal(gate.sharp.predict_proba(sharp), gate.blurry.predict_proba(sharp))
    assert [d.model for d in gate.take_decisions()] == ["blurry", "sharp", "blurry"]
    assert gate.decisions == []


def test_segment_batch_keeps_array_batches_and_each_model_post_processing(gate, tiles):
    masks = gate.segment_batch(np.stack(tiles))
    assert isinstance(masks, np.ndarray) and masks.shape == (2, 256, 256)
    np.testing.assert_array_equal(masks[0], gate.sharp.segment(tiles[0]))
    np.testing.assert_array_equal(masks[1], gate.blurry.segment(tiles[1]))
    np.testing.assert_array_equal(gate.segment(tiles[1]), masks[1])


def test_instances_carry_their_decision(gate, tiles):
    found = gate.instances_batch(list(tiles))
    assert [f.extra["focus"]["model"] for f in found] == ["sharp", "blurry"]
    assert found[1].extra["focus"]["score"] > gate.threshold >= found[0].extra["focus"]["score"]
    assert len(gate.decisions) == 2


def test_decide_batch_records_nothing(gate, tiles):
    assert [d.blurry for d in gate.decide_batch(list(tiles))] == [False, True]
    assert gate.decisions == []


def test_an_empty_tile_goes_to_the_sharp_model_without_a_score(gate):
    empty = np.full((256, 256), 30, dtype=np.uint8)
    found = gate.instances_batch([empty])[0]
    assert found.extra["focus"] == {"score": None, "blurry": False, "model": "sharp"}


def test_threshold_is_configurable(gate, tiles):
    always_sharp = FocusGated(gate.classifier, gate.sharp, gate.blurry, threshold=1e6)
    always_blurry = FocusGated(gate.classifier, gate.sharp, gate.blurry, threshold=-1e6)
    assert [d.model for d in always_sharp.decide_batch(list(tiles))] == ["sharp", "sharp"]
    assert [d.model for d in always_blurry.decide_batch(list(tiles))] == ["blurry", "blurry"]


def test_checkpoint_nests_the_three_models_and_loads_by_family(tmp_path, gate, tiles):
    focus = Checkpoint.load(FOCUS_MODEL)
    combined = FocusGated.build_checkpoint(focus, tiny_checkpoint(seed=0), tiny_checkpoint(seed=1),
                                           focus_threshold=2.5)
    path = combined.save(tmp_path / "gated.pt")
    loaded = segmenter.load(path, device="cpu", backend="torch")  # the fixture's fp32 PyTorch, exactly
    assert isinstance(loaded, FocusGated) and loaded.threshold == 2.5
    assert set(Checkpoint.load(path).children) == {"focus", "sharp", "blurry"}
    np.testing.assert_array_equal(loaded.predict_proba(tiles[1]), gate.blurry.predict_proba(tiles[1]))
    assert segmenter.load(path, device="cpu", focus_threshold=1e6).threshold == 1e6
    assert segmenter.load(path, device="cpu", threshold=0.9).sharp.threshold == 0.9


def test_models_with_different_classes_cannot_be_combined(gate):
    other = tiny_checkpoint()
    other.class_names = ["background", "cell"]
    with pytest.raises(ValueError, match="same classes"):
        FocusGated(gate.classifier, gate.sharp, UNetSegmenter(other, device="cpu"))
    with pytest.raises(ValueError, match="same classes"):
        FocusGated.build_checkpoint(Checkpoint.load(FOCUS_MODEL), tiny_checkpoint(), other)


def test_a_checkpoint_missing_a_model_is_refused(tmp_path):
    combined = FocusGated.build_checkpoint(Checkpoint.load(FOCUS_MODEL), tiny_checkpoint(), tiny_checkpoint())
    del combined.children["blurry"]
    with pytest.raises(ModelLoadError, match="no 'blurry' model"):
        segmenter.load(combined.save(tmp_path / "broken.pt"))


def test_shipped_focus_gated_model_routes_real_blur(shared_data):
    from segmenter.datasets import load_labelled

    gated = segmenter.load("focus-gated", device="cpu")
    assert isinstance(gated, FocusGated) and gated.threshold == pytest.approx(2.835, abs=0.01)
    sample = load_labelled(shared_data / "bbbc039" / "val")[0]
    sharp, blurry = gated.instances_batch([sample.image, defocus(sample.image, 8, seed=0)])
    assert sharp.extra["focus"]["model"] == "sharp" and blurry.extra["focus"]["model"] == "blurry"
    assert len(sharp) > 0.8 * sample.labels.max() and len(blurry) > 0.6 * sample.labels.max()
    assert segmenter.load("combined", device="cpu").class_names == gated.class_names
