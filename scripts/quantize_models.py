"""Quantize the shipped U-Nets to INT8 for OpenVINO on CPUs without bf16 (`segmenter.quantize`).

    .venv/bin/python scripts/quantize_models.py [--models default,unet,he] [--data ../shared/data] [--images 48]

Calibration images are training images of each model's modality: `bbbc039/train` fields for the
fluorescence models, in focus and blurred (2/3 of them, 4-24 px, `transforms.defocus`) as the models are
trained to see them; `he_train` tiles outside the brightfield model's validation patients for `he`.
Writes segmenter/weights/int8/<digest>/ per network (an existing one is kept), removes the folders of
weights no shipped model has any more (a retrained model), and lists them in segmenter/weights/int8/README.md.
Check the result with `benchmarks/backend_bench.py` (F1 of each backend on the same images).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import segmenter  # noqa: E402
from scripts.training_arguments import SHARED_DATA  # noqa: E402
from segmenter.backend import QUANTIZED_DIR, network_digest  # noqa: E402
from segmenter.registry import SHIPPED  # noqa: E402
from segmenter.datasets import read_image  # noqa: E402
from segmenter.quantize import quantize, unets_of  # noqa: E402
from transforms import defocus  # noqa: E402

BLUR_CYCLE = (0, 4, 8, 0, 16, 24)  # px, per calibration image in turn


def calibration_images(model: segmenter.Segmenter, data: Path, count: int) -> list[np.ndarray]:
    """Training images of the model's modality (RGB: he_train outside its validation patients)."""
    unet = unets_of(model)[0]
    if unet.in_channels == 3:
        held_out = set(unet.checkpoint.training.get("config", {}).get("val_names", []))
        paths = [p for p in sorted((data / "he_train" / "images").glob("*.tif")) if p.stem not in held_out]
        return [read_image(p) for p in paths[:count]]
    paths = sorted((data / "bbbc039" / "train" / "images").glob("*.tif"))[:count]
    images = [read_image(p).astype(np.float32) for p in paths]
    return [defocus(image, level, seed=i) if level else image
            for i, (image, level) in enumerate(zip(images, BLUR_CYCLE * len(images)))]


def shipped_networks() -> dict[str, str]:
    """Digest of each shipped U-Net's weights -> the shipped model names that run it."""
    names: dict[str, str] = {}
    for name in SHIPPED:
        try:
            unets = unets_of(segmenter.load(name, device="cpu", backend="torch"))
        except ValueError:  # no U-Net (otsu, detection), or not a segmenter (the focus classifiers)
            continue
        for unet in unets:
            digest = network_digest(unet.network)
            names[digest] = f"{names[digest]}, {name}" if digest in names else name
    return names


def write_index(shipped: dict[str, str]) -> None:
    """Remove the INT8 models of weights no longer shipped; list the others in README.md."""
    rows = []
    for entry in sorted(p for p in QUANTIZED_DIR.iterdir() if p.is_dir()):
        if entry.name not in shipped:
            shutil.rmtree(entry)
            print(f"removed {entry.relative_to(ROOT)}: no shipped model has these weights")
            continue
        size = sum(f.stat().st_size for f in entry.iterdir()) / 1e6
        rows.append(f"| `{entry.name}` | {shipped[entry.name]} | {size:.2f} MB |")
    (QUANTIZED_DIR / "README.md").write_text(
        "# INT8 models for OpenVINO\n\nMade by `python scripts/quantize_models.py` (NNCF post-training "
        "quantization, calibrated on training images of each model's modality); the `openvino` backend runs them "
        "on CPUs without bf16, found by the digest of the weights they were made from "
        "(`segmenter.backend.QUANTIZED_DIR`). F1 against PyTorch fp32: `docs/BENCHMARKS.md`, inference backends."
        "\n\n| folder (weights digest) | shipped models | size |\n|---|---|---|\n" + "\n".join(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,unet,he", help="shipped model names, comma-separated")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--images", type=int, default=48, help="calibration images per model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in args.models.split(","):
        model = segmenter.load(name, device="cpu", backend="torch")
        images = calibration_images(model, args.data, args.images)
        for unet in unets_of(model):
            entry = QUANTIZED_DIR / network_digest(unet.network)
            if entry.exists():
                print(f"{name}: {entry.relative_to(ROOT)} exists")
                continue
            quantize(unet, images)
            size = sum(f.stat().st_size for f in entry.iterdir()) / 1e6
            print(f"{name}: {entry.relative_to(ROOT)} ({size:.2f} MB, {len(images)} calibration images)")
    write_index(shipped_networks())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
