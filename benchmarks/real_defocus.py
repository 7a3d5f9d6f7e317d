"""Real defocus: nuclei found per BBBC006 z = 00 plane (about 32 µm out of focus, no labels) by each model.

    .venv/bin/python benchmarks/real_defocus.py [--models default-v1,default,otsu] [--data ../shared/data]

Without labels the count is the measure: the same fields in focus hold the nuclei a model should
still find. Writes benchmarks/results/real_defocus.json and, for the first two planes (sorted by
name), a side-by-side outline overlay per model in docs/real_defocus/<plane>.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.training_arguments import SHARED_DATA  # noqa: E402
from segmenter.datasets import list_images, read_image  # noqa: E402
from segmenter.picker import ModelPicker  # noqa: E402

OVERLAYS = 2


def overlay(image: np.ndarray, found: dict[str, np.ndarray], path: Path) -> None:
    """The plane with each model's outlines, one panel per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries
    low, high = np.percentile(image, (1, 99.5))
    grey = np.clip((image.astype(np.float64) - low) / max(high - low, 1e-9), 0, 1)
    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.4))
    for ax, (name, labels) in zip(np.atleast_1d(axes), found.items()):
        rgb = np.repeat(grey[..., None], 3, axis=2)
        rgb[find_boundaries(labels, mode="thick")] = (0.1, 1.0, 0.3)
        ax.imshow(rgb)
        ax.set_title(f"{name}: {int(labels.max())} nuclei", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{path.stem} (BBBC006, z = 00, real defocus)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default-v1,default,otsu")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_defocus.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "real_defocus")
    args = parser.parse_args()
    models = {name: ModelPicker(name, backend=args.backend).load(name)[1] for name in args.models.split(",")}
    counts: dict[str, dict[str, int]] = {name: {} for name in models}
    for index, path in enumerate(list_images(args.data / "bbbc006_z00" / "images")):
        image = read_image(path)
        found = {name: model.instances(image).labels for name, model in models.items()}
        for name, labels in found.items():
            counts[name][path.name] = int(labels.max())
        if index < OVERLAYS:
            overlay(image, found, args.docs / f"{path.stem}.png")
        print(path.name, {name: int(labels.max()) for name, labels in found.items()})
    summary = {name: dict(total=sum(c.values()), median=float(np.median(list(c.values()))),
                          empty_planes=sum(v == 0 for v in c.values())) for name, c in counts.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(models=list(models), counts=counts, summary=summary), indent=1))
    for name, s in summary.items():
        print(f"{name}: {s['total']} nuclei in {len(counts[name])} planes (median {s['median']:g}, "
              f"{s['empty_planes']} planes with none)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
