"""Merging across tiles: our instance merger against SLDC's semantic merger, on the same tiles.

    .venv/bin/python benchmarks/merge_bench.py [--size 2048] [--tile 512] [--overlap 32] [--device cpu]

A synthetic fluorescence slide (`cyseg.synthetic.render`, seeded) with known nuclei: random ones,
plus touching pairs placed across the tile seams (the contact at several offsets inside the overlap),
touching pairs across tile corners, and nuclei larger than the overlap straddling seams and corners.
Each merger gets the same tiles from two segmenters:

- `truth`: the ground-truth instances rasterised per tile (the slide's label image, crop by crop),
  which isolates merging from model errors;
- `unet`: the shipped default U-Net (watershed instances; SLDC's merger gets its class masks, where
  the pixels along which instances touch are background); `unet/one-tile` segments the whole slide
  as one tile (nothing to merge): the model's own errors, for reference.

An object *matches* a true nucleus when their intersection exceeds half the smaller of the two
areas, and *covers* it when it holds more than half of the nucleus. Per run: objects found,
duplicates (objects beyond the first matching one nucleus), fused (objects covering two or more
nuclei; `fused_placed`: of the placed touching pairs, those covered by one object), missed (nuclei no
object matches), false (objects matching no nucleus), and seconds spent polygonising and merging
(summed over threads; the merge includes the final filtering). Writes `benchmarks/results/merge.json`
and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import shapely
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import segmenter  # noqa: E402
from cyseg.coordinates import from_cytomine  # noqa: E402
from cyseg.pipeline.config import JobConfig  # noqa: E402
from cyseg.pipeline.merge import InstanceMerger, Merger, SemanticTileMerger  # noqa: E402
from cyseg.pipeline.source import TileSource  # noqa: E402
from cyseg.pipeline.tissue import everywhere  # noqa: E402
from cyseg.pipeline.workflow import Workflow  # noqa: E402
from cyseg.polygons import label_polygons  # noqa: E402
from cyseg.synthetic import Nucleus, random_nuclei, render  # noqa: E402
from segmenter.base import Instances, Segmenter  # noqa: E402
from transforms import touching_borders  # noqa: E402

log = logging.getLogger("merge_bench")

CONTACTS = (-14, -6, 0, 6, 14)  # where a placed pair touches, relative to the middle of the overlap
SMALL_RADIUS = (8.0, 11.0)
LARGE_RADIUS = (20.0, 26.0)  # nuclei wider than the default 32-pixel overlap
MIN_GAP = 4.0
RANDOM_SPACING = 2500  # pixels² per random nucleus
MIN_AREA = 50.0


class ArraySource(TileSource):
    """A slide held in memory (RGB uint8, full resolution)."""

    def __init__(self, pixels: np.ndarray) -> None:
        super().__init__(pixels.shape[1], pixels.shape[0], 0)
        self.pixels = pixels

    @property
    def description(self) -> str:
        return "an array"

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self.pixels[y:y + height, x:x + width]

    def thumbnail(self, max_size: int) -> np.ndarray:
        step = max(1, -(-max(self.full_width, self.full_height) // max_size))
        return self.pixels[::step, ::step]


class TruthSegmenter(Segmenter):
    """The true instances of the tile it is given: pixels encode the label (red + 256 × green)."""

    name = "truth"

    def __init__(self) -> None:
        super().__init__(["background", "nucleus"], "cpu")

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, device: Any = None, **options: Any) -> "TruthSegmenter":
        return cls()

    @staticmethod
    def _labels(image: np.ndarray) -> np.ndarray:
        ids = image[..., 0].astype(np.int64) + 256 * image[..., 1].astype(np.int64)
        present, labels = np.unique(ids, return_inverse=True)
        return labels.reshape(ids.shape) if present[0] == 0 else labels.reshape(ids.shape) + 1

    def predict_proba_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        foreground = [self._labels(image) > 0 for image in images]
        return [np.stack([~inside, inside]).astype(np.float32) for inside in foreground]

    def segment_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class masks with the seams between touching nuclei set to background (as the U-Net's)."""
        masks = []
        for image in images:
            labels = self._labels(image)
            masks.append(np.where(touching_borders(labels), 0, labels > 0).astype(np.int32))
        return np.stack(masks)

    def instances_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> list[Instances]:
        found = []
        for image in images:
            labels = self._labels(image)
            count = int(labels.max())
            found.append(Instances(labels, np.ones(count), np.ones(count, dtype=np.int32)))
        return found


