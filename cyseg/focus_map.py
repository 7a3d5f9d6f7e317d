"""Focus maps of slides and images: window scores on a grid, a heat map over the thumbnail, and
the out-of-focus regions as polygons.

Scores follow `segmenter.focus`: higher = blurrier, blurry = score > threshold. Polygons are in
full-resolution (level 0) pixel coordinates with the origin top-left (x = column, y = row); the
Cytomine job converts them and uploads them with its own term.

Slides (any format OpenSlide opens) are read at level 0 in large regions, a whole number of
windows each, by a background thread that stays a few regions ahead of the scoring, so the
map is made as fast as the reader delivers pixels. The content rule uses the whole slide's
intensity range (from the thumbnail), so empty glass is recognised alike across the slide,
and regions whose part of the thumbnail shows no content are not read at all.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import openslide
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from PIL import Image
from rasterio import features
from scipy import ndimage
import shapely
from shapely.geometry import Polygon, shape
from tqdm import tqdm

from cyseg.polygons import feature_collection, write_geojson
from segmenter.datasets import read_image
from segmenter.focus import FocusClassifier, FocusGrid, focus_input, grid_shape, input_stats

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 1024
#: Windows per side of one slide read (8 windows of 250 px: 2002 px regions).
REGION_WINDOWS = 8
#: Regions read ahead of the one being scored.
PREFETCH = 2
T = TypeVar("T")
U = TypeVar("U")


@dataclass
class FocusMap:
    """The focus grid of one input (in level-0 pixels) and an RGB uint8 thumbnail for display."""

    name: str
    kind: str  # "slide" or "image"
    grid: FocusGrid
    thumbnail: np.ndarray

    @property
    def blurry_fraction(self) -> float:
        """Share of the windows with content that are blurry."""
        return float(self.grid.blurry_windows.sum() / max(1, self.grid.content.sum()))

    def blurry_regions(self) -> list[tuple[Polygon, dict[str, Any]]]:
        """(polygon, properties) of each connected blurry area (cells of blurry windows, see
        `FocusGrid.edges`), in level-0 pixels with the origin top-left; properties: mean score,
        number of windows, area."""
        labels, count = ndimage.label(self.grid.blurry_windows)
        if count == 0:
            return []
        index = np.arange(1, count + 1)
        means = ndimage.mean(self.grid.scores, labels, index)
        cells = ndimage.sum(np.ones_like(labels), labels, index)
        y_edges, x_edges = self.grid.edges()

        def to_pixels(xy: np.ndarray) -> np.ndarray:  # cell-boundary indices → pixels
            return np.column_stack([np.interp(xy[:, 0], np.arange(len(x_edges)), x_edges),
                                    np.interp(xy[:, 1], np.arange(len(y_edges)), y_edges)])

        regions = []
        for geometry, value in features.shapes(labels.astype(np.int32), mask=labels > 0):
            polygon = shapely.transform(shape(geometry), to_pixels)
            i = int(value) - 1
            regions.append((polygon, dict(score=round(float(means[i]), 3), windows=int(cells[i]),
                                          area_px=round(polygon.area))))
        return regions

    def to_json(self) -> dict[str, Any]:
        """The input's score and decision and the per-window grid (null = no content)."""
        grid = self.grid
        scores = np.where(grid.content, np.round(grid.scores, 3), np.nan)
        y_starts, x_starts = grid.starts()
        return dict(score=_number(grid.score), blurry=grid.blurry, threshold=round(grid.threshold, 4),
                    kind=self.kind, size=[grid.width, grid.height],
                    grid=dict(window=grid.window, stride=grid.stride, rows=int(scores.shape[0]),
                              cols=int(scores.shape[1]), x_starts=x_starts.tolist(), y_starts=y_starts.tolist(),
                              blurry_fraction=round(self.blurry_fraction, 4),
                              scores=[[_number(v) for v in row] for row in scores]))


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def is_slide(path: Path) -> bool:
    """Whether OpenSlide reads the file (plain PNG/JPEG/untiled TIFF images are not slides)."""
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    return openslide.OpenSlide.detect_format(str(path)) is not None


