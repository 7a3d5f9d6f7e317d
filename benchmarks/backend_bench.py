"""Inference backends side by side in one run: speed (Mpix/s of the whole `instances` call) and accuracy
(F1 at IoU ≥ 0.5 against labels) of each shipped segmenter under PyTorch fp32, PyTorch bf16 autocast and
OpenVINO fp32/bf16/int8 (int8: the shipped quantized model, `scripts/quantize_models.py`), on this machine.

    .venv/bin/python benchmarks/backend_bench.py [--data ../shared/data] [--images 4] [--models default,he]
        [--settings "torch fp32,openvino int8"] [--out benchmarks/results/backend.json]

Fluorescence models on the first `--images` of `bbbc039/val`, `he` on as many `he_train` validation tiles
(`scripts/train_brightfield.py`), each at the model's own scale. Speed: the median of three timed passes
over the images after one warm-up (the backend measures its batch layout during warm-up).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import segmenter  # noqa: E402
from metrics import match_instances  # noqa: E402
from scripts.train_brightfield import VAL_TILES  # noqa: E402
from segmenter.datasets import load_labelled  # noqa: E402

MODELS = {"default": "bbbc039", "unet": "bbbc039", "combined": "bbbc039", "detection": "bbbc039", "he": "he_train"}
SETTINGS = {"torch fp32": dict(backend="torch", precision="fp32"),
            "torch bf16": dict(backend="torch", precision="bf16"),
            "openvino fp32": dict(backend="openvino", precision="fp32"),
            "openvino bf16": dict(backend="openvino", precision="bf16"),
            "openvino int8": dict(backend="openvino", precision="int8")}
REPEATS = 3


def samples(data: Path, kind: str, count: int):
    if kind == "bbbc039":
        return load_labelled(data / "bbbc039" / "val" / "images", data / "bbbc039" / "val" / "labels")[:count]
    wanted = set(VAL_TILES[:count])
    return [s for s in load_labelled(data / "he_train" / "images", data / "he_train" / "labels") if s.name in wanted]


def measure(model: segmenter.Segmenter, images: list) -> tuple[float, float]:
    """(Mpix/s, F1) of the model on the samples."""
    found = [model.instances(s.image) for s in images]  # warm-up, and the results scored
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for s in images:
            model.instances(s.image)
        seconds.append(time.perf_counter() - start)
    tp = fp = fn = 0
    for f, s in zip(found, images):
        m = match_instances(f.labels, s.labels)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    pixels = sum(s.image.shape[0] * s.image.shape[1] for s in images)
    return pixels / 1e6 / float(np.median(seconds)), 2 * tp / max(1, 2 * tp + fp + fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of " + ", ".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backend.json")
    args = parser.parse_args()
    models, settings = args.models.split(","), args.settings.split(",")
    unknown = [m for m in models if m not in MODELS] + [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown model or setting: {', '.join(unknown)}")
    results: dict = {"machine": platform.processor() or platform.machine(), "images": args.images, "models": {}}
    print("| model | backend | Mpix/s | F1 |\n|---|---|---|---|")
    for name in models:
        images = samples(args.data, MODELS[name], args.images)
        results["models"][name] = {}
        for setting in settings:
            try:
                speed, f1 = measure(segmenter.load(name, device="cpu", **SETTINGS[setting]), images)
            except ValueError as error:  # e.g. no bf16 on this CPU
                results["models"][name][setting] = {"error": str(error)}
                continue
            results["models"][name][setting] = {"mpix_per_s": round(speed, 3), "f1": round(f1, 4)}
            print(f"| {name} | {setting} | {speed:.2f} | {f1:.4f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
