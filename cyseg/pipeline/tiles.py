"""Tiles -> polygons: SLDC's tile topology over a slide source, tiles fetched ahead in threads,
segmented in batches, and each tile's result turned into polygons: for a segmenter that returns
instances, one polygon per instance with its score and class, flagged when it touches an inner edge
of the tile (an edge that is not the region's border, so the object may be cut); otherwise SLDC's
locator turns each tile's class mask into polygons.

Tiles come from SLDC's regular `TileTopology`: tiles at the right and bottom borders are cut to
the region, so no pixel is segmented more often than the overlap requires. A batch must stack into
one array (SLDC's own batching fails on mixed sizes with numpy 2), so tiles are segmented grouped
by size: the full tiles first, then each kind of border tile. Tiles outside the tissue are not read
nor segmented; they count as tiles without objects, so the merger still sees the whole topology.

Reading (threads), inference (the main thread; PyTorch releases the GIL) and locating (one
worker thread) overlap, so the slowest stage sets the pace.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import sldc
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from cyseg.pipeline.source import TileSource
from cyseg.pipeline.timing import StageTimes
from cyseg.pipeline.tissue import TissueMask
from cyseg.polygons import label_polygons
from segmenter.base import Instances

Progress = Callable[[int, int], None]  # (tiles done, tiles to do)


class LevelImage(sldc.Image):
    """A slide at the job's zoom level, as an SLDC image (pixels come tile by tile from `source`)."""

    def __init__(self, source: TileSource) -> None:
        self.source = source

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def channels(self) -> int:
        return 3

    @property
    def np_image(self) -> np.ndarray:
        raise NotImplementedError("a whole slide is never loaded at once; read it tile by tile")


class SourceTile(sldc.Tile):
    """A tile whose pixels are read from its base image's source (one read per tile)."""

    @property
    def np_image(self) -> np.ndarray:
        x, y = self.abs_offset
        return self.base_image.source.read(x, y, self.width, self.height)


class SourceTileBuilder(sldc.TileBuilder):
    def build(self, image: sldc.Image, offset: tuple[int, int], width: int, height: int,
              polygon_mask: Polygon | None = None) -> SourceTile:
        return SourceTile(image, offset, width, height, polygon_mask=polygon_mask)


def region_image(source: TileSource, roi: Polygon | None = None) -> sldc.Image:
    """The part of the slide to segment: the whole slide, or the bounding window of `roi` (a polygon in
    level coordinates, clipped to the slide)."""
    image = LevelImage(source)
    if roi is None:
        return image
    return image.window_from_polygon(roi.intersection(Polygon.from_bounds(0, 0, image.width, image.height)))


def region_offset(region: sldc.Image) -> tuple[int, int]:
    """Where the region starts in the level image."""
    return region.abs_offset if isinstance(region, sldc.ImageWindow) else (0, 0)


def tile_topology(region: sldc.Image, tile_size: int, overlap: int) -> sldc.TileTopology:
    """Tiles of at most `tile_size` covering `region`, neighbours sharing `overlap` pixels."""
    return region.tile_topology(SourceTileBuilder(), tile_size, tile_size, overlap)


def same_size_batches(tiles: Sequence[sldc.Tile], batch_size: int) -> list[list[sldc.Tile]]:
    """Batches of at most `batch_size` tiles of one size, the largest tiles first, each size in
    topology order."""
    ordered = sorted(tiles, key=lambda t: (-t.width * t.height, t.height, t.width, t.identifier))
    batches: list[list[sldc.Tile]] = []
    for tile in ordered:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (last[0].width, last[0].height) == (tile.width, tile.height):
            last.append(tile)
        else:
            batches.append([tile])
    return batches


def tile_pixels(topology: sldc.TileTopology, tile_ids: Sequence[int]) -> int:
    """How many pixels these tiles hold (overlaps counted once per tile)."""
    return sum(tile.width * tile.height for tile in (topology.tile(i) for i in tile_ids))


