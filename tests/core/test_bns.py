"""The BNS family: Y-forked U-Net, boundary-aware watershed, focus-switched post-processing."""
import dataclasses

import numpy as np
import pytest
import torch

import segmenter
from cyseg.synthetic import random_nuclei, render
from segmenter import Checkpoint, ModelLoadError
from segmenter.bns import SETS, BNSNet, BNSSegmenter, BoundaryWatershed, boundary_classes, branch
from segmenter.bns_training import BNSTrainConfig, PairSampler, bns_loss, seed_classes_from_binary, train_bns
from segmenter.datasets import LabelledImage
from segmenter.detection_training import transfer_weights
from segmenter.unet import UNet
from transforms import Normalization, defocus

from .conftest import tiny_checkpoint
from .test_focus import FOCUS_MODEL, nuclei_image


def tiny_bns(postprocess: dict | None = None, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    network = BNSNet(1, depth=2, n_filters=4).eval()
    sets = postprocess or {name: BoundaryWatershed().to_dict() for name in SETS}
    return BNSSegmenter.build_checkpoint(network, Normalization().to_dict(), sets, Checkpoint.load(FOCUS_MODEL))


def discs(shape=(64, 96), centres=((32, 34), (32, 60)), radius=15) -> np.ndarray:
    """Instance labels of discs; later discs win where they overlap."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, dtype=np.uint16)
    for i, (r, c) in enumerate(centres):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = i + 1
    return labels


def test_both_heads_have_the_input_size_and_deblurring_starts_as_the_identity():
    network = BNSNet(1, depth=2, n_filters=4).eval()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        logits, deblurred = network(x)
    assert logits.shape == (2, 3, 32, 48) and deblurred.shape == x.shape
    torch.testing.assert_close(deblurred, x)


def test_the_branches_share_the_encoder_and_each_is_a_plain_unet():
    checkpoint = tiny_bns()
    network = BNSNet(1, depth=2, n_filters=4)
    network.load_state_dict({k: v for k, v in checkpoint.state_dict.items() if not k.startswith("focus.")})
    network.eval()
    assert network.restoration.encoder is network.segmentation.encoder
    part = branch(checkpoint, "segmentation")
    plain = UNet(**part.architecture).eval()
    plain.load_state_dict(part.state_dict)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), network(x)[0])


def test_a_binary_unet_starts_the_segmentation_branch_with_its_nucleus_logit_as_interior():
    source = tiny_checkpoint()
    network = BNSNet(1, depth=2, n_filters=4)
    transfer_weights(network.segmentation, source)
    assert seed_classes_from_binary(network.segmentation.head, source)
    plain = UNet(**source.architecture).eval()
    plain.load_state_dict(source.state_dict)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        logits = network.eval()(x)[0]
        torch.testing.assert_close(logits[:, 1], plain(x)[:, 0])
    assert (logits[:, 0] == 0).all() and (logits[:, 2] == -2).all()


def test_boundary_target_outlines_each_nucleus_and_marks_the_seam():
    labels = discs()
    target = boundary_classes(labels)
    assert target[0, 0] == 0 and target[32, 34] == 1 and target[32, 60] == 1
    assert target[32, 34 - 15] == 2  # the outline
    assert target[32, 42] == 1 and target[32, 43] == 1 and target[32, 44] == 2  # disc 2 starts at column 45
    touching = (labels[:, :-1] > 0) & (labels[:, 1:] > 0) & (labels[:, :-1] != labels[:, 1:])
    assert touching.sum() > 10
    assert (target[:, :-1][touching] == 2).all() and (target[:, 1:][touching] == 2).all()


def test_pairs_are_blurred_inputs_with_their_clean_targets():
    rng = np.random.default_rng(0)
    image, labels = render((64, 64), random_nuclei((64, 64), 4, rng), rng)
    samples = [LabelledImage("a", image, labels)]
    config = BNSTrainConfig(data=[], out="", crop=64, background_prob=0.0, max_blur=8, blur_prob=1.0)
    blurred, classes, clean = PairSampler(samples, config, np.random.default_rng(1)).batch(4)
    assert blurred.shape == clean.shape == (4, 1, 64, 64) and classes.shape == (4, 64, 64)
    assert classes.dtype == torch.int64 and set(classes.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(blurred, clean)
    sharp = PairSampler(samples, dataclasses.replace(config, blur_prob=0.0), np.random.default_rng(1)).batch(4)
    torch.testing.assert_close(sharp[0], sharp[2])


def test_stained_pairs_keep_colour_and_follow_the_folder_shares():
    rng = np.random.default_rng(0)
    grey, labels = render((64, 64), random_nuclei((64, 64), 4, rng), rng)
    pink = np.stack([255 - grey // 2, 255 - grey, 255 - grey // 3], axis=-1).astype(np.uint8)
    samples = [LabelledImage("a:one", pink, labels), LabelledImage("b:two", pink, labels),
               LabelledImage("b:three", pink, labels)]
    config = BNSTrainConfig(data=["a", "b"], out="", in_channels=3, crop=48, data_weights=[0.9, 0.1],
                            scale_range=(0.5, 2.0), stain_prob=1.0, jpeg_prob=1.0, max_blur=4, blur_prob=0.0)
    sampler = PairSampler(samples, config, np.random.default_rng(1))
    blurred, classes, clean = sampler.batch(2)
    assert blurred.shape == clean.shape == (2, 3, 48, 48) and classes.shape == (2, 48, 48)
    assert not torch.equal(clean[:, 0], clean[:, 1])  # the channels stay apart (stain varied per channel)
    picks = sampler.crops.pick(2000)
    assert 0.85 < np.mean(picks == 0) < 0.95  # folder a's share, its one image


def test_the_loss_decreases_on_a_tiny_synthetic_problem():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = [LabelledImage(str(i), *render((48, 48), random_nuclei((48, 48), 3, rng), rng)) for i in range(2)]
    config = BNSTrainConfig(data=[], out="", crop=48, max_blur=6)
    batch = PairSampler(samples, config, rng).batch(2)
    network = BNSNet(1, depth=2, n_filters=4)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = bns_loss(*network(batch[0]), batch[1], batch[2], config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_training_on_from_a_bns_model_starts_from_its_weights_and_post_processing(tmp_path, synthetic_dataset):
    sets = {"sharp": BoundaryWatershed(min_size=33).to_dict(), "blurry": BoundaryWatershed(min_size=44).to_dict()}
    source = tiny_bns(sets, seed=3)
    source_path = source.save(tmp_path / "source.pt")
    config = BNSTrainConfig(data=[str(synthetic_dataset)], out=str(tmp_path / "on.pt"), depth=2, n_filters=4,
                            crop=64, batch_size=2, epochs=1, steps_per_epoch=2, lr=0.0, val_fraction=0.25,
                            max_blur=4, tune_postprocess=False, init_from=str(source_path))
    trained = train_bns(config, progress=False)
    weights = [k for k, v in source.state_dict.items() if v.is_floating_point() and "running_" not in k]
    assert weights and all(torch.equal(trained.state_dict[k], source.state_dict[k]) for k in weights)  # lr 0
    assert trained.postprocess == source.postprocess
    assert trained.training["precision"] == "fp32"  # bf16 not asked for


def test_the_watershed_splits_two_touching_discs_on_their_boundary():
    truth = discs()
    target = boundary_classes(truth)
    proba = np.stack([target == c for c in range(3)]).astype(np.float32)
    assert int(np.max(BoundaryWatershed(marker_threshold=2.0)(proba))) == 1  # no markers: one object
    labels = BoundaryWatershed()(proba)
    assert labels.dtype == np.uint16 and labels.max() == 2
    for i in (1, 2):
        overlap = np.bincount(labels[truth == i], minlength=3)
        assert overlap.argmax() > 0 and overlap.max() > 0.9 * (truth == i).sum()


def test_the_watershed_rejects_probabilities_that_are_not_three_classes():
    with pytest.raises(ValueError, match="3×H×W"):
        BoundaryWatershed()(np.zeros((2, 8, 8), np.float32))


def test_a_checkpoint_round_trips_through_segmenter_load(tmp_path):
    sets = {"sharp": BoundaryWatershed(min_size=33).to_dict(), "blurry": BoundaryWatershed(min_size=44).to_dict()}
    original = BNSSegmenter(tiny_bns(sets), device="cpu")
    path = original.checkpoint.save(tmp_path / "bns.pt")
    loaded = segmenter.load(path, device="cpu")
    assert isinstance(loaded, BNSSegmenter) and segmenter.FAMILIES["bns"] is BNSSegmenter
    assert loaded.postprocess == original.postprocess and loaded.postprocess["blurry"].min_size == 44
    assert loaded.focus_threshold == pytest.approx(original.classifier.threshold)
    image = nuclei_image((96, 128))
    np.testing.assert_allclose(loaded.predict_proba(image), original.predict_proba(image), atol=1e-5)
    deblurred = loaded.deblur(image)
    assert deblurred.shape == image.shape and deblurred.dtype == np.float32
    np.testing.assert_allclose(deblurred, Normalization()(image.astype(np.float32)), atol=1e-5)  # untrained: identity
    found = loaded.instances(image)
    assert found.labels.shape == image.shape and loaded.segment(image).shape == image.shape


def test_the_focus_switch_picks_the_blurry_post_processing_for_a_heavily_blurred_tile():
    # the untrained network calls ~2/3 of every pixel nucleus: the sharp set finds nothing, the blurry everything
    sets = {"sharp": BoundaryWatershed(foreground_threshold=0.99).to_dict(),
            "blurry": BoundaryWatershed(foreground_threshold=0.01, marker_threshold=-2.0).to_dict()}
    model = BNSSegmenter(tiny_bns(sets), device="cpu")
    sharp = nuclei_image((256, 256))
    blurry = defocus(sharp, 16, seed=0)
    found = model.instances_batch([sharp, blurry])
    assert [f.extra["focus"]["model"] for f in found] == ["sharp", "blurry"]
    assert found[1].extra["focus"]["score"] > model.focus_threshold
    assert len(found[0]) == 0 and len(found[1]) >= 1


def test_threshold_option_sets_the_nuclei_threshold_of_both_sets():
    model = BNSSegmenter(tiny_bns(), device="cpu", threshold=0.7)
    assert {model.postprocess[name].foreground_threshold for name in SETS} == {0.7}


def test_bad_input_and_bad_checkpoints_get_clear_errors():
    model = BNSSegmenter(tiny_bns(), device="cpu")
    with pytest.raises(ValueError, match="channels"):
        model.instances(np.zeros((32, 32, 5), np.uint8))
    with pytest.raises(ValueError, match="H×W"):
        model.deblur(np.zeros((2, 2, 2, 2), np.uint8))
    checkpoint = tiny_bns()
    checkpoint.postprocess.pop("blurry")
    with pytest.raises(ModelLoadError, match="blurry"):
        BNSSegmenter(checkpoint, device="cpu")


def test_segment_writes_the_deblurred_image_of_a_bns_model_and_refuses_other_models(tmp_path, capsys):
    import tifffile

    from cyseg.cli import main
    model_path = tiny_bns().save(tmp_path / "bns.pt")
    image = tmp_path / "field.tif"
    tifffile.imwrite(image, defocus(discs().astype(np.float32) * 900 + 100, 6).astype(np.uint16))
    assert main(["segment", str(image), "--model", str(model_path), "--deblurred", "--out", str(tmp_path / "out")]) == 0
    deblurred = tifffile.imread(tmp_path / "out" / "field-deblurred.tif")
    assert deblurred.shape == discs().shape and deblurred.dtype == np.float32
    assert main(["segment", str(image), "--model", "unet", "--deblurred", "--out", str(tmp_path / "x")]) == 2
    assert "deblurring head" in capsys.readouterr().err
