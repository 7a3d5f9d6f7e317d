"""Focus-quality benchmark: our FocusLiteNN models against the variance of the Laplacian.

    .venv/bin/python benchmarks/focus_bench.py [--data ../shared/data] [--threads 1] [--repeats 3]

Patches: the 1024×1024 RGB windows (half overlapping) of the H&E slides in `../shared/data/slides`
at full resolution that are at least half tissue (slides are not used in training), each
blurred with the optical defocus model and sensor noise (seeded) at 0 and 1 px (sharp) and 2, 3,
5 and 8 px (blurry). Every method scores the same uint8 patches in one run, one after the other:

- FocusLiteNN (each shipped `focuslitenn-*.pt`): the classifier's input score (median of its
  252-px windows with content), from the raw uint8 patch;
- variance of the Laplacian (`transforms.blur_measure`, the knowledge-based measure of the kind
  HistoQC uses), negated so that higher = blurrier for every method.

ms per patch: mean over all patches of the fastest of `--repeats` passes, with `--threads`
torch/BLAS threads (by default all cores: the machine's CPU). For FocusLiteNN also the bare network,
the paper's model (one convolution, pooling over the whole patch), on the same uint8 patches with
their conversion to a float tensor: what the published 17 ms measures, without our classifier's
window grid, content rule and input statistics. ROC-AUC: sharp vs blurry patches. A second ROC-AUC
is on real defocus: `bbbc006_z00` (blurry) against `bbbc039/val` (in focus), 520×696 16-bit grey.
The published FocusLiteNN CPU time is 17 ms per 1024² patch (Wang et al., MICCAI 2020).
Writes `benchmarks/results/focus.json` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import openslide
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmenter.datasets import list_images, read_image  # noqa: E402
from segmenter.focus import load_focus_classifier, native_convolution  # noqa: E402
from segmenter.focus_training import roc_auc, synthetic_defocus  # noqa: E402
from segmenter.registry import WEIGHTS_DIR  # noqa: E402
from transforms import blur_measure  # noqa: E402

log = logging.getLogger("focus_bench")

PATCH = 1024
SHARP_LEVELS = (0.0, 1.0)
BLURRY_LEVELS = (2.0, 3.0, 5.0, 8.0)
PUBLISHED_MS = 17.0
#: A pixel is tissue when its mean over RGB is below this (glass is near white).
TISSUE_GREY = 220


def slide_patches(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8 patch) of the PATCH² windows (half overlapping) that are mostly tissue, of
    the slides in `folder`."""
    patches = []
    for path in sorted(folder.iterdir()):
        if openslide.OpenSlide.detect_format(str(path)) is None:
            continue
        with openslide.OpenSlide(str(path)) as slide:
            width, height = slide.dimensions
            for y in range(0, height - PATCH + 1, PATCH // 2):
                for x in range(0, width - PATCH + 1, PATCH // 2):
                    rgb = np.asarray(slide.read_region((x, y), 0, (PATCH, PATCH)))[..., :3]
                    if (rgb.mean(axis=2) < TISSUE_GREY).mean() >= 0.5:
                        patches.append((f"{path.name}@{x},{y}", np.ascontiguousarray(rgb)))
    return patches


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def timed_scores(score: Callable[[np.ndarray], float], images: list[np.ndarray],
                 repeats: int) -> tuple[np.ndarray, float]:
    """Scores of every image and the mean ms per image of the fastest of `repeats` passes."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        scores = np.array([score(image) for image in images], dtype=np.float64)
        best = min(best, time.perf_counter() - start)
    return scores, 1000 * best / len(images)


def network_ms(network: torch.nn.Module, patches: list[np.ndarray], repeats: int) -> float:
    """Mean ms of the bare network (the paper's model: pooling over the whole patch) on uint8
    H×W×3 patches, their conversion to a float tensor included; fastest of `repeats` passes."""
    with torch.inference_mode():
        return timed_scores(lambda patch: float(network(torch.from_numpy(patch).permute(2, 0, 1)[None].float())),
                            patches, repeats)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "focus.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    patches, blurry = [], []
    sources = slide_patches(args.data / "slides")
    for _, patch in sources:
        for level in SHARP_LEVELS + BLURRY_LEVELS:
            patches.append(synthetic_defocus(patch, level, rng, kind="optical"))
            blurry.append(level in BLURRY_LEVELS)
    blurry = np.array(blurry)
    log.info("%d patches of %d² px from %d slide windows", len(patches), PATCH, len(sources))
    real_blurry = [read_image(p) for p in list_images(args.data / "bbbc006_z00" / "images")]
    real_sharp = [read_image(p) for p in list_images(args.data / "bbbc039" / "val" / "images")]

    classifiers = {path.stem: load_focus_classifier(path, device="cpu")
                   for path in sorted(WEIGHTS_DIR.glob("focuslitenn-*.pt"), key=lambda p: int(p.stem.split("-")[1]))}
    methods: dict[str, Callable[[np.ndarray], float]] = {
        "laplacian-variance": lambda image: -blur_measure(image),
        **{name: classifier.score for name, classifier in classifiers.items()}}

    results = {}
    for name, score in methods.items():
        scores, ms = timed_scores(score, patches, args.repeats)
        scores = np.nan_to_num(scores, nan=-np.inf)  # no content: not blurry
        real = np.array([score(image) for image in real_sharp + real_blurry])
        real = np.nan_to_num(real, nan=-np.inf)
        results[name] = dict(
            ms_per_patch=round(ms, 3), speedup_vs_published=round(PUBLISHED_MS / ms, 1),
            roc_auc=round(roc_auc(scores[~blurry], scores[blurry]), 4),
            roc_auc_real_defocus=round(roc_auc(real[:len(real_sharp)], real[len(real_sharp):]), 4))
        if name in classifiers:
            ms = network_ms(classifiers[name].network, patches, args.repeats)
            results[name].update(network_ms=round(ms, 3), network_speedup_vs_published=round(PUBLISHED_MS / ms, 1))

    report = dict(
        machine=dict(cpu=cpu_name(), cores=os.cpu_count(), torch=torch.__version__,
                     threads=args.threads, load_average=[round(v, 2) for v in os.getloadavg()],
                     compiled_convolution=native_convolution()),
        published_focuslitenn_ms=PUBLISHED_MS, target_ms=PUBLISHED_MS / 10,
        patches=dict(count=len(patches), size=PATCH, slide_windows=[name for name, _ in sources],
                     sharp_levels=SHARP_LEVELS, blurry_levels=BLURRY_LEVELS, psf="optical + noise", seed=args.seed),
        real_defocus=dict(blurry="bbbc006_z00", n_blurry=len(real_blurry), sharp="bbbc039/val", n_sharp=len(real_sharp)),
        methods=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"{len(patches)} RGB patches of {PATCH}² px, {args.threads} thread(s), load average "
          f"{report['machine']['load_average']}; published FocusLiteNN: {PUBLISHED_MS} ms/patch")
    print(f"{'method':20} {'ms/patch':>9} {'× faster':>9} {'network ms':>11} {'× faster':>9} {'ROC-AUC':>8} "
          f"{'real AUC':>9}")
    for name, r in results.items():
        network = (f"{r['network_ms']:11.2f} {r['network_speedup_vs_published']:9.1f}" if "network_ms" in r
                   else f"{'-':>11} {'-':>9}")
        print(f"{name:20} {r['ms_per_patch']:9.2f} {r['speedup_vs_published']:9.1f} {network} {r['roc_auc']:8.3f} "
              f"{r['roc_auc_real_defocus']:9.3f}")
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
