"""The task: inputs from the input folder -> the job's segmentation of the whole slide (or of the
region of interest) -> outputs in the output folder.

It is the legacy job's pipeline (`cyseg.pipeline`), not a copy: the same `JobConfig`, model loading,
tissue detection and `Workflow` (SLDC tiles, batches, instance-aware merging, focus-gated decisions),
over an `OpenSlideSource` of the local file instead of Cytomine. Geometries leave in full-resolution
pixels with the origin at the top-left of the image, as the task I/O spec asks for geometries
derived from an image. Progress goes to stderr; a problem ends the task with exit code 1 and one
line naming it (`cyseg task failed: input threshold: 'abc' is not a number`).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from cyseg import qupath
from cyseg.coordinates import from_cytomine, to_cytomine
from cyseg.errors import CysegError
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.models import load_models, pick_for_slide
from cyseg.pipeline.tissue import THUMBNAIL_SIZE, detect_tissue
from cyseg.pipeline.workflow import RegionResult, Workflow, blurry_regions
from cyseg.task.descriptor import load_descriptor
from cyseg.task.image import open_image
from cyseg.task.io import ParameterError, read_parameter, write_parameter

log = logging.getLogger("cyseg.task")

CONFIG_INPUTS = ("threshold", "min_area", "max_area", "tile_size", "tile_overlap", "device", "test_time_augmentation")
PROGRESS_STEP = 0.05  # report progress every 5% of the tiles


def read_inputs(folder: Path, descriptor: dict[str, Any]) -> dict[str, Any]:
    """Every input of the descriptor, read from `folder` (defaults for the absent optional ones)."""
    return {name: read_parameter(folder, name, spec) for name, spec in descriptor["inputs"].items()}


def job_config(inputs: dict[str, Any]) -> JobConfig:
    """The job parameters the inputs stand for (the others keep the job's defaults)."""
    return JobConfig(model=inputs["model"], **{name: inputs[name] for name in CONFIG_INPUTS})


def region_of_interest(value: dict[str, Any] | None, width: int, height: int) -> BaseGeometry | None:
    """The `roi` input as a polygon in image coordinates; ParameterError unless it is an area that
    overlaps the image."""
    if value is None:
        return None
    geometry = shape(value["geometry"] if value["type"] == "Feature" else value)
    properties = value.get("properties") or {}
    if value["type"] == "Feature" and properties.get("subType") == "Circle":
        geometry = geometry.buffer(float(properties.get("radius", 0)))
    if geometry.area <= 0:
        raise ParameterError(f"input roi: a {geometry.geom_type} has no area; draw a polygon")
    if not geometry.intersects(box(0, 0, width, height)):
        left, top, right, bottom = geometry.bounds
        raise ParameterError(f"input roi: ({left:g}, {top:g})-({right:g}, {bottom:g}) lies outside the image "
                             f"(0, 0)-({width}, {height})")
    return geometry


class TileProgress:
    """Segmentation progress as lines on stderr, every PROGRESS_STEP of the tiles."""

    def __init__(self) -> None:
        self.reported = -1.0

    def __call__(self, done: int, total: int) -> None:
        share = done / max(total, 1)
        if share - self.reported >= PROGRESS_STEP or done == total:
            self.reported = share
            log.info("progress %3.0f%%: %d/%d tiles segmented", 100 * share, done, total)


def outputs(result: RegionResult, class_names: list[str], image_height: int, roi: BaseGeometry | None,
            summary: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """The output values of a finished segmentation (geometries in image coordinates)."""
    objects = result.objects
    names = [class_names[o.label] if o.label < len(class_names) else str(o.label) for o in objects]
    scores = [round(o.score, 4) for o in objects]
    nuclei = [qupath.detection(from_cytomine(o.polygon, image_height), name, {"score": score, "area": round(o.area, 2)})
              for o, name, score in zip(objects, names, scores)]
    cytomine_roi = None if roi is None else to_cytomine(roi, image_height)
    blurry = [mapping(from_cytomine(region.polygon, image_height))
              for region in blurry_regions(result.focus, image_height, cytomine_roi, tolerance)]
    areas = [o.area for o in objects]
    summary |= {"count": len(objects), "area_median": round(statistics.median(areas), 1) if areas else None,
                "tiles": result.tiles, "tiles_with_tissue": result.tiles_with_tissue,
                "blurry_regions": len(blurry), "seconds": round(result.seconds, 2)}
    return {"nuclei": nuclei, "scores": scores, "classes": names, "count": len(objects), "blurry_regions": blurry,
            "summary": json.dumps(summary)}


def run_task(inputs_dir: Path, outputs_dir: Path, descriptor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the inputs, segment, write the outputs; the output values."""
    descriptor = descriptor or load_descriptor()
    inputs = read_inputs(inputs_dir, descriptor)
    config = job_config(inputs)
    log.info("loading model %s", config.model)
    models = load_models(config)
    with tempfile.TemporaryDirectory(prefix="cyseg-task-") as scratch, \
            open_image(inputs["image"], Path(scratch), config.zoom_level) as source:
        roi = region_of_interest(inputs["roi"], source.full_width, source.full_height)
        log.info("image %dx%d px (%s), %s", source.full_width, source.full_height, source.description,
                 "whole image" if roi is None else f"region of interest {roi.bounds}")
        thumbnail = source.thumbnail(THUMBNAIL_SIZE)
        tissue = detect_tissue(thumbnail, source.width)
        picked = pick_for_slide(models, source, tissue, thumbnail)
        log.info("%s", picked.describe())
        model = picked.model
        result = Workflow(model, config).run(source, tissue, roi, TileProgress())
        summary = {"width": source.full_width, "height": source.full_height, "model": picked.name,
                   "requested_model": inputs["model"], "model_choice": picked.to_dict(), "device": str(model.device),
                   "region": "whole image" if roi is None else "region of interest"}
        values = outputs(result, model.class_names, source.full_height, roi, summary, config.simplify_tolerance)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in descriptor["outputs"].items():
        write_parameter(outputs_dir, name, spec, values[name])
    log.info("%d nuclei found in %.1f s; outputs in %s", values["count"], result.seconds, outputs_dir)
    return values


def build_parser(descriptor: dict[str, Any]) -> argparse.ArgumentParser:
    folders = descriptor["configuration"]
    parser = argparse.ArgumentParser(prog="python -m cyseg.task", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, default=Path(folders.get("input_folder", "/inputs")),
                        help="folder of the inputs (default %(default)s)")
    parser.add_argument("--outputs", type=Path, default=Path(folders.get("output_folder", "/outputs")),
                        help="folder for the outputs (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    try:
        descriptor = load_descriptor()
        args = build_parser(descriptor).parse_args(argv)
        started = time.perf_counter()
        run_task(args.inputs, args.outputs, descriptor)
        log.info("task finished in %.1f s", time.perf_counter() - started)
    except CysegError as error:
        print(f"cyseg task failed: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: its traceback, then the one line
        log.exception("unexpected error")
        print(f"cyseg task failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0
