"""One region of one image through the SLDC steps: tiles -> segmentation -> polygons -> merged objects.

The merger follows the segmenter: `InstanceMerger` for one that returns instances
(`segmenter.Segmenter.returns_instances`), SLDC's semantic merger for one that returns class masks
only; a caller (e.g. a benchmark) may choose either explicitly. A focus-gated segmenter's decision
per tile (`Instances.extra["focus"]`) is kept with the region's result.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import sldc
from shapely import affinity, unary_union
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from cyseg.coordinates import to_cytomine
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.merge import InstanceMerger, Merger, SemanticTileMerger
from cyseg.pipeline.objects import DetectedObject, ObjectFilter, finalize
from cyseg.pipeline.source import TileSource
from cyseg.pipeline.tiles import (Progress, TilePolygons, TileSegmenter, polygon_parts, region_image, region_offset,
                             tile_box, tile_pixels, tile_topology, tissue_tiles)
from cyseg.pipeline.timing import StageTimes
from cyseg.pipeline.tissue import TissueMask

log = logging.getLogger(__name__)

FETCH_THREADS = 4
FRAGMENT_SHARE = 0.25  # tile fragments under this share of the minimum area are noise, not cut objects


@dataclass(frozen=True)
class TileFocus:
    """Where a focus-gated segmenter sent one tile: the tile's box (left, top, right, bottom) in
    full-resolution image coordinates (origin top-left), its focus score (higher = blurrier; None for
    a tile without content) and the model that ran ("sharp" or "blurry")."""

    box: tuple[int, int, int, int]
    score: float | None
    model: str

    @property
    def blurry(self) -> bool:
        return self.model == "blurry"


@dataclass
class RegionResult:
    objects: list[DetectedObject]
    tiles: int
    tiles_with_tissue: int
    pixels: int  # level pixels in the region
    segmented_pixels: int  # pixels of the tiles segmented (overlaps count as often as they are segmented)
    seconds: float
    times: StageTimes
    focus: list[TileFocus] = field(default_factory=list)  # per segmented tile; empty unless focus-gated


def tile_focus(found: TilePolygons, topology: sldc.TileTopology, source: TileSource,
               offset: tuple[int, int]) -> list[TileFocus]:
    """The focus decision of every segmented tile that has one, in tile order (`offset`: where the
    region starts in the level image)."""
    decisions = []
    for identifier, extra in sorted(found.extras.items()):
        if "focus" not in extra:
            continue
        left, top, right, bottom = tile_box(topology.tile(identifier))
        (x, y), f = offset, source.factor
        full = ((left + x) * f, (top + y) * f, min((right + x) * f, source.full_width),
                min((bottom + y) * f, source.full_height))
        decisions.append(TileFocus(full, extra["focus"]["score"], extra["focus"]["model"]))
    return decisions


def blurry_regions(decisions: Sequence[TileFocus], image_height: int, roi: BaseGeometry | None = None,
                   tolerance: float = 0.0) -> list[DetectedObject]:
    """The union of the tiles the blurry model segmented, one object per connected part (no class, no
    score), in Cytomine coordinates, clipped to `roi` (Cytomine coordinates) and simplified by `tolerance`."""
    union = unary_union([box(*d.box) for d in decisions if d.blurry])
    if union.is_empty:
        return []
    area = to_cytomine(union, image_height)
    if roi is not None:
        area = area.intersection(roi)
    if tolerance:
        area = area.simplify(tolerance, preserve_topology=True)
    return [DetectedObject(part, part.area, 0) for part in polygon_parts(area)]


def default_merger(segmenter: sldc.SemanticSegmenter) -> Merger:
    """The instance merger for a segmenter that returns instances, SLDC's semantic merger otherwise."""
    return InstanceMerger() if getattr(segmenter, "returns_instances", False) else SemanticTileMerger()


class Workflow:
    """Segments regions of slides with a segmenter, as a job's parameters say; `merger` overrides
    `default_merger(segmenter)`."""

    def __init__(self, segmenter: sldc.SemanticSegmenter, config: JobConfig, merger: Merger | None = None,
                 fetch_threads: int = FETCH_THREADS) -> None:
        self.config = config
        self.merger = merger or default_merger(segmenter)
        if self.merger.needs_instances and not getattr(segmenter, "returns_instances", False):
            raise ValueError(f"{type(self.merger).__name__} needs a segmenter that returns instances, "
                             f"and {type(segmenter).__name__} does not")
        factor = 2 ** config.zoom_level
        self.tiles = TileSegmenter(segmenter, config.batch_size, fetch_threads,
                                   min_fragment_pixels=int(FRAGMENT_SHARE * config.min_area / factor ** 2),
                                   instances=self.merger.needs_instances)
        self.rules = ObjectFilter(config.min_area, config.max_area, config.simplify_tolerance)

    def run(self, source: TileSource, tissue: TissueMask, roi: BaseGeometry | None = None,
            progress: Progress | None = None) -> RegionResult:
        """The objects of the whole image, or of the region of interest `roi` (full-resolution image
        coordinates, origin top-left), in Cytomine coordinates."""
        began = time.perf_counter()
        times = StageTimes()
        level_roi = None if roi is None else affinity.scale(roi, 1 / source.factor, 1 / source.factor, origin=(0, 0))
        if level_roi is not None and not level_roi.intersects(box(0, 0, source.width, source.height)):
            log.warning("%s: the region of interest lies outside the image", source.description)
            return RegionResult([], 0, 0, 0, 0, time.perf_counter() - began, times)
        region = region_image(source, level_roi)
        topology = tile_topology(region, self.config.tile_size, self.config.tile_overlap)
        kept = tissue_tiles(topology, tissue)
        log.info("%s: %d tiles, %d with tissue", source.description, topology.tile_count, len(kept))
        found = self.tiles.run(topology, kept, times, progress)
        start = time.perf_counter()
        offset = region_offset(region)
        objects = finalize(self.merger.merge(found, topology), offset=offset, factor=source.factor,
                           image_height=source.full_height, rules=self.rules, roi=roi)
        times.add("merge", time.perf_counter() - start)
        return RegionResult(objects, topology.tile_count, len(kept), region.width * region.height,
                            tile_pixels(topology, kept), time.perf_counter() - began, times,
                            tile_focus(found, topology, source, offset))
