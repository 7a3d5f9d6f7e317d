"""Throughput of the job's workflow against the plain sldc-cytomine path, on one slide with one model.

Every variant segments the whole slide served by a fresh embedded server and uploads what it finds:

- `cyseg-window`, `cyseg-local`: our workflow (tiles fetched ahead in threads, batched inference,
  SLDC locator and merger) reading one window per tile over HTTP, or the slide file directly;
  `-tissue` variants also skip the tiles without tissue (the job's default);
- `sldc-default`: SLDC's workflow as sldc-cytomine users write it: `CytomineTileBuilder` with its
  default tile class (IIP, each tile rebuilt from 256-pixel sub-tiles), one tile at a time, batch
  size 1, then `AnnotationCollection.save()`.

Plus the model alone (`segment_batch` on full batches of tiles already in memory, measured between
the runs), the ceiling for the others. Throughputs are slide megapixels per second of
wall time; `speedup_vs_sldc_default_load_adjusted` compares the shares of the model's throughput
measured next to each run (fairer when other load on the machine varies); `pipeline_efficiency` counts the pixels the model actually processed instead (tiles
overlap, and skipped tiles are not processed); stage times are summed over threads.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sldc
import torch
from cytomine import Cytomine
from cytomine.models import Annotation, AnnotationCollection, ImageInstance
from sldc_cytomine import CytomineSlide, CytomineTileBuilder

import segmenter
from cyseg.coordinates import to_cytomine
from cyseg.cytomine.connection import harden
from cyseg.cytomine.source import WindowSource
from cyseg.job.upload import ImageUploader
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.models import forward_batch_size
from cyseg.pipeline.source import OpenSlideSource, TileSource
from cyseg.pipeline.tiles import tile_pixels
from cyseg.pipeline.timing import StageTimes
from cyseg.pipeline.tissue import THUMBNAIL_SIZE, detect_tissue, everywhere
from cyseg.pipeline.workflow import Workflow
from cyseg.server.runner import Endpoint, LocalServer

log = logging.getLogger(__name__)

INFERENCE_TILES = 16
# our variants: name -> (read the slide file directly, skip tiles without tissue)
CYSEG_VARIANTS = {"cyseg-window": (False, False), "cyseg-local": (True, False),
                  "cyseg-window-tissue": (False, True), "cyseg-local-tissue": (True, True)}
BASELINE = "sldc-default"
VARIANTS = (*CYSEG_VARIANTS, BASELINE)


@dataclass(frozen=True)
class BenchSettings:
    slide: Path
    model: str = "default"
    device: str = "auto"
    backend: str = "auto"  # cyseg's variants; the sldc baseline runs the model in PyTorch fp32, as sldc users do
    tile_size: int = 512
    tile_overlap: int = 32
    batch_size: int = 8


class _AllObjects(sldc.PolygonClassifier):
    """SLDC needs a classifier; every polygon is an object."""

    def predict(self, image: sldc.Image, polygon: Any) -> tuple[int, float]:
        return 1, 1.0


def _connect(endpoint: Endpoint) -> Cytomine:
    client = Cytomine(endpoint.host, endpoint.public_key, endpoint.private_key, configure_logging=False,
                      verbose=logging.WARNING)
    harden(client)
    return client


def inference_throughput(model: segmenter.Segmenter, source: TileSource, settings: BenchSettings) -> float:
    """Megapixels per second of `segment_batch` alone, on full batches of tiles read beforehand."""
    size = settings.tile_size
    columns = max(1, source.width // size)
    tiles = [source.read((i % columns) * size, (i // columns % max(1, source.height // size)) * size, size, size)
             for i in range(INFERENCE_TILES)]
    batches = [np.stack(tiles[i:i + settings.batch_size]) for i in range(0, len(tiles), settings.batch_size)]
    model.segment_batch(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        model.segment_batch(batch)
    return len(tiles) * size * size / 1e6 / (time.perf_counter() - start)


def run_cyseg(endpoint: Endpoint, model: segmenter.Segmenter, settings: BenchSettings, local: bool,
              tissue_detection: bool) -> dict[str, Any]:
    """Our workflow on the slide, then our uploader."""
    client = _connect(endpoint)
    image = ImageInstance().fetch(endpoint.images[settings.slide.name])
    config = JobConfig(tile_size=settings.tile_size, tile_overlap=settings.tile_overlap,
                       batch_size=settings.batch_size, tissue_detection=tissue_detection)
    start = time.perf_counter()
    with OpenSlideSource(settings.slide, 0) if local else WindowSource(image.id, image.width, image.height, 0) \
            as source:
        tissue = (detect_tissue(source.thumbnail(THUMBNAIL_SIZE), source.width) if tissue_detection
                  else everywhere(source.width, source.height))
        result = Workflow(model, config).run(source, tissue)
    began = time.perf_counter()
    ImageUploader(image, endpoint.project_id, client.current_user.id, config.result_key("bench"),
                  endpoint.terms.get("Nucleus")).upload(result.objects)
    result.times.add("upload", time.perf_counter() - began)
    return _report(time.perf_counter() - start, image, len(result.objects), result.times,
                   model_pixels=result.segmented_pixels, tiles=result.tiles, tiles_segmented=result.tiles_with_tissue)


def run_sldc_default(endpoint: Endpoint, model: segmenter.Segmenter, settings: BenchSettings) -> dict[str, Any]:
    """SLDC's workflow with sldc-cytomine's default tiles, batch size 1, and the client's default upload."""
    _connect(endpoint)
    image = ImageInstance().fetch(endpoint.images[settings.slide.name])
    with tempfile.TemporaryDirectory(prefix="cyseg-bench-tiles-") as working_path:
        builder = sldc.SLDCWorkflowBuilder()
        builder.set_segmenter(model)
        builder.set_tile_builder(CytomineTileBuilder(working_path))
        builder.set_tile_size(settings.tile_size, settings.tile_size)
        builder.set_overlap(settings.tile_overlap)
        builder.set_distance_tolerance(1)
        builder.add_catchall_classifier(_AllObjects())
        workflow = builder.get()
        start = time.perf_counter()
        information = workflow.process(CytomineSlide(image))
        began = time.perf_counter()
        annotations = AnnotationCollection()
        for polygon in information.polygons:
            annotations.append(Annotation(location=to_cytomine(polygon, image.height).wkt, id_image=image.id,
                                          id_project=endpoint.project_id, id_terms=[endpoint.terms["Nucleus"]]))
        annotations.save()
        upload = time.perf_counter() - began
    timing = information.timing

    def phase(name: str) -> float:
        return float(sum(durations.sum() for key, durations in timing.items() if key.endswith(name)))

    times = StageTimes(fetch=phase(".detect.load"), inference=phase(".detect.segment"),
                       locate=phase(".detect.locate"), merge=phase(".merge") + phase(".dispatch_classify"),
                       upload=upload)
    topology = CytomineSlide(image).tile_topology(sldc.DefaultTileBuilder(), settings.tile_size, settings.tile_size,
                                                  settings.tile_overlap)  # the workflow's (border tiles kept)
    every = range(1, topology.tile_count + 1)
    return _report(time.perf_counter() - start, image, len(information.polygons), times,
                   model_pixels=tile_pixels(topology, every), tiles=len(every), tiles_segmented=len(every))


