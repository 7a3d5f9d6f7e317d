"""Inference backends (`segmenter.backend`): OpenVINO agrees with PyTorch, its converted model is cached
under the weights' digest and checked when read, an INT8 model (`segmenter.quantize`) is found by the
weights it was made from, and bad choices are refused by name."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import segmenter
from segmenter import backend
from segmenter.quantize import quantize, unets_of
from segmenter.unet import UNet

pytestmark = pytest.mark.skipif(backend.openvino_module() is None, reason="OpenVINO is not installed")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "openvino"
    monkeypatch.setenv(backend.CACHE_VARIABLE, str(folder))
    return folder


def field(seed: int = 0) -> np.ndarray:
    """A grey fluorescence-like field: bright blobs on a dark background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((256, 256))
    image = np.zeros((256, 256), dtype=np.float32)
    for y, x in rng.uniform(20, 236, (12, 2)):
        image += 180 * np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * 7 ** 2))
    return (image + rng.normal(10, 2, image.shape)).clip(0, 255).astype(np.uint8)


def test_openvino_fp32_matches_pytorch_and_bf16_finds_the_same_nuclei(cache: Path):
    image = field()
    reference = segmenter.load("default", device="cpu", backend="torch")
    fp32 = segmenter.load("default", device="cpu", backend="openvino", precision="fp32")
    assert np.abs(reference.predict_proba(image) - fp32.predict_proba(image)).max() < 1e-3
    found = reference.instances(image)
    for model in (fp32, segmenter.load("default", device="cpu", backend="openvino")):
        other = model.instances(image)
        assert len(other) == len(found) > 0
        assert np.mean(other.labels.astype(bool) == found.labels.astype(bool)) > 0.99


def test_the_converted_model_is_cached_and_a_corrupt_entry_converted_again(cache: Path):
    ov = backend.openvino_module()
    network = UNet(1, 1, depth=2, n_filters=4).eval()
    backend.exported_model(ov, network)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].name.startswith(backend.network_digest(network))
    (entries[0] / "model.bin").write_bytes(b"not a model")
    backend.exported_model(ov, network)
    assert (entries[0] / "sha256").read_text().strip() == backend._checksum(entries[0])
    with torch.no_grad():
        network.head.weight.add_(1.0)  # other weights, other entry
    backend.exported_model(ov, network)
    assert len(list(cache.iterdir())) == 2


def test_an_unwritable_cache_keeps_the_model_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv(backend.CACHE_VARIABLE, str(blocked / "openvino"))
    model = segmenter.load("default", device="cpu", backend="openvino")
    assert len(model.instances(field())) > 0


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="NNCF is not installed (requirements-dev.txt)")
def test_an_int8_model_is_found_by_its_weights_finds_the_same_nuclei_and_a_corrupt_one_is_not_run(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(backend, "QUANTIZED_DIR", tmp_path / "int8")
    monkeypatch.setattr(backend, "openvino_has_bf16", lambda ov: False)
    fp32 = segmenter.load("unet", device="cpu", backend="openvino")
    assert fp32.runner.description == "openvino fp32"
    with pytest.raises(ValueError, match="no shipped INT8 model"):
        segmenter.load("unet", device="cpu", backend="openvino", precision="int8")
    with pytest.raises(ValueError, match="no calibration images"):
        quantize(unets_of(fp32)[0], [])
    entry = quantize(unets_of(fp32)[0], [field(seed) for seed in range(1, 9)])
    assert entry.parent == tmp_path / "int8" and entry.name == backend.network_digest(fp32.network)
    int8 = segmenter.load("unet", device="cpu", backend="openvino")
    assert int8.runner.description == "openvino int8"
    image = field(99)
    found, other = fp32.instances(image), int8.instances(image)
    assert len(other) == len(found) > 0
    assert np.mean(other.labels.astype(bool) == found.labels.astype(bool)) > 0.99
    (entry / "model.bin").write_bytes(b"not a model")
    assert segmenter.load("unet", device="cpu", backend="openvino").runner.description == "openvino fp32"
    assert entry.is_dir()  # a shipped model is reported, never deleted


@pytest.mark.parametrize("options, message", [({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
                                              ({"backend": "torch", "precision": "int4"}, "unknown precision 'int4'")])
def test_unknown_choices_are_refused_by_name(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        segmenter.load("default", device="cpu", **options)
