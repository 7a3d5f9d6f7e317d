"""Brightfield nuclei: `model=auto` against the fluorescence default and a hematoxylin + Otsu + watershed
baseline, at 40× and 20×, with the pixel size known or left for cyseg to estimate; and the Mpix/s of the
brightfield and the fluorescence model, side by side on the same tile; and how often the focus classifier
(FocusLiteNN) calls stained tissue blurry, in focus and under synthetic defocus. `auto` runs with and
without test-time augmentation (`segmenter.tta`).

    .venv/bin/python benchmarks/brightfield_bench.py [--data ../shared/data] [--out benchmarks/results/brightfield.json]

Images: the seven `he_train` validation tiles of `scripts/train_brightfield.py` (one per organ, seven
patients never trained on; they chose the checkpoint, so these are selection numbers, not a held-out
test), at their own 40× (0.25 µm/px) and downsampled to 20× (0.5 µm/px, area averaging, labels by
nearest neighbour). F1 and AP at IoU ≥ 0.5, Dice of the foreground, count error (MAPE), pooled over
the tiles. Writes the JSON and prints a table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metrics import evaluate_image, summarize  # noqa: E402
from scripts.train_brightfield import HE_PIXEL_SIZE_UM, VAL_TILES  # noqa: E402
from segmenter.picker import ModelPicker  # noqa: E402
from segmenter.focus import load_focus_classifier  # noqa: E402
from segmenter.classical import OtsuWatershed  # noqa: E402
from transforms import PostProcess, defocus  # noqa: E402

MAGNIFICATIONS = {"40x": 1.0, "20x": 0.5}  # resampling of the 40× tiles
SPEED_TILE = 1024
SPEED_REPEATS = 3
FOCUS_LEVELS = (0, 2, 4, 8)  # defocus radius, px at 40×
FOCUS_CROP = 512


def tiles(data: Path, factor: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for stem in VAL_TILES:
        image = tifffile.imread(data / "he_train" / "images" / f"{stem}.tif")
        labels = tifffile.imread(data / "he_train" / "labels" / f"{stem}.tif").astype(np.int32)
        if factor != 1.0:
            size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT)
        out.append((stem, image, labels))
    return out


def hematoxylin_watershed(image: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """The classical baseline (`segmenter.classical`: hematoxylin optical density, Otsu's threshold,
    distance-transform watershed) with markers about a nucleus radius apart (1.5 µm)."""
    radius = max(2, round(1.5 / pixel_size_um))
    return OtsuWatershed(PostProcess(min_distance=radius, min_size=round(np.pi * radius ** 2 / 4),
                                     open_radius=1)).instances(image).labels


def score(found: list[tuple[np.ndarray, np.ndarray | None]], truth: list[np.ndarray]) -> dict:
    return summarize(evaluate_image(labels, true, scores) for (labels, scores), true in zip(found, truth))


def mpix_per_s(picker: ModelPicker, name: str, image: np.ndarray) -> float:
    _, model = picker.load(name)
    model.instances(image)  # warm-up
    seconds = []
    for _ in range(SPEED_REPEATS):
        start = time.perf_counter()
        model.instances(image)
        seconds.append(time.perf_counter() - start)
    return image.shape[0] * image.shape[1] / 1e6 / float(np.median(seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "brightfield.json")
    args = parser.parse_args()
    auto, default = ModelPicker("auto"), ModelPicker("default")
    autos = {"auto": auto, "auto with TTA": ModelPicker("auto", tta=True)}  # TTA: segmenter.tta
    results: dict = {"machine": platform.processor() or platform.machine(), "tiles": VAL_TILES, "scores": {}}
    for magnification, factor in MAGNIFICATIONS.items():
        samples = tiles(args.data, factor)
        truth = [labels for _, _, labels in samples]
        pixel_size = HE_PIXEL_SIZE_UM / factor
        runs = {}
        for (method, picker), known in itertools.product(autos.items(), (False, True)):
            picks = [picker.pick(image, pixel_size if known else None) for _, image, _ in samples]
            found = [p.model.instances(image) for p, (_, image, _) in zip(picks, samples)]
            runs[f"{method}, pixel size " + ("given" if known else "estimated")] = score(
                [(f.labels, f.scores) for f in found], truth) | {
                "models": sorted({p.name for p in picks}),
                "estimated_um": [p.pixel_size_um for p in picks] if not known else None}
        found = [default.pick(image).model.instances(image) for _, image, _ in samples]
        runs["default (fluorescence)"] = score([(f.labels, f.scores) for f in found], truth)
        runs["hematoxylin + Otsu + watershed"] = score(
            [(hematoxylin_watershed(image, pixel_size), None) for _, image, _ in samples], truth)
        results["scores"][magnification] = runs
    classifier = load_focus_classifier()
    crops = [image[y:y + FOCUS_CROP, x:x + FOCUS_CROP] for _, image, _ in tiles(args.data, 1.0)
             for y in (0, FOCUS_CROP // 2) for x in (0, FOCUS_CROP // 2)]
    results["focus_blurry_share"] = {
        f"defocus {level} px": float(np.mean(classifier.classify_batch(
            [defocus(crop, level, seed=i) if level else crop for i, crop in enumerate(crops)])))
        for level in FOCUS_LEVELS}
    tile = tiles(args.data, 1.0)[0][1][:SPEED_TILE, :SPEED_TILE]
    results["mpix_per_s"] = {name: mpix_per_s(auto, name, tile) for name in ("he", "default")} | {
        "he with TTA": mpix_per_s(autos["auto with TTA"], "he", tile)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"| magnification | method | F1 | AP@0.5 | Dice | count MAPE % |\n|---|---|---|---|---|---|")
    for magnification, runs in results["scores"].items():
        for method, m in runs.items():
            print(f"| {magnification} | {method} | {m['f1']:.3f} | {m['ap50']:.3f} | {m['dice']:.3f} | "
                  f"{m['count_mape']:.1f} |")
    print("Mpix/s (1024² H&E tile, torch backend, this CPU): " +
          ", ".join(f"{k} {v:.2f}" for k, v in results["mpix_per_s"].items()))
    print("focus classifier, share of 512² H&E crops called blurry: " +
          ", ".join(f"{k} {v:.0%}" for k, v in results["focus_blurry_share"].items()))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