def _report(wall: float, image: ImageInstance, objects: int, times: StageTimes, **extra: int) -> dict[str, Any]:
    stages = times.as_dict()
    return {"wall_s": round(wall, 2), "mpix_per_s": round(image.width * image.height / 1e6 / wall, 3),
            "objects": objects, "stages_s": {"fetch": round(stages["fetch"], 2),
                                             "fetch_wait": round(stages["fetch_wait"], 2),
                                             "inference": round(stages["inference"], 2),
                                             "polygons_merge": round(stages["locate"] + stages["merge"], 2),
                                             "upload": round(stages["upload"], 2)},
            **extra}


def run_bench(settings: BenchSettings, work_dir: Path, repeats: int = 1,
              on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every variant on the slide (a fresh server each), `repeats` times in alternating order, and
    keep each variant's fastest run. cyseg's variants run the model through `settings.backend`, the sldc
    baseline in PyTorch fp32. The model alone (the same backend as the run) is measured just before and
    after each run and the run is compared with their mean, so that other load on the machine affects
    both sides alike. `on_step(name)` is called after each run."""
    batch_size = forward_batch_size(settings.batch_size, settings.device)
    model = segmenter.load(settings.model, device=settings.device, backend=settings.backend, batch_size=batch_size)
    plain = segmenter.load(settings.model, device=settings.device, backend="torch", precision="fp32",
                           batch_size=batch_size)
    with OpenSlideSource(settings.slide, 0) as source:
        width, height = source.width, source.height
        alone: dict[str, list[float]] = {"cyseg": [], BASELINE: []}
        results: dict[str, dict[str, Any]] = {}
        for repeat in range(repeats):
            for name in VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS)):
                runner, kind = (plain, BASELINE) if name == BASELINE else (model, "cyseg")
                before = inference_throughput(runner, source, settings)
                server = LocalServer(settings.slide.parent, work_dir / f"server-{name}-{repeat}")
                with server.in_thread() as endpoint:
                    result = (run_sldc_default(endpoint, plain, settings) if name == BASELINE
                              else run_cyseg(endpoint, model, settings, *CYSEG_VARIANTS[name]))
                after = inference_throughput(runner, source, settings)
                alone[kind] += [before, after]
                result["backend"] = runner.backend
                result["model_alone_mpix_per_s"] = round((before + after) / 2, 3)
                log.info("%s: %s", name, result)
                if name not in results or result["wall_s"] < results[name]["wall_s"]:
                    results[name] = result
                if on_step:
                    on_step(name)
    for result in results.values():
        reference = result["model_alone_mpix_per_s"]
        result["share_of_model_throughput"] = round(result["mpix_per_s"] / reference, 3)
        result["pipeline_efficiency"] = round(result["model_pixels"] / 1e6 / result["wall_s"] / reference, 3)
    baseline = results[BASELINE]
    for result in results.values():
        result["speedup_vs_sldc_default"] = round(result["mpix_per_s"] / baseline["mpix_per_s"], 2)
        result["speedup_vs_sldc_default_load_adjusted"] = round(
            result["share_of_model_throughput"] / baseline["share_of_model_throughput"], 2)
    return {"settings": {**dataclasses.asdict(settings), "slide": str(settings.slide)}, "repeats": repeats,
            "slide_size": [width, height], "device": str(model.device), "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "model_alone_runs_mpix_per_s": {kind: [round(value, 3) for value in values] for kind, values in alone.items()},
            "variants": {name: results[name] for name in VARIANTS}}
