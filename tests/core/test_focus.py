"""FocusLiteNN and the focus classifier: shapes, determinism, losses, input types, bad input."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cyseg.synthetic import random_nuclei, render
from segmenter import SHIPPED, Checkpoint, ModelLoadError
from segmenter import focus as focus_module
from segmenter.focus import (ContentRule, FocusClassifier, FocusLiteNN, WindowLayout, focus_checkpoint, focus_input,
                             grid_shape, input_stats, load_focus_classifier, normalize_window)
from segmenter.focus_training import (FocusTrainConfig, best_threshold, build_patches, calibrate, pearson_loss,
                                      real_defocus_rates, roc_auc, train_network)
from segmenter.focus_windows import centre_statistics, response_extrema
from segmenter.registry import WEIGHTS_DIR
from transforms import defocus

#: The shipped default focus model (loaded by path until segmenter.SHIPPED names it "focus").
FOCUS_MODEL = WEIGHTS_DIR / "focuslitenn-10.pt"


@pytest.fixture(scope="module")
def shipped() -> FocusClassifier:
    return load_focus_classifier(FOCUS_MODEL, device="cpu")


def nuclei_image(shape=(300, 400), seed=0) -> np.ndarray:
    """A synthetic field of nuclei, about one per 4800 px² (25 in 300×400)."""
    rng = np.random.default_rng(seed)
    return render(shape, random_nuclei(shape, shape[0] * shape[1] // 4800, rng), rng)[0]


def untrained(kernels: int = 2, seed: int = 0) -> FocusClassifier:
    torch.manual_seed(seed)
    return FocusClassifier(FocusLiteNN(kernels), threshold=0.0, device="cpu")


@pytest.mark.parametrize("kernels, parameters", [(1, 148), (2, 301), (10, 1501)])
def test_parameter_counts_match_the_paper(kernels, parameters):
    assert sum(p.numel() for p in FocusLiteNN(kernels).parameters()) == parameters


def test_forward_gives_one_score_per_patch():
    assert FocusLiteNN(10)(torch.rand(4, 3, 64, 80)).shape == (4,)


@pytest.mark.parametrize("stride, shape", [(None, (3, 3)), (125, (4, 5)), (500, (2, 2))])
def test_grid_covers_the_image(stride, shape):
    grid = untrained().grid(nuclei_image((600, 700)), stride=stride)
    assert grid.scores.shape == grid.content.shape == shape == grid_shape(600, 700, 252, stride or 250)


def test_images_scored_together_score_as_if_scored_alone():
    """Same-shape inputs share one pass; mixed shapes, grey and 16-bit keep their own grids."""
    rgb = [np.stack([nuclei_image((300, 400), seed=s + c) for c in range(3)], axis=2) for s in (0, 5)]
    images = [rgb[0], nuclei_image((260, 300), seed=1), rgb[1], nuclei_image((300, 400), seed=2).astype(np.uint16) * 200]
    classifier = untrained(kernels=2)
    together = classifier.grids(images, stride=125)
    for image, grid in zip(images, together):
        alone = classifier.grid(image, stride=125)
        assert grid.scores.shape == alone.scores.shape
        np.testing.assert_allclose(grid.scores, alone.scores, rtol=1e-5, atol=1e-5)
        assert np.array_equal(grid.content, alone.content)


def test_input_stats_percentiles_are_numpys():
    image = nuclei_image((640, 640), seed=3)
    stats = input_stats(image, (2.0, 99.0))
    sample = image[::10, ::10].astype(np.float32)  # 640² px / 4096 samples → every 10th px
    assert (stats.low, stats.high) == pytest.approx(tuple(np.percentile(sample, (2.0, 99.0))), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_compiled_window_statistics_equal_numpy_on_overlapping_windows(dtype):
    """Responses and centre samples reduced per window (tiling, overlapping, end-aligned) as numpy would."""
    rng = np.random.default_rng(7)
    image = (rng.random((103, 88, 3)) * 255).astype(dtype)
    response = rng.standard_normal((2, 3, 20, 17)).astype(np.float32)
    layout = WindowLayout(np.array([0, 4, 8, 10]), np.array([0, 7]), 10)
    low, high = response_extrema(response, *layout)
    bottom, top, mean, variance = centre_statistics(image, *layout, 20.0, 200.0)
    centres = image[3::5, 3::5][:20, :17].astype(np.float64)
    grey = (centres.mean(axis=2) - 20) / 200
    for row, y in enumerate(layout.y_starts):
        for col, x in enumerate(layout.x_starts):
            window = (slice(y, y + 10), slice(x, x + 10))
            np.testing.assert_array_equal(low[:, row, col], response[(..., *window)].min(axis=(2, 3)))
            np.testing.assert_array_equal(high[:, row, col], response[(..., *window)].max(axis=(2, 3)))
            assert (bottom[row, col], top[row, col]) == (centres[window].min(), centres[window].max())
            assert mean[row, col] == pytest.approx(grey[window].mean(), rel=1e-5)
            assert variance[row, col] == pytest.approx(grey[window].var(), rel=1e-4)


@pytest.mark.parametrize("stride", [None, 125, 500])
def test_each_window_scores_as_if_cut_out_alone(stride):
    """Tiling, overlapping and end-aligned windows all see exactly their own pixels."""
    image = np.stack([nuclei_image((600, 700), seed=s) for s in (1, 2, 3)], axis=2)
    classifier = untrained(kernels=2)
    grid = classifier.grid(image, stride=stride)
    for row, y in enumerate(grid.starts()[0]):
        for col, x in enumerate(grid.starts()[1]):
            alone = classifier.grid(image[y:y + 252, x:x + 252]).scores[0, 0]
            assert grid.scores[row, col] == pytest.approx(alone, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("kernels", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_window_scores_equal_the_network_on_the_normalised_window(kernels, channels):
    """The classifier's fused path (scaling after pooling, grey kernels summed) is the plain forward."""
    image = nuclei_image((252, 252)).astype(np.uint16) * 40
    image = image if channels == 1 else np.stack([image, image // 2, image // 3], axis=2)
    classifier = untrained(kernels)
    window = torch.from_numpy(np.repeat(focus_input(image), 3 // channels, axis=2).transpose(2, 0, 1).astype(np.float32))
    with torch.no_grad():
        expected = float(classifier.network(normalize_window(window)[None]))
    assert classifier.grid(image).scores[0, 0] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_same_seed_same_model_and_repeated_scores_are_identical():
    image = nuclei_image()
    first, again = untrained(seed=3), untrained(seed=3)
    assert np.array_equal(first.grid(image).scores, first.grid(image).scores)
    assert np.array_equal(first.grid(image).scores, again.grid(image).scores)
    assert not np.array_equal(first.grid(image).scores, untrained(seed=4).grid(image).scores)


def test_pearson_loss_is_zero_when_linear_two_when_reversed_and_ignores_scale():
    target = torch.tensor([0.0, 1.0, 2.0, 5.0])
    assert float(pearson_loss(3 * target + 7, target)) == pytest.approx(0, abs=1e-6)
    assert float(pearson_loss(-target, target)) == pytest.approx(2, abs=1e-6)
    noisy = target + torch.tensor([0.3, -0.2, 0.4, -0.1])
    assert float(pearson_loss(noisy, target)) == pytest.approx(float(pearson_loss(10 * noisy - 4, target)), abs=1e-6)


def test_pearson_loss_of_a_constant_batch_is_finite_and_bad_batches_are_refused():
    pred = torch.zeros(4, requires_grad=True)
    loss = pearson_loss(pred, torch.arange(4.0))
    loss.backward()
    assert loss.item() == pytest.approx(1) and torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="1-D batches"):
        pearson_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        pearson_loss(torch.zeros(1), torch.zeros(1))


def test_training_learns_to_rank_blur_levels():
    config = FocusTrainConfig(data="unused", kernels=2, patch_size=97, levels_per_image=8, steps=100,
                              restarts=2, restart_steps=20, batch_size=8, seed=0)
    rng = np.random.default_rng(0)
    images = {"a": [nuclei_image((160, 200), seed=i) for i in range(4)],
              "b": [nuclei_image((160, 200), seed=i) for i in range(4, 8)]}
    patches = build_patches(images, config, rng, progress=False)
    assert {len(crops) for crops in patches.crops.values()} == {32} and patches.crops["a"][0].shape == (1, 97, 97)
    network, history = train_network(patches, config, progress=False)
    assert history[-1]["loss"] < 0.5
    tests = [nuclei_image((200, 200), seed=seed) for seed in (20, 21, 22)]

    def mean_score(level: float) -> float:
        blurred = np.stack([np.repeat(defocus(image, level, seed=1)[None], 3, axis=0) for image in tests])
        with torch.no_grad():
            return float(network(torch.stack([normalize_window(x) for x in torch.from_numpy(blurred).float()])).mean())

    scores = [mean_score(level) for level in (0, 3, 8)]
    assert scores == sorted(scores)


def test_calibration_is_folded_into_the_network():
    for kernels in (1, 2):
        classifier, image = untrained(kernels), nuclei_image()
        before = classifier.grid(image).scores
        calibrate(classifier.network, 2.0, 1.5)
        np.testing.assert_allclose(classifier.grid(image).scores, 2 * before + 1.5, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not positive"):
        calibrate(FocusLiteNN(1), -1.0, 0.0)


def test_threshold_and_roc_auc_on_separable_scores():
    sharp, blurry = np.array([0.1, 0.5, 0.9]), np.array([2.0, 3.0])
    threshold, accuracy = best_threshold(sharp, blurry)
    assert 0.9 < threshold < 2.0 and accuracy == 1.0
    assert roc_auc(sharp, blurry) == 1.0 and roc_auc(blurry, sharp) == 0.0


def test_blur_raises_the_shipped_score_and_flips_the_decision(shipped):
    image = nuclei_image()
    scores = [shipped.score(defocus(image, level, seed=0)) for level in (0, 2, 4, 8)]
    assert scores == sorted(scores)
    assert scores[0] < shipped.threshold < scores[-1]
    assert list(shipped.classify_batch([image, defocus(image, 8, seed=0)])) == [False, True]


def test_grey_rgb_8_16_bit_and_float_inputs_score_alike(shipped):
    grey = nuclei_image()
    variants = [grey, grey[..., None], np.repeat(grey[..., None], 3, axis=2),
                grey.astype(np.uint16) * 257, grey.astype(np.float32) / 255]
    scores = [shipped.score(image) for image in variants]
    assert scores == pytest.approx([scores[0]] * len(scores), abs=1e-3)


def test_an_image_without_content_has_no_score_and_is_not_blurry(shipped):
    noise = np.random.default_rng(0).normal(1000, 20, (300, 300)).astype(np.uint16)
    for image in (np.zeros((300, 300), np.uint8), noise):
        assert math.isnan(shipped.score(image))
        assert not shipped.classify_batch([image])[0]


@pytest.mark.parametrize("image, message", [
    (np.zeros((2, 3, 4, 5)), "H×W or H×W×C"),
    (np.zeros((50, 50, 2)), "1 \\(grey\\) or 3 \\(RGB\\) channels"),
    (np.zeros((0, 50)), "0×50 px is smaller than the 7×7"),
    (np.zeros((50, 5)), "50×5 px is smaller than the 7×7"),
    (np.array([["a"] * 9] * 9), "unsupported pixel type"),
    (np.where(np.eye(50) > 0, np.nan, 0.5), "50×50 px has NaN or infinite pixels"),
    (np.full((50, 50, 3), np.inf, dtype=np.float32), "NaN or infinite"),
])
def test_bad_images_are_refused(shipped, image, message):
    with pytest.raises(ValueError, match=message):
        shipped.grid(image)


def test_bad_window_geometry_is_refused(shipped):
    with pytest.raises(ValueError, match="multiple of 5"):
        shipped.grid(nuclei_image(), stride=252)
    with pytest.raises(ValueError, match="7 \\+ 5·n"):
        FocusClassifier(FocusLiteNN(1), 0.0, patch_size=256)
    with pytest.raises(ValueError, match="at least one kernel"):
        FocusLiteNN(0)


def test_checkpoint_round_trip_and_threshold_override(tmp_path):
    classifier = untrained()
    checkpoint = focus_checkpoint(classifier.network, 0.25, 252, ContentRule(), training={}, metrics={})
    path = checkpoint.save(tmp_path / "focus.pt")
    loaded = load_focus_classifier(path)
    image = nuclei_image()
    assert loaded.threshold == 0.25 and loaded.score(image) == pytest.approx(classifier.score(image), abs=1e-6)
    assert load_focus_classifier(path, threshold=9.0).threshold == 9.0


def test_a_segmentation_model_is_not_a_focus_classifier(checkpoint):
    with pytest.raises(ModelLoadError, match="not a focus classifier"):
        FocusClassifier.from_checkpoint(checkpoint)


def test_shipped_model_card_and_checkpoint_agree():
    checkpoint = Checkpoint.load(FOCUS_MODEL)
    card = FOCUS_MODEL.with_suffix(".md").read_text()
    assert f"**{checkpoint.threshold:.3f}**" in card
    assert checkpoint.metrics["test_real_defocus"]["z00_called_blurry"] >= 0.95


def test_default_focus_model_name_is_shipped():
    if "focus" not in SHIPPED:
        pytest.skip("segmenter.SHIPPED has no 'focus' entry yet (segmenter/registry.py)")
    assert load_focus_classifier().threshold == Checkpoint.load(FOCUS_MODEL).threshold


def test_real_defocus_is_blurry_and_in_focus_validation_is_sharp(shipped, shared_data):
    rates = real_defocus_rates(shipped, shared_data)
    assert rates["z00_called_blurry"] >= 0.95
    assert rates["val_called_sharp"] >= 0.95


def test_scoring_works_where_numba_has_nowhere_to_cache(tmp_path):
    """A read-only container: no writable cache folder for numba; the statistics compile in memory."""
    script = ("import numpy as np; from segmenter.focus import load_focus_classifier; "
              "print(load_focus_classifier('focus', device='cpu').score(np.full((300, 300), 9, np.uint8)))")
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator",
           "NUMBA_CACHE_DIR": "/proc/no-such-folder"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "nan"  # a flat image has no content


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


#: The instructions of the compiled 8-bit convolution (segmenter/_focus_conv.c).
NATIVE_CPU = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vbmi", "avx512_vnni"} <= cpu_flags()
native_cpu_only = pytest.mark.skipif(not NATIVE_CPU, reason="this CPU lacks AVX-512 VBMI/VNNI: PyTorch convolves")


@native_cpu_only
def test_the_compiled_convolution_is_built_and_used_where_the_cpu_runs_it():
    assert focus_module.native_convolution(), "segmenter/_focus_conv.c was not built: run `make venv`"


@native_cpu_only
@pytest.mark.parametrize("kernels", [1, 3, 7, 10])
@pytest.mark.parametrize("shape", [(7, 7), (64, 131), (257, 300), (1029, 1024)])
def test_compiled_convolution_equals_pytorchs(kernels, shape):
    """Every kernel grouping (4, 2, 1), row ends inside a block, RGBA views, batches of two."""
    torch.manual_seed(kernels)
    network = FocusLiteNN(kernels)
    rng = np.random.default_rng(kernels)
    images = [rng.integers(0, 256, (*shape, 4), dtype=np.uint8)[..., :3] for _ in range(2)]
    with torch.inference_mode():
        compiled, reference = (network.responses(images, native=native) for native in (True, False))
    assert compiled.shape == reference.shape == (2, kernels, (shape[0] - 2) // 5, (shape[1] - 2) // 5)
    assert np.abs(compiled - reference).max() <= 1e-4 * np.abs(reference).max()


@native_cpu_only
def test_scores_are_the_same_with_either_convolution(shipped, monkeypatch):
    """Sharp and blurred 8-bit RGB: the compiled kernel and PyTorch give the same window scores."""
    sharp = np.stack([nuclei_image((600, 700), seed=s) for s in (4, 5, 6)], axis=2)
    image = np.concatenate([sharp, defocus(sharp, 4, seed=0)], axis=1)
    assert image.dtype == np.uint8
    compiled = shipped.grid(image, stride=125).scores
    monkeypatch.setattr(focus_module, "native_convolution", lambda: False)
    np.testing.assert_allclose(shipped.grid(image, stride=125).scores, compiled, rtol=1e-4, atol=1e-4)


@native_cpu_only
def test_compiled_convolution_refuses_buffers_that_do_not_match_the_shapes():
    from segmenter import _focus_conv  # noqa: PLC0415 (built only where a compiler was found)
    image, weights = np.zeros((20, 30, 3), np.uint8), np.zeros((2, 7, 21), np.float32)
    with pytest.raises(ValueError, match="buffer sizes"):
        _focus_conv.responses(image, 20, 30, weights, 2, np.zeros((2, 3, 4), np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="bad shape"):
        _focus_conv.responses(image, 5, 30, weights, 2, np.zeros((2, 3, 4), np.float32), np.zeros(1, np.int64))
