"""Choosing the brightfield or fluorescence model from the image, and the stained-tissue augmentation."""
import numpy as np
import pytest

from segmenter.modality import MODELS, choose_model
from segmenter.picker import ModelPicker
from transforms import Augmenter, jpeg_compress, rescale_pair, stain_jitter


def stained_field(rng):
    """A bright glass background with purple (hematoxylin-like) blobs."""
    image = np.full((128, 160, 3), (235, 228, 238), dtype=np.uint8)
    for _ in range(12):
        y, x = rng.integers(10, 118), rng.integers(10, 150)
        image[y - 5:y + 5, x - 5:x + 5] = (90, 60, 140)
    return image


def fluorescence_field(rng):
    """A dim 16-bit field with bright nuclei on a dark background."""
    image = rng.normal(300, 20, (128, 160)).clip(0).astype(np.uint16)
    image[40:60, 50:70] = 4000
    return image


def test_bright_stained_image_picks_the_brightfield_model():
    choice = choose_model(stained_field(np.random.default_rng(0)))
    assert (choice.modality, choice.model) == ("brightfield", MODELS["brightfield"])
    assert "bright background" in choice.reason


def test_dark_image_picks_the_fluorescence_model():
    choice = choose_model(fluorescence_field(np.random.default_rng(0)))
    assert (choice.modality, choice.model) == ("fluorescence", MODELS["fluorescence"])
    assert "dark background" in choice.reason


def test_tissue_filling_the_view_is_still_brightfield():
    image = np.full((64, 64, 3), (150, 70, 140), dtype=np.uint8)  # median intensity ~0.47, strongly stained
    assert choose_model(image).modality == "brightfield"


def test_a_named_model_of_the_other_modality_is_warned_about(caplog):
    rng = np.random.default_rng(0)
    stained, fluorescence = stained_field(rng), fluorescence_field(rng)
    picked = ModelPicker("unet").pick(stained, pixel_size_um=0.5)
    assert "unet is a fluorescence model, but the image looks brightfield" in picked.warning
    assert "model auto would pick he" in picked.warning and "WARNING: unet is a fluorescence" in picked.describe()
    assert picked.to_dict()["warning"] == picked.warning and picked.warning in caplog.text
    assert "he is a brightfield model, but the image looks fluorescence" in ModelPicker("he").pick(
        fluorescence, pixel_size_um=0.25).warning
    assert ModelPicker("he").pick(stained, pixel_size_um=0.25).warning == ""
    assert ModelPicker("auto").pick(stained, pixel_size_um=0.25).warning == ""
    assert ModelPicker("otsu").pick(stained).warning == ""  # no network: it reads either modality


def test_empty_image_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        choose_model(np.zeros((0, 5)))


def test_shared_data_modalities(shared_data):
    from segmenter.datasets import list_images, read_image
    for folder, modality in [("he_train/images", "brightfield"), ("dsb2018/stained/images", "brightfield"),
                             ("bbbc039/val/images", "fluorescence"), ("bbbc006_z00/images", "fluorescence")]:
        calls = {choose_model(read_image(p)).modality for p in list_images(shared_data / folder)}
        assert calls == {modality}, folder


def test_stain_jitter_changes_colour_not_shape():
    image = stained_field(np.random.default_rng(1))
    out = stain_jitter(image, np.random.default_rng(2), scale=0.4)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255
    assert np.abs(out - image).mean() > 1.0


def test_jpeg_round_trip_and_quality_check():
    image = stained_field(np.random.default_rng(3))
    assert np.abs(jpeg_compress(image, 90) - image).mean() < 5
    with pytest.raises(ValueError, match="quality"):
        jpeg_compress(image, 0)


def test_rescale_pair_keeps_label_ids():
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[5:15, 5:15], labels[20:36, 20:36] = 3, 7
    image = labels[..., None].repeat(3, axis=2).astype(np.float32)
    small_image, small = rescale_pair(image, labels, (20, 20))
    assert small_image.shape == (20, 20, 3) and set(np.unique(small)) == {0, 3, 7}


def test_augmenter_stained_options_are_deterministic():
    image = stained_field(np.random.default_rng(4)).astype(np.float32)
    labels = np.zeros(image.shape[:2], dtype=np.int32)
    augment = Augmenter(stain_prob=1.0, jpeg_prob=1.0)
    first = augment(image, labels, np.random.default_rng(5))[0]
    second = augment(image, labels, np.random.default_rng(5))[0]
    assert np.array_equal(first, second) and not np.array_equal(first, image)