def tissue_tiles(topology: sldc.TileTopology, tissue: TissueMask) -> list[int]:
    """Identifiers of the tiles that contain tissue, in topology order."""
    kept = []
    for identifier in range(1, topology.tile_count + 1):
        tile = topology.tile(identifier)
        if tissue.covers(*tile.abs_offset, tile.width, tile.height):
            kept.append(identifier)
    return kept


def remove_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """The mask without connected components (4-connectivity, any class) smaller than `min_pixels`:
    isolated noise pixels would otherwise become thousands of polygons to locate and merge."""
    if min_pixels <= 1:
        return mask
    components, count = ndimage.label(mask > 0)
    if count == 0:
        return mask
    small = np.bincount(components.ravel()) < min_pixels
    small[0] = False
    return np.where(small[components], 0, mask)


def region_size(topology: sldc.TileTopology) -> tuple[int, int]:
    """Width and height of the region a topology covers (its bottom-right tile ends there)."""
    last = topology.tile(topology.tile_count)
    return last.offset_x + last.width, last.offset_y + last.height


def tile_box(tile: sldc.Tile) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a tile in region coordinates."""
    return tile.offset_x, tile.offset_y, tile.offset_x + tile.width, tile.offset_y + tile.height


def inner_edges(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[bool, bool, bool, bool]:
    """Which sides (left, top, right, bottom) of a tile's box lie inside a region of `size`, i.e. are
    shared with a neighbouring tile rather than on the region's border."""
    left, top, right, bottom = box
    return left > 0, top > 0, right < size[0], bottom < size[1]


def polygon_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The valid, non-empty polygons a geometry is made of."""
    if geometry.is_empty:
        return []
    if not geometry.is_valid:
        geometry = geometry.buffer(0)
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    return [part for part in getattr(geometry, "geoms", []) if isinstance(part, Polygon) and not part.is_empty]


@dataclass
class TileObjects:
    """The objects of one tile (region coordinates): polygons and class labels; from an instance
    segmenter also each one's score and whether it touches an inner edge of the tile, and the
    segmenter's `extra` for the tile."""

    polygons: list[Polygon] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    cut: list[bool] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def instance_objects(found: Instances, offset: tuple[int, int], inner: tuple[bool, bool, bool, bool],
                     min_pixels: int = 1) -> TileObjects:
    """One polygon per instance of a tile at `offset` (its largest part, valid), with its class and
    score; instances under `min_pixels` are dropped. `inner` says which sides (left, top, right,
    bottom) are inner edges: an instance with a pixel on one of them is flagged as cut."""
    labels = np.asarray(found.labels)
    if min_pixels > 1:
        small = np.bincount(labels.ravel(), minlength=len(found) + 1) < min_pixels
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    edges = [side for side, is_inner in zip((labels[:, 0], labels[0, :], labels[:, -1], labels[-1, :]), inner)
             if is_inner]
    on_edge = set(np.unique(np.concatenate(edges)).tolist()) if edges else set()
    objects = TileObjects(extra=dict(found.extra))
    for label, polygon in label_polygons(labels, offset).items():
        parts = polygon_parts(polygon)
        if not parts:
            continue
        objects.polygons.append(max(parts, key=lambda p: p.area))
        objects.labels.append(int(found.classes[label - 1]))
        objects.scores.append(float(found.scores[label - 1]))
        objects.cut.append(label in on_edge)
    return objects


def mask_objects(mask: np.ndarray, offset: tuple[int, int], locator: sldc.SemanticLocator,
                 min_pixels: int = 1) -> TileObjects:
    """The polygons `locator` finds in a tile's class mask, with their class labels."""
    located = locator.locate(remove_specks(mask, min_pixels), offset=offset)
    return TileObjects([polygon for polygon, _ in located], [int(label) for _, label in located])


