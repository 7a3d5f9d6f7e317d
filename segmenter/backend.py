"""How a segmenter runs its network: the inference backend and its precision.

- `torch`: PyTorch on the segmenter's device; on a GPU with autocast (bf16 where the GPU has it,
  else fp16), on a CPU in fp32 (the reference every other backend is checked against).
- `openvino`: OpenVINO on the CPU, bf16 where the CPU has bf16 dot products; otherwise int8 where the
  network has a shipped INT8 model (`QUANTIZED_DIR`, written by `segmenter.quantize`), else fp32.
- `auto`: `torch` on a GPU, `openvino` on a CPU, and `torch` where OpenVINO is not installed or
  cannot convert the network.

The network is converted to OpenVINO once per weights: the converted model is kept in a cache
folder (`CYSEG_BACKEND_CACHE`, default `$XDG_CACHE_HOME/cyseg/openvino`) under the digest of the
weights, checked by a checksum when read (a corrupt entry is converted again), and kept in
memory only where the folder is not writable (a read-only container).

How a batch runs is measured, not assumed: for each batch shape, the first batches try every
equivalent way (PyTorch's memory format, contiguous or channels_last; where the segmenter's batch
size is left to measurement, chunks of up to `MAX_BATCH` images in one forward pass or image by
image) and the fastest is kept. Their results are used, so trying costs only the slower ways'
extra time.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import torch
from torch import nn

from segmenter.base import resolve_device

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: The shipped INT8 OpenVINO models, one folder per network under the digest of its weights (as the cache).
QUANTIZED_DIR = Path(__file__).resolve().parent / "weights" / "int8"
CACHE_VARIABLE = "CYSEG_BACKEND_CACHE"
MAX_BATCH = 8  # images per forward pass at most when the batch size is measured
TRIALS = 2  # timed runs of each way per batch shape; the first warms up, the second decides

Way = Callable[[np.ndarray], torch.Tensor]


def openvino_module() -> ModuleType | None:
    """The openvino package, or None where it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def openvino_has_bf16(ov: ModuleType) -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cache_dir() -> Path:
    """The folder of converted models."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cyseg" / "openvino"


def network_digest(network: nn.Module) -> str:
    """A digest of the network's class and weights (the checkpoint's `state_dict`)."""
    digest = hashlib.sha256(type(network).__name__.encode())
    for name, tensor in network.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _in_channels(network: nn.Module) -> int:
    return next(m for m in network.modules() if isinstance(m, nn.Conv2d)).in_channels


def _checksum(entry: Path) -> str:
    digest = hashlib.sha256()
    for name in ("model.xml", "model.bin"):
        digest.update((entry / name).read_bytes())
    return digest.hexdigest()


def _read_entry(ov: ModuleType, entry: Path, cached: bool = True):
    """The model in `entry`, or None when there is none or it is corrupt (a cached one is then removed)."""
    if not entry.is_dir():
        return None
    try:
        if (entry / "sha256").read_text().strip() != _checksum(entry):
            raise ValueError("checksum mismatch")
        return ov.Core().read_model(entry / "model.xml")
    except Exception as error:  # a missing file, a checksum mismatch, or OpenVINO refusing the files
        log.warning("%s model %s is corrupt (%s)%s", "cached" if cached else "shipped", entry, error,
                    ": converting again" if cached else "")
        if cached:
            shutil.rmtree(entry, ignore_errors=True)
        return None


def write_entry(ov: ModuleType, model, entry: Path) -> None:
    """Store `model` in `entry`, atomically (a folder written aside, then renamed); nothing where the
    folder is not writable."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    except OSError as error:
        log.info("model cache %s is not writable (%s): the converted model stays in memory", entry.parent, error)
        return
    try:
        ov.save_model(model, partial / "model.xml", compress_to_fp16=False)
        (partial / "sha256").write_text(_checksum(partial))
        partial.rename(entry)
    except (OSError, RuntimeError) as error:  # full disk, or another process stored it first
        log.info("model not cached in %s (%s)", entry, error)
        shutil.rmtree(partial, ignore_errors=True)


def exported_model(ov: ModuleType, network: nn.Module, cache: Path | None = None):
    """The network as an OpenVINO model (dynamic batch and size), from the cache when it holds a sound
    copy, else converted (and cached); `cache` defaults to `cache_dir()`."""
    version = "".join(c if c.isalnum() or c in ".-" else "_" for c in ov.get_version())
    entry = (cache or cache_dir()) / f"{network_digest(network)}-{version}"
    model = _read_entry(ov, entry)
    if model is not None:
        log.debug("OpenVINO model from the cache: %s", entry)
        return model
    side = 2 * getattr(network, "multiple", 1)
    started = time.perf_counter()
    with warnings.catch_warnings():  # OpenVINO traces with torch.jit, which warns that it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        model = ov.convert_model(copy.deepcopy(network).cpu().eval(),
                                 example_input=torch.zeros(1, _in_channels(network), side, side))
    log.info("network converted to OpenVINO in %.1f s", time.perf_counter() - started)
    write_entry(ov, model, entry)
    return model