def display_rgb(image: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """An RGB uint8 view of any image (stretched between its 1st and 99.8th percentiles), at most
    `size` px on its longer side."""
    x = focus_input(image)
    stats = input_stats(x)
    x = np.clip((x.astype(np.float32) - stats.low) / stats.range, 0, 1)
    rgb = Image.fromarray((np.broadcast_to(x, (*x.shape[:2], 3)) * 255).astype(np.uint8))
    rgb.thumbnail((size, size))
    return np.asarray(rgb)


def image_focus_map(image: np.ndarray, classifier: FocusClassifier, stride: int | None = None,
                    name: str = "image") -> FocusMap:
    """The focus map of an in-memory image."""
    grid = classifier.grid(image, stride)
    return FocusMap(name, "image", grid, display_rgb(image))


def prefetched(read: Callable[[T], U], items: Iterable[T], depth: int = PREFETCH) -> Iterator[tuple[T, U]]:
    """(item, read(item)) in order, with `read` running in a background thread up to `depth`
    items ahead."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(read, item)))
            if len(pending) > depth:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _rgb(region: Image.Image) -> np.ndarray:
    """An OpenSlide RGBA region as RGB, transparent pixels (no data) as white."""
    rgba = np.asarray(region)
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def slide_focus_map(path: Path, classifier: FocusClassifier, stride: int | None = None,
                    progress: bool = True) -> FocusMap:
    """The focus map of a slide at full resolution."""
    with openslide.OpenSlide(str(path)) as slide:
        width, height = slide.dimensions
        thumbnail = np.asarray(slide.get_thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE)).convert("RGB"))
        stats = input_stats(thumbnail, classifier.percentiles)
        stride = stride or classifier.default_stride
        window = classifier.patch_size
        rows, cols = grid_shape(height, width, window, stride)
        scores = np.full((rows, cols), np.nan, dtype=np.float32)
        content = np.zeros((rows, cols), dtype=bool)
        scale = thumbnail.shape[1] / width, thumbnail.shape[0] / height
        seconds = dict(read=0.0, score=0.0)

        def box_of(block: tuple[int, int]) -> tuple[int, int, int, int]:
            """Level-0 (x, y, w, h) of the windows of a block, clipped to the slide."""
            x, y = block[1] * stride, block[0] * stride
            w = (min(cols - block[1], REGION_WINDOWS) - 1) * stride + window
            h = (min(rows - block[0], REGION_WINDOWS) - 1) * stride + window
            return x, y, min(w, width - x), min(h, height - y)

        def has_content(block: tuple[int, int]) -> bool:
            x, y, w, h = box_of(block)
            seen = thumbnail[int(y * scale[1]):math.ceil((y + h) * scale[1]),
                             int(x * scale[0]):math.ceil((x + w) * scale[0])]
            return seen.size > 0 and np.ptp(seen) > classifier.content.min_contrast * stats.range

        def read(block: tuple[int, int]) -> np.ndarray:
            started = time.perf_counter()
            x, y, w, h = box_of(block)
            region = _rgb(slide.read_region((x, y), 0, (w, h)))
            seconds["read"] += time.perf_counter() - started
            return region

        blocks = [(r, c) for r in range(0, rows, REGION_WINDOWS) for c in range(0, cols, REGION_WINDOWS)]
        kept = [block for block in blocks if has_content(block)]
        log.info("%s: %d×%d px, %d×%d windows of %d px (stride %d); reading %d of %d regions",
                 path.name, width, height, rows, cols, window, stride, len(kept), len(blocks))
        pixels = 0
        for (r, c), region in tqdm(prefetched(read, kept), total=len(kept), desc=f"focus {path.name}",
                                   unit="region", disable=not progress, leave=False):
            started = time.perf_counter()
            part = classifier.grid(region, stride, (stats.low, stats.high))
            n_rows, n_cols = part.scores.shape
            scores[r:r + n_rows, c:c + n_cols] = part.scores
            content[r:r + n_rows, c:c + n_cols] = part.content
            seconds["score"] += time.perf_counter() - started
            pixels += region.shape[0] * region.shape[1]
    log.info("%s: read %.1f Mpx in %.2f s (background thread), scored them in %.2f s", path.name,
             pixels / 1e6, seconds["read"], seconds["score"])
    grid = FocusGrid(scores, content, window, stride, classifier.threshold, height, width)
    return FocusMap(path.name, "slide", grid, thumbnail)


def focus_map(path: Path, classifier: FocusClassifier, stride: int | None = None,
              progress: bool = True) -> FocusMap:
    """The focus map of a slide or an image file."""
    if is_slide(path):
        return slide_focus_map(path, classifier, stride, progress)
    return image_focus_map(read_image(path), classifier, stride, name=path.name)


def render_heatmap(focus: FocusMap, path: Path) -> Path:
    """The thumbnail with the window scores over it (green = sharp, red = blurry, the colour bar
    centred on the threshold; windows without content left clear) and blurry regions outlined."""
    grid, thumbnail = focus.grid, focus.thumbnail
    th, tw = thumbnail.shape[:2]
    sx, sy = tw / grid.width, th / grid.height
    y_edges, x_edges = grid.edges()
    threshold = grid.threshold
    top = max(threshold, float(grid.scores[grid.content].max())) if grid.content.any() else threshold
    norm = TwoSlopeNorm(vcenter=threshold, vmin=min(0.0, threshold - 1), vmax=max(top, threshold + 1))
    fig = Figure(figsize=(min(12, 2 + tw / 100), min(10, 0.8 + th / 100)))
    ax = fig.add_subplot()
    ax.imshow(thumbnail, interpolation="antialiased")
    shown = ax.pcolormesh(x_edges * sx, y_edges * sy, np.ma.masked_where(~grid.content, grid.scores),
                          cmap="RdYlGn_r", norm=norm, alpha=0.5)
    for polygon, _ in focus.blurry_regions():
        for ring in [polygon.exterior, *polygon.interiors]:
            xs, ys = ring.xy
            ax.plot(np.asarray(xs) * sx, np.asarray(ys) * sy, color="black", linewidth=1.2)
    ax.set_xlim(0, tw)
    ax.set_ylim(th, 0)
    ax.set_axis_off()
    verdict = ("no content to judge" if math.isnan(grid.score)
               else f"score {grid.score:.2f}, {'blurry' if grid.blurry else 'sharp'}")
    ax.set_title(f"{focus.name}: {verdict}; {focus.blurry_fraction:.0%} of windows with content blurry",
                 fontsize=9)
    bar = fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("focus score (est. defocus radius, px): higher = blurrier", fontsize=8)
    bar.ax.axhline(threshold, color="black", linewidth=2)
    bar.ax.text(-0.3, threshold, "threshold", rotation=90, ha="right", va="center", fontsize=7,
                transform=bar.ax.get_yaxis_transform())
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def write_focus_outputs(focus: FocusMap, out: Path) -> dict[str, Path]:
    """`<stem>.focus.png` (heat map) and `<stem>.blurry.geojson` (blurry regions) in `out`."""
    stem = Path(focus.name).stem
    return dict(heatmap=render_heatmap(focus, out / f"{stem}.focus.png"),
                regions=write_geojson(out / f"{stem}.blurry.geojson",
                                      feature_collection(focus.blurry_regions())))
