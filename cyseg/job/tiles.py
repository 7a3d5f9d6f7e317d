"""Tiles -> polygons: SLDC's tile topology over a slide source, tiles fetched ahead in threads,
segmented in batches, and SLDC's locator turning each tile's mask into polygons.

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
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import sldc
from scipy import ndimage
from shapely.geometry import Polygon

from cyseg.job.source import TileSource
from cyseg.job.timing import StageTimes
from cyseg.job.tissue import TissueMask

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


@dataclass
class TilePolygons:
    """Polygons found per tile (region coordinates at the job's level) and their class labels."""

    tile_ids: list[int]
    polygons: list[list[Polygon]]
    labels: list[list[int]]


class TileSegmenter:
    """Segments the tiles of a topology in batches with a `Segmenter` and locates polygons in them."""

    def __init__(self, segmenter: sldc.SemanticSegmenter, batch_size: int, fetch_threads: int = 4,
                 min_fragment_pixels: int = 1, locator: sldc.SemanticLocator | None = None) -> None:
        self.segmenter = segmenter
        self.batch_size = batch_size
        self.fetch_threads = fetch_threads
        self.min_fragment_pixels = min_fragment_pixels
        self.locator = locator or sldc.BinaryLocator()

    def run(self, topology: sldc.TileTopology, tile_ids: Sequence[int], times: StageTimes,
            progress: Progress | None = None) -> TilePolygons:
        """Polygons of every tile of `topology`; only `tile_ids` are read and segmented."""
        found: dict[int, tuple[list[Polygon], list[int]]] = {}
        pending_locates: list[tuple[list[int], Future]] = []
        batches = same_size_batches([topology.tile(identifier) for identifier in tile_ids], self.batch_size)
        tiles = [tile for batch in batches for tile in batch]

        def fetch(tile: sldc.Tile) -> np.ndarray:
            start = time.perf_counter()
            pixels = tile.np_image
            times.add("fetch", time.perf_counter() - start)
            return pixels

        def locate(batch: list[sldc.Tile], masks: np.ndarray) -> list[list[tuple[Polygon, int]]]:
            start = time.perf_counter()
            located = [self.locator.locate(remove_specks(mask, self.min_fragment_pixels), offset=tile.offset)
                       for tile, mask in zip(batch, masks)]
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
                masks = np.asarray(self.segmenter.segment_batch(np.stack(images)))
                times.add("inference", time.perf_counter() - began)
                pending_locates.append(([t.identifier for t in batch], locators.submit(locate, batch, masks)))
                done += len(batch)
                if progress:
                    progress(done, len(tiles))
            for identifiers, future in pending_locates:
                for identifier, located in zip(identifiers, future.result()):
                    found[identifier] = ([p for p, _ in located], [label for _, label in located])
        all_ids = list(range(1, topology.tile_count + 1))
        return TilePolygons(all_ids, [found.get(i, ([], []))[0] for i in all_ids],
                            [found.get(i, ([], []))[1] for i in all_ids])