@dataclass
class TilePolygons:
    """The objects found per tile of a topology (region coordinates at the job's level): polygons and
    class labels, and from an instance segmenter (else None) each object's score and whether it
    touches an inner edge of its tile (so may be cut); `extras` holds the segmenter's `Instances.extra`
    per segmented tile id (e.g. a focus-gated model's decision)."""

    tile_ids: list[int]
    polygons: list[list[Polygon]]
    labels: list[list[int]]
    scores: list[list[float]] | None = None
    cut: list[list[bool]] | None = None
    extras: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of_tiles(cls, tile_ids: list[int], found: dict[int, TileObjects], instances: bool) -> "TilePolygons":
        """Every tile's objects (tiles missing from `found` have none); scores and cut flags only for instances."""
        per_tile = [found.get(i, TileObjects()) for i in tile_ids]
        return cls(tile_ids, [t.polygons for t in per_tile], [t.labels for t in per_tile],
                   [t.scores for t in per_tile] if instances else None,
                   [t.cut for t in per_tile] if instances else None,
                   {i: t.extra for i, t in found.items() if t.extra})


class TileSegmenter:
    """Segments the tiles of a topology in batches and turns each tile's result into polygons: with
    `instances`, the segmenter's `instances_batch` (a `segmenter.Segmenter` that returns instances),
    else its `segment_batch` class masks and SLDC's `locator`."""

    def __init__(self, segmenter: sldc.SemanticSegmenter, batch_size: int, fetch_threads: int = 4,
                 min_fragment_pixels: int = 1, locator: sldc.SemanticLocator | None = None,
                 instances: bool = False) -> None:
        self.segmenter = segmenter
        self.batch_size = batch_size
        self.fetch_threads = fetch_threads
        self.min_fragment_pixels = min_fragment_pixels
        self.locator = locator or sldc.BinaryLocator()
        self.instances = instances

    def _infer(self, images: np.ndarray) -> list[Any]:
        if self.instances:
            return list(self.segmenter.instances_batch(images))
        return list(np.asarray(self.segmenter.segment_batch(images)))

    def _objects(self, tile: sldc.Tile, output: Any, size: tuple[int, int]) -> TileObjects:
        if self.instances:
            return instance_objects(output, tile.offset, inner_edges(tile_box(tile), size), self.min_fragment_pixels)
        return mask_objects(output, tile.offset, self.locator, self.min_fragment_pixels)

    def run(self, topology: sldc.TileTopology, tile_ids: Sequence[int], times: StageTimes,
            progress: Progress | None = None) -> TilePolygons:
        """The objects of every tile of `topology`; only `tile_ids` are read and segmented."""
        found: dict[int, TileObjects] = {}
        pending_locates: list[tuple[list[int], Future]] = []
        batches = same_size_batches([topology.tile(identifier) for identifier in tile_ids], self.batch_size)
        tiles = [tile for batch in batches for tile in batch]
        size = region_size(topology)

        def fetch(tile: sldc.Tile) -> np.ndarray:
            start = time.perf_counter()
            pixels = tile.np_image
            times.add("fetch", time.perf_counter() - start)
            return pixels

        def locate(batch: list[sldc.Tile], outputs: list[Any]) -> list[TileObjects]:
            start = time.perf_counter()
            located = [self._objects(tile, output, size) for tile, output in zip(batch, outputs)]
            times.add("locate", time.perf_counter() - start)
            return located

        with ThreadPoolExecutor(self.fetch_threads, thread_name_prefix="cyseg-fetch") as readers, \
                ThreadPoolExecutor(1, thread_name_prefix="cyseg-locate") as locators:
            ahead: deque[Future] = deque()
            upcoming = iter(tiles)
            lookahead = self.batch_size + 2 * self.fetch_threads

            def refill() -> None:
                for tile in upcoming:
                    ahead.append(readers.submit(fetch, tile))
                    if len(ahead) >= lookahead:
                        break

            refill()
            done = 0
            for batch in batches:
                waited = time.perf_counter()
                images = [ahead.popleft().result() for _ in batch]
                times.add("fetch_wait", time.perf_counter() - waited)
                refill()
                began = time.perf_counter()
                outputs = self._infer(np.stack(images))
                times.add("inference", time.perf_counter() - began)
                pending_locates.append(([t.identifier for t in batch], locators.submit(locate, batch, outputs)))
                done += len(batch)
                if progress:
                    progress(done, len(tiles))
            for identifiers, future in pending_locates:
                found.update(zip(identifiers, future.result()))
        return TilePolygons.of_tiles(list(range(1, topology.tile_count + 1)), found, self.instances)
