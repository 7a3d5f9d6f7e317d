"""The Segmenter interface as implemented by the U-Net: shapes, batching, inputs, errors."""
import numpy as np
import pytest
import torch

import segmenter
from segmenter import Checkpoint, ModelLoadError, UNetSegmenter, resolve_device

from .conftest import tiny_checkpoint


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path, checkpoint):
    path = checkpoint.save(tmp_path / "model.pt")
    loaded = Checkpoint.load(path)
    for key, tensor in checkpoint.state_dict.items():
        assert torch.equal(loaded.state_dict[key], tensor)
    assert loaded.architecture == checkpoint.architecture
    assert loaded.class_names == ["background", "nucleus"]
    assert loaded.normalization == checkpoint.normalization
    assert loaded.postprocess == checkpoint.postprocess
    assert loaded.training == checkpoint.training and loaded.metrics == checkpoint.metrics
    image = np.random.default_rng(0).integers(0, 4000, (40, 50)).astype(np.uint16)
    np.testing.assert_array_equal(UNetSegmenter(checkpoint).predict_proba(image),
                                  segmenter.load(path, backend="torch").predict_proba(image))


def test_numpy_metadata_is_stored_as_plain_numbers(tmp_path, checkpoint):
    checkpoint.metrics = {"f1": np.float64(0.91), "n": np.int64(3)}
    loaded = Checkpoint.load(checkpoint.save(tmp_path / "model.pt"))
    assert loaded.metrics == {"f1": 0.91, "n": 3}


def test_any_image_size_gives_probabilities_of_that_size(checkpoint):
    model = UNetSegmenter(checkpoint)
    proba = model.predict_proba(np.zeros((37, 53), np.uint8))
    assert proba.shape == (2, 37, 53)
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-6)


def test_batch_runs_one_forward_pass_and_matches_single_images(checkpoint):
    model = UNetSegmenter(checkpoint, batch_size=8)
    calls = []
    model.network.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    images = np.random.default_rng(1).integers(0, 255, (4, 32, 48)).astype(np.uint8)
    masks = model.segment_batch(images)
    assert calls == [4]
    assert masks.shape == (4, 32, 48) and masks.dtype == np.int32
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(model.segment(image), mask)


def test_batch_size_splits_large_batches(checkpoint):
    model = UNetSegmenter(checkpoint, batch_size=2)
    calls = []
    model.network.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    model.segment_batch(np.zeros((5, 16, 16), np.uint8))
    assert calls == [2, 2, 1]


def test_ragged_list_keeps_each_size(checkpoint):
    masks = UNetSegmenter(checkpoint).segment_batch([np.zeros((20, 30)), np.zeros((33, 17))])
    assert [m.shape for m in masks] == [(20, 30), (33, 17)]


def test_grey_model_reads_8_and_16_bit_grey_and_rgb(checkpoint):
    model = UNetSegmenter(checkpoint)
    grey = np.random.default_rng(2).integers(0, 255, (32, 32)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    grey16 = grey.astype(np.uint16) * 257
    reference = model.predict_proba(grey)
    np.testing.assert_allclose(model.predict_proba(rgb), reference, atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(grey16), reference, atol=1e-4)


def test_threshold_override_changes_the_mask(checkpoint):
    image = np.random.default_rng(3).integers(0, 255, (32, 32)).astype(np.uint8)
    low, high = UNetSegmenter(checkpoint, threshold=0.0), UNetSegmenter(checkpoint, threshold=1.0)
    assert low.segment(image).all() and not high.segment(image).any()


def test_instances_have_one_score_and_class_per_object(checkpoint):
    model = UNetSegmenter(checkpoint, threshold=0.0)
    found = model.instances(np.random.default_rng(4).integers(0, 255, (32, 32)).astype(np.uint8))
    assert found.labels.dtype == np.uint16
    assert len(found) == found.labels.max() >= 1
    assert set(found.classes) == {1}
    assert np.all((found.scores >= 0) & (found.scores <= 1))


@pytest.mark.parametrize("image,message", [
    (np.zeros((16, 16, 5)), "channels"),
    (np.zeros((0, 16)), "empty"),
    (np.zeros((2, 3, 4, 5)), "shape"),
    (np.array([["a"]]), "pixel type"),
])
def test_bad_images_are_rejected_with_the_problem_named(checkpoint, image, message):
    with pytest.raises(ValueError, match=message):
        UNetSegmenter(checkpoint).segment(image)


def test_missing_model_names_the_shipped_choices(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a shipped model.*default"):
        segmenter.load(tmp_path / "absent.pt")


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read model file"):
        segmenter.load(path)


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelLoadError, match="missing"):
        segmenter.load(path)


def test_unknown_family_is_refused(tmp_path):
    checkpoint = tiny_checkpoint()
    checkpoint.family = "no-such-family"
    with pytest.raises(ModelLoadError, match="unknown model family"):
        segmenter.load(checkpoint.save(tmp_path / "model.pt"))


def test_device_selection():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_registry_knows_the_unet_family():
    assert segmenter.FAMILIES["unet"] is UNetSegmenter
    assert segmenter.model_path("default").name == segmenter.SHIPPED["default"]


def test_nested_checkpoints_keep_their_tensors(tmp_path, checkpoint):
    child = tiny_checkpoint(seed=1)
    checkpoint.children = {"inner": child.to_dict()}
    loaded = Checkpoint.load(checkpoint.save(tmp_path / "nested.pt"))
    inner = Checkpoint.from_dict(loaded.children["inner"])
    for key, tensor in child.state_dict.items():
        assert torch.equal(inner.state_dict[key], tensor)
