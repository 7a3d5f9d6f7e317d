"""Which backend `segmenter.load` picks and what it falls back to (`segmenter.backend`): OpenVINO missing
or unable to convert, a CPU without bf16 (with or without a shipped INT8 model), no GPU; and each choice
finds the nuclei PyTorch fp32 finds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import segmenter
from metrics.matching import match_instances
from segmenter import backend
from segmenter.datasets import read_image

MODEL = "unet"  # a plain U-Net: its runner is the one the backend layer picks (the default wraps one)
needs_openvino = pytest.mark.skipif(backend.openvino_module() is None, reason="OpenVINO is not installed")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backend.CACHE_VARIABLE, str(tmp_path / "openvino"))


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def image(shared_data: Path) -> np.ndarray:
    """A BBBC039 val field, cropped to 256² (24 nuclei)."""
    path = sorted((shared_data / "bbbc039" / "val" / "images").glob("*.tif"))[0]
    return read_image(path)[:256, :256]


@pytest.fixture(scope="module")
def reference(image: np.ndarray) -> np.ndarray:
    """The nuclei PyTorch fp32 finds: the labels every backend is held to."""
    found = segmenter.load(MODEL, device="cpu", backend="torch", precision="fp32").instances(image)
    assert len(found) > 10
    return found.labels


def same_nuclei(model: segmenter.Segmenter, image: np.ndarray, reference: np.ndarray) -> None:
    matching = match_instances(model.instances(image).labels, reference)
    assert matching.n_pred == pytest.approx(matching.n_true, abs=1)
    assert matching.f1 >= 0.97


def test_without_openvino_auto_runs_pytorch_fp32_on_the_cpu(monkeypatch: pytest.MonkeyPatch, no_gpu, image,
                                                             reference):
    monkeypatch.setattr(backend, "openvino_module", lambda: None)
    model = segmenter.load(MODEL, device="auto", backend="auto")
    assert (model.device.type, model.runner.backend, model.runner.precision) == ("cpu", "torch", "fp32")
    same_nuclei(model, image, reference)
    with pytest.raises(ValueError, match="needs the openvino package"):
        segmenter.load(MODEL, device="cpu", backend="openvino")


@needs_openvino
def test_a_network_openvino_cannot_convert_falls_back_to_pytorch(monkeypatch: pytest.MonkeyPatch, no_gpu):
    def refuse(*args, **kwargs):
        raise ValueError("OpenVINO cannot run this network (test)")

    monkeypatch.setattr(backend, "openvino_runner", refuse)
    assert segmenter.load(MODEL, backend="auto").runner.description == "torch fp32"
    with pytest.raises(ValueError, match="cannot run this network"):
        segmenter.load(MODEL, backend="openvino")


@needs_openvino
def test_a_cpu_without_bf16_gets_the_shipped_int8_model(monkeypatch: pytest.MonkeyPatch, no_gpu, image, reference):
    monkeypatch.setattr(backend, "openvino_has_bf16", lambda ov: False)
    model = segmenter.load(MODEL, backend="auto")
    assert (model.device.type, model.runner.description) == ("cpu", "openvino int8")
    same_nuclei(model, image, reference)


@needs_openvino
def test_a_cpu_without_bf16_or_int8_model_gets_openvino_fp32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_gpu,
                                                            image, reference):
    monkeypatch.setattr(backend, "openvino_has_bf16", lambda ov: False)
    monkeypatch.setattr(backend, "QUANTIZED_DIR", tmp_path / "no-int8")
    model = segmenter.load(MODEL, backend="auto")
    assert (model.device.type, model.runner.description) == ("cpu", "openvino fp32")
    same_nuclei(model, image, reference)
    with pytest.raises(ValueError, match="runs fp32, not 'bf16'"):
        segmenter.load(MODEL, backend="openvino", precision="bf16")


@needs_openvino
def test_a_cpu_with_bf16_gets_openvino_bf16(no_gpu, image, reference):
    if not backend.openvino_has_bf16(backend.openvino_module()):
        pytest.skip("this CPU has no bf16 dot products (AVX-512 BF16 or AMX)")
    model = segmenter.load(MODEL, backend="auto")
    assert model.runner.description == "openvino bf16"
    same_nuclei(model, image, reference)


def test_without_a_gpu_nothing_runs_on_cuda(no_gpu, image, reference):
    for name in ("auto", "torch", "openvino"):
        assert backend.runner_device(name, "auto").type == "cpu"
    model = segmenter.load(MODEL, device=None, backend="torch")
    assert model.device.type == "cpu" and model.runner.description == "torch fp32"
    same_nuclei(model, image, reference)
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        segmenter.load(MODEL, device="cuda", backend="auto")