def seams(length: int, tile: int, overlap: int) -> list[float]:
    """The middles of the overlaps between neighbouring tiles along one side."""
    stride = tile - overlap
    return [k * stride + overlap / 2 for k in range(1, length // stride + 1) if k * stride + overlap < length]


def placed_nuclei(size: int, tile: int, overlap: int,
                  rng: np.random.Generator) -> tuple[list[Nucleus], list[tuple[int, int]]]:
    """Touching pairs across the seams and corners, and large nuclei on them; the pairs as index pairs.
    Along each seam they sit inside one row (or column) of tiles, away from its corners."""
    nuclei: list[Nucleus] = []
    pairs: list[tuple[int, int]] = []
    lines = seams(size, tile, overlap)
    stride = tile - overlap

    def pair(x: float, y: float, dx: float, dy: float) -> None:
        """Two round nuclei touching at (x, y), side by side along (dx, dy)."""
        ra, rb = rng.uniform(*SMALL_RADIUS, size=2)
        nuclei.append(Nucleus(x - dx * (ra - 0.5), y - dy * (ra - 0.5), ra, ra))
        nuclei.append(Nucleus(x + dx * (rb - 0.5), y + dy * (rb - 0.5), rb, rb))
        pairs.append((len(nuclei) - 2, len(nuclei) - 1))

    def large(x: float, y: float) -> None:
        radius = rng.uniform(*LARGE_RADIUS)
        nuclei.append(Nucleus(x, y, radius, radius * 0.8, rng.uniform(0, np.pi)))

    for i, seam in enumerate(lines):
        row = i % len(lines) * stride  # the tiles beside the seam where its pairs go
        for j, contact in enumerate(CONTACTS):
            pair(seam + contact, row + 100 + 70 * j, 1, 0)  # across a vertical seam
            pair(row + 100 + 70 * j, seam + contact, 0, 1)  # across a horizontal seam
        other = (i + 2) % len(lines) * stride + stride / 2
        large(seam, other)
        large(other, seam)
    for i, x in enumerate(lines):
        for j, y in enumerate(lines):
            if (i + j) % 2:
                large(x, y)
            else:
                pair(x, y, np.sqrt(0.5), np.sqrt(0.5))  # diagonally across the corner
    return nuclei, pairs


def slide_nuclei(size: int, tile: int, overlap: int, seed: int) -> tuple[list[Nucleus], list[tuple[int, int]]]:
    """The placed nuclei, then random ones that keep `MIN_GAP` from every other."""
    rng = np.random.default_rng(seed)
    nuclei, pairs = placed_nuclei(size, tile, overlap, rng)
    for candidate in random_nuclei((size, size), size * size // RANDOM_SPACING, rng, radius=SMALL_RADIUS):
        if all(np.hypot(candidate.x - n.x, candidate.y - n.y) > max(candidate.a, candidate.b) + max(n.a, n.b)
               + MIN_GAP for n in nuclei):
            nuclei.append(candidate)
    return nuclei, pairs


def score(objects: list[shapely.Polygon], truth: dict[int, shapely.Polygon],
          pairs: list[tuple[int, int]]) -> dict[str, int]:
    """Objects against the true nuclei (labels = nucleus index + 1): see the module's notes."""
    labels = list(truth)
    outlines = np.array([truth[label] for label in labels], dtype=object)
    tree = shapely.STRtree(outlines)
    matched = {label: 0 for label in labels}
    covered_by: dict[int, set[int]] = {}
    false = fused = 0
    for index, obj in enumerate(objects):
        hits = tree.query(obj, predicate="intersects")
        common = shapely.area(shapely.intersection(obj, outlines[hits])) if len(hits) else np.zeros(0)
        areas = shapely.area(outlines[hits]) if len(hits) else np.zeros(0)
        matches = [labels[h] for h, c, a in zip(hits, common, areas) if c > 0.5 * min(a, obj.area)]
        covers = {labels[h] for h, c, a in zip(hits, common, areas) if c > 0.5 * a}
        for label in matches:
            matched[label] += 1
        for label in covers:
            covered_by.setdefault(label, set()).add(index)
        false += not matches
        fused += len(covers) >= 2
    fused_placed = sum(bool(covered_by.get(a + 1, set()) & covered_by.get(b + 1, set())) for a, b in pairs)
    return dict(objects=len(objects), truth=len(labels), duplicates=sum(max(0, n - 1) for n in matched.values()),
                fused=fused, fused_placed=fused_placed, placed_pairs=len(pairs),
                missed=sum(n == 0 for n in matched.values()), false=false)


def run(model: Segmenter, merger: Merger, pixels: np.ndarray, config: JobConfig,
        truth: dict[int, shapely.Polygon], pairs: list[tuple[int, int]]) -> dict[str, Any]:
    source = ArraySource(pixels)
    result = Workflow(model, config, merger=merger).run(source, everywhere(source.width, source.height))
    objects = [from_cytomine(obj.polygon, source.full_height) for obj in result.objects]
    return dict(score(objects, truth, pairs), polygons_s=round(result.times.locate, 3),
                merge_s=round(result.times.merge, 3), wall_s=round(result.seconds, 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="slide side in pixels")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "merge.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    nuclei, pairs = slide_nuclei(args.size, args.tile, args.overlap, args.seed)
    grey, labels = render((args.size, args.size), nuclei, np.random.default_rng(args.seed))
    truth = label_polygons(labels)
    lost = len(nuclei) - len(truth)
    log.info("%d nuclei (%d placed touching pairs), %d hidden by later ones", len(nuclei), len(pairs), lost)
    encoded = np.stack([labels % 256, labels // 256, np.zeros_like(labels)], axis=-1).astype(np.uint8)
    models = {"truth": (TruthSegmenter(), encoded),
              "unet": (segmenter.load(args.model, device=args.device, batch_size=4), np.repeat(grey[..., None], 3, 2))}
    config = JobConfig(tile_size=args.tile, tile_overlap=args.overlap, batch_size=4, min_area=MIN_AREA,
                       max_area=1e5, simplify_tolerance=0)
    results: dict[str, dict[str, Any]] = {}
    for model_name, (model, pixels) in models.items():
        for merger_name, merger in (("instance", InstanceMerger()), ("sldc-semantic", SemanticTileMerger())):
            began = time.perf_counter()
            results[f"{model_name}/{merger_name}"] = run(model, merger, pixels, config, truth, pairs)
            log.info("%s/%s: %s (%.1f s)", model_name, merger_name, results[f"{model_name}/{merger_name}"],
                     time.perf_counter() - began)
    whole = dataclasses.replace(config, tile_size=args.size, tile_overlap=0)
    results["unet/one-tile"] = run(models["unet"][0], InstanceMerger(), models["unet"][1], whole, truth, pairs)

    report = dict(
        machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), torch=torch.__version__,
                     device=str(models["unet"][0].device), load_average=[round(v, 2) for v in os.getloadavg()]),
        slide=dict(size=args.size, seed=args.seed, nuclei=len(truth), placed_touching_pairs=len(pairs),
                   contacts_from_overlap_middle=CONTACTS, large_radius=LARGE_RADIUS),
        settings=dict(tile=args.tile, overlap=args.overlap, min_area=MIN_AREA, model=args.model),
        runs=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"{args.size}² px slide, {len(truth)} nuclei, {len(pairs)} touching pairs placed across seams/corners; "
          f"tiles {args.tile} px, overlap {args.overlap}")
    print(f"{'segmenter/merger':24} {'objects':>7} {'dup':>5} {'fused':>6} {'pairs':>6} {'missed':>6} {'false':>6} "
          f"{'poly s':>7} {'merge s':>7}")
    for name, r in results.items():
        print(f"{name:24} {r['objects']:7d} {r['duplicates']:5d} {r['fused']:6d} {r['fused_placed']:6d} "
              f"{r['missed']:6d} {r['false']:6d} {r['polygons_s']:7.2f} {r['merge_s']:7.2f}")
    print(f"(pairs: placed touching pairs fused into one object) results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