class Runner:
    """Runs a network on N×C×H×W float32 batches and returns its output as a float32 tensor on
    `device`, through the fastest of its `ways` measured per batch shape."""

    def __init__(self, backend: str, precision: str, device: torch.device, ways: dict[str, Way]):
        self.backend, self.precision, self.device = backend, precision, device
        self.ways = ways
        self.chosen: dict[tuple, str] = {}
        self._trials: dict[tuple, dict[str, list[float]]] = {}

    @property
    def description(self) -> str:
        return f"{self.backend} {self.precision}"

    def _run(self, way: str, batch: np.ndarray) -> torch.Tensor:
        name, _, split = way.partition(", ")
        if split:
            return torch.cat([self.ways[name](batch[i:i + 1]) for i in range(len(batch))])
        return self.ways[name](batch)

    def __call__(self, batch: np.ndarray, split: bool = False) -> torch.Tensor:
        """The network's output for `batch`; with `split`, the batch may also run image by image."""
        key = (tuple(batch.shape), split and len(batch) > 1)
        if key in self.chosen:
            return self._run(self.chosen[key], batch)
        candidates = list(self.ways) + ([f"{name}, one by one" for name in self.ways] if key[1] else [])
        trials = self._trials.setdefault(key, {way: [] for way in candidates})
        way = min(trials, key=lambda name: len(trials[name]))
        started = time.perf_counter()
        output = self._run(way, batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        trials[way].append(time.perf_counter() - started)
        if all(len(times) >= TRIALS for times in trials.values()):
            self.chosen[key] = min(trials, key=lambda name: min(trials[name][1:]))
            log.debug("%s on %s: %s (%s)", self.description, key, self.chosen[key], trials)
            del self._trials[key]
        return output


def torch_runner(network: nn.Module, device: torch.device, precision: str = "auto") -> Runner:
    """PyTorch on `device` (where `network` is); `precision` "auto" is fp32 on a CPU and autocast on a GPU.
    The network's weights take the memory format of the way that runs (converted in place)."""
    if precision == "auto":
        precision = "fp32" if device.type == "cpu" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    allowed = ("fp32", "bf16") if device.type == "cpu" else ("fp32", "bf16", "fp16")
    if precision not in allowed:
        raise ValueError(f"PyTorch on {device.type} runs {', '.join(allowed)}, not '{precision}'")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    current = [torch.contiguous_format]

    def way(memory_format: torch.memory_format) -> Way:
        def run(batch: np.ndarray) -> torch.Tensor:
            if current[0] != memory_format:
                network.to(memory_format=memory_format)
                current[0] = memory_format
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=memory_format)
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return network(x).float().contiguous()
        return run

    return Runner("torch", precision, device, {"contiguous": way(torch.contiguous_format),
                                                "channels_last": way(torch.channels_last)})


def quantized_model(ov: ModuleType, network: nn.Module):
    """The shipped INT8 model of `network`'s weights, or None."""
    return _read_entry(ov, QUANTIZED_DIR / network_digest(network), cached=False)


def openvino_runner(network: nn.Module, precision: str = "auto", cache: Path | None = None) -> Runner:
    """OpenVINO on the CPU; `precision` "auto" is bf16 where the CPU has it, else int8 where the network
    has a shipped INT8 model, else fp32. ValueError when OpenVINO is missing or cannot run the network."""
    ov = openvino_module()
    if ov is None:
        raise ValueError("the openvino backend needs the openvino package (pip install -r requirements.txt)")
    bf16 = openvino_has_bf16(ov)
    int8 = quantized_model(ov, network) if precision == "int8" or (precision == "auto" and not bf16) else None
    if precision == "auto":
        precision = "bf16" if bf16 else "int8" if int8 is not None else "fp32"
    if precision == "int8" and int8 is None:
        raise ValueError("this network has no shipped INT8 model (python scripts/quantize_models.py makes one)")
    if precision not in ("fp32", "bf16", "int8") or (precision == "bf16" and not bf16):
        raise ValueError(f"OpenVINO on this CPU runs {'fp32, bf16' if bf16 else 'fp32'}, not '{precision}'")
    try:
        model = int8 if precision == "int8" else exported_model(ov, network, cache)
        compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"})
    except Exception as error:  # conversion errors come in many types
        raise ValueError(f"OpenVINO cannot run this network ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200] if str(error) else ''})") from error

    def run(batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(compiled(np.ascontiguousarray(batch), share_inputs=True)[0])

    return Runner("openvino", precision, torch.device("cpu"), {"openvino": run})


def runner_device(backend: str, device: str | torch.device | None) -> torch.device:
    """The device a segmenter with this backend lives on: OpenVINO's is the CPU."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if backend == "openvino" and (device is None or str(device) == "auto"):
        return torch.device("cpu")
    return resolve_device(device)


def build_runner(network: nn.Module, device: torch.device, backend: str = "auto",
                 precision: str = "auto") -> Runner:
    """The runner of `network` (already on `device`, in eval mode) for a backend of `BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if backend == "openvino" and device.type != "cpu":
        raise ValueError(f"the openvino backend runs on the CPU, not on '{device}'")
    if backend == "openvino" or (backend == "auto" and device.type == "cpu" and openvino_module() is not None):
        try:
            return openvino_runner(network, precision)
        except ValueError as error:
            if backend == "openvino":
                raise
            log.warning("%s; running PyTorch instead", error)
    return torch_runner(network, device, precision)
