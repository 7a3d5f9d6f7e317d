"""A synthetic whole-slide image of nuclei with known positions, for the demo, tests and benchmarks.

The slide is a tiled pyramidal TIFF (OpenSlide's "generic tiled TIFF": one tiled page per level,
each half the size of the previous), grey rendered as RGB, bright nuclei on a dark background.
The layout is asymmetric so that a flipped or mirrored result cannot match it: a dense cluster in
the top-left corner, sparse nuclei elsewhere, and an empty region on the right (no tissue).
It is rendered strip by strip, so memory stays at a few strips plus the lower levels.
The ground truth (centres in full-resolution pixels, origin top-left) is saved next to the slide.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile

from cyseg.synthetic import Nucleus, random_nuclei, render

log = logging.getLogger(__name__)

TILE = 256
RENDER_MARGIN = 32  # pixels rendered around each strip so blur and nuclei crossing strip edges are continuous
PIXEL_SIZE_UM = 0.5
LAYOUT_BLOCK = 512
DENSE_SPACING = 900  # pixels² per nucleus in the cluster
SPARSE_SPACING = 9000


@dataclass(frozen=True)
class DemoSlide:
    """A written synthetic slide and its ground truth."""

    path: Path
    truth_path: Path
    width: int
    height: int
    nuclei: list[Nucleus]


def truth_path_for(slide_path: Path) -> Path:
    return slide_path.with_name(slide_path.stem + ".truth.json")


def _fill(box: tuple[int, int, int, int], spacing: float, rng: np.random.Generator) -> list[Nucleus]:
    """Nuclei in the box (left, top, right, bottom), about one per `spacing` pixels², placed block by
    block (`random_nuclei` keeps them off block edges, so blocks never overlap and placement stays
    linear in the area)."""
    left, top, right, bottom = box
    nuclei: list[Nucleus] = []
    for y in range(top, bottom, LAYOUT_BLOCK):
        for x in range(left, right, LAYOUT_BLOCK):
            h, w = min(LAYOUT_BLOCK, bottom - y), min(LAYOUT_BLOCK, right - x)
            if min(h, w) >= 64:
                nuclei += [Nucleus(n.x + x, n.y + y, n.a, n.b, n.angle)
                           for n in random_nuclei((h, w), int(h * w / spacing), rng)]
    return nuclei


def layout(width: int, height: int, seed: int, density: float = 1.0, sparse_density: float = 1.0) -> list[Nucleus]:
    """Nuclei of the asymmetric layout: a dense cluster in the top-left third of each side, sparse
    nuclei in the rest of the left two thirds, nothing in the right third. `density` scales the counts,
    `sparse_density` those of the sparse part once more."""
    rng = np.random.default_rng(seed)
    third_w, third_h = width // 3, height // 3
    dense, sparse = DENSE_SPACING / density, SPARSE_SPACING / (density * sparse_density)
    return (_fill((0, 0, third_w, third_h), dense, rng) + _fill((third_w, 0, 2 * third_w, third_h), sparse, rng)
            + _fill((0, third_h, 2 * third_w, height), sparse, rng))


def _strips(width: int, height: int, nuclei: list[Nucleus], seed: int) -> Iterator[np.ndarray]:
    """Grey uint8 strips of TILE rows (the last one shorter), top to bottom."""
    for top in range(0, height, TILE):
        bottom = min(height, top + TILE)
        r0, r1 = max(0, top - RENDER_MARGIN), min(height, bottom + RENDER_MARGIN)
        inside = [Nucleus(n.x, n.y - r0, n.a, n.b, n.angle) for n in nuclei
                  if r0 - n.a - n.b <= n.y <= r1 + n.a + n.b]
        grey, _ = render((r1 - r0, width), inside, np.random.default_rng([seed, top]))
        yield grey[top - r0:bottom - r0]


def _tiles(strip: np.ndarray) -> Iterator[np.ndarray]:
    """The TILE×TILE RGB tiles of a strip, left to right, padded with black at the edges."""
    rows, width = strip.shape
    for left in range(0, width, TILE):
        tile = np.zeros((TILE, TILE, 3), dtype=np.uint8)
        block = strip[:, left:left + TILE]
        tile[:rows, :block.shape[1]] = block[..., None]
        yield tile


def _halve(grey: np.ndarray) -> np.ndarray:
    """2×2 mean downsampling (odd trailing row/column dropped)."""
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    return grey[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)


def write_demo_slide(path: str | Path, width: int = 4096, height: int = 3072, seed: int = 0,
                     density: float = 1.0, levels: int | None = None, sparse_density: float = 1.0) -> DemoSlide:
    """Write the slide at `path` (a .tif) and its ground truth; return both (`density`, `sparse_density`
    as for `layout`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nuclei = layout(width, height, seed, density, sparse_density)
    levels = levels or max(1, int(np.log2(max(width, height) / TILE)) + 1)
    pixels_per_cm = 1e4 / PIXEL_SIZE_UM
    options = dict(tile=(TILE, TILE), photometric="rgb", compression="zlib", resolutionunit="CENTIMETER")
    half_strips: list[np.ndarray] = []

    def level0_tiles() -> Iterator[np.ndarray]:
        for strip in _strips(width, height, nuclei, seed):
            half_strips.append(_halve(strip))
            yield from _tiles(strip)

    with tifffile.TiffWriter(path) as tiff:
        tiff.write(level0_tiles(), shape=(height, width, 3), dtype=np.uint8,
                   resolution=(pixels_per_cm, pixels_per_cm), subfiletype=0, **options)
        level = np.concatenate(half_strips)
        for index in range(1, levels):
            step = 2 ** index
            rgb = np.repeat(level[..., None], 3, axis=2)
            tiff.write(rgb, resolution=(pixels_per_cm / step, pixels_per_cm / step), subfiletype=1, **options)
            level = _halve(level)
    truth = truth_path_for(path)
    truth.write_text(json.dumps({"width": width, "height": height, "seed": seed,
                                 "coordinates": "full-resolution pixels, origin top-left (x = column, y = row)",
                                 "nuclei": [asdict(n) for n in nuclei]}))
    log.info("wrote %s (%dx%d, %d nuclei, %d levels)", path, width, height, len(nuclei), levels)
    return DemoSlide(path, truth, width, height, nuclei)


def read_truth(slide_path: str | Path) -> list[Nucleus]:
    """The nuclei saved next to a slide written by `write_demo_slide`."""
    data = json.loads(truth_path_for(Path(slide_path)).read_text())
    return [Nucleus(**n) for n in data["nuclei"]]
