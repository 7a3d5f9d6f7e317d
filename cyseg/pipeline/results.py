"""What a job leaves behind besides annotations: a GeoJSON of every object, a CSV summary per image
and region, an overlay thumbnail per image and, for a focus-gated model, a GeoJSON of where each of
its models ran; written locally (the job attaches them, `cyseg.job.upload.attach`)."""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageDraw
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from cyseg import qupath
from cyseg.coordinates import from_cytomine, to_cytomine
from cyseg.pipeline.objects import DetectedObject
from cyseg.pipeline.timing import StageTimes
from cyseg.pipeline.workflow import TileFocus
from cyseg.polygons import feature_collection, write_geojson

UPLOADED, DUPLICATE, NOT_UPLOADED = "uploaded", "duplicate", "not uploaded"  # an object's upload status
GEOJSON_NAME = "cyseg-objects.geojson"
SUMMARY_NAME = "cyseg-summary.csv"
FOCUS_NAME = "cyseg-focus-tiles.geojson"
OVERLAY_SIZE = 1024
OBJECT_COLOUR = (255, 64, 64)
ROI_COLOUR = (64, 255, 64)
BLURRY_TINT = (64, 160, 255, 80)  # RGBA over the tiles the blurry model segmented
SUMMARY_COLUMNS = ("image_id", "image_name", "region", "status", "objects", "area_mean", "area_median", "area_min",
                   "area_max", "tiles", "tiles_with_tissue", "sharp_model_tiles", "blurry_model_tiles", "seconds",
                   "fetch_seconds", "inference_seconds", "polygons_seconds", "uploaded", "duplicates", "not_uploaded", "model", "model_choice")


def overlay_name(image_id: int) -> str:
    return f"cyseg-overlay-{image_id}.png"


@dataclass
class RegionRecord:
    """One region (a whole image or one region of interest) of a run, as it went."""

    image_id: int
    image_name: str
    image_height: int
    region: str  # "whole image" or "roi <annotation id>"
    roi: BaseGeometry | None = None  # Cytomine coordinates
    objects: list[DetectedObject] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    tiles: int = 0
    tiles_with_tissue: int = 0
    seconds: float = 0.0  # wall time of the segmentation; `times` splits it by stage (summed over threads)
    status: str = "pending"
    times: StageTimes = field(default_factory=StageTimes)
    focus: list[TileFocus] = field(default_factory=list)  # a focus-gated model's decision per segmented tile
    model: str = ""  # the model the image was segmented with
    model_choice: str = ""  # why that model, at which scale (`segmenter.picker.Picked.describe`)
    class_names: list[str] = field(default_factory=list)  # the model's classes, indexed by label

    def set_objects(self, objects: list[DetectedObject]) -> None:
        self.objects = objects
        self.statuses = [NOT_UPLOADED] * len(objects)

    def summary(self) -> dict[str, Any]:
        areas = [obj.area for obj in self.objects]

        def stat(value: float | None) -> str:
            return "" if value is None else f"{value:.1f}"
        return {"image_id": self.image_id, "image_name": self.image_name, "region": self.region,
                "status": self.status, "objects": len(self.objects),
                "area_mean": stat(statistics.fmean(areas) if areas else None),
                "area_median": stat(statistics.median(areas) if areas else None),
                "area_min": stat(min(areas, default=None)), "area_max": stat(max(areas, default=None)),
                "tiles": self.tiles, "tiles_with_tissue": self.tiles_with_tissue,
                "sharp_model_tiles": sum(not d.blurry for d in self.focus),
                "blurry_model_tiles": sum(d.blurry for d in self.focus), "seconds": f"{self.seconds:.2f}",
                "fetch_seconds": f"{self.times.fetch:.2f}", "inference_seconds": f"{self.times.inference:.2f}",
                "polygons_seconds": f"{self.times.locate + self.times.merge:.2f}",
                "uploaded": self.statuses.count(UPLOADED), "duplicates": self.statuses.count(DUPLICATE),
                "not_uploaded": self.statuses.count(NOT_UPLOADED), "model": self.model,
                "model_choice": self.model_choice}


def _detections(records: list[RegionRecord]) -> Iterator[dict[str, Any]]:
    for record in records:
        for obj, status in zip(record.objects, record.statuses):
            names = record.class_names
            name = names[obj.label] if obj.label < len(names) else str(obj.label)
            score, area = None if obj.score is None else round(obj.score, 4), round(obj.area, 2)
            yield qupath.detection(from_cytomine(obj.polygon, record.image_height), name,
                                   {"score": score, "area": area}, image_id=record.image_id,
                                   image_name=record.image_name, region=record.region, area=area, score=score,
                                   upload=status, model=record.model, **{"class": name})


def write_geojson_file(path: Path, records: list[RegionRecord]) -> Path:
    """Every object as a QuPath detection (see `cyseg.qupath`): full-resolution pixels with the origin at
    the top-left, its class name and its score as a measurement; cyseg's own properties beside them.
    Written feature by feature, so that the objects are not held a second time as GeoJSON."""
    with path.open("w") as stream:
        stream.write('{"type": "FeatureCollection", "features": [')
        for number, feature in enumerate(_detections(records)):
            stream.write((", " if number else "") + json.dumps(feature))
        stream.write('], "cyseg": {"coordinates": "full-resolution pixels, origin at the top-left (QuPath)"}}')
    return path


def write_focus_tiles(path: Path, records: list[RegionRecord]) -> Path:
    """Every tile a focus-gated model segmented as a GeoJSON feature (its box in Cytomine coordinates),
    with its focus score (null for a tile without content) and the model that ran."""
    items = [(to_cytomine(box(*d.box), r.image_height),
              {"image_id": r.image_id, "image_name": r.image_name, "region": r.region,
               "score": None if d.score is None else round(d.score, 4), "blurry": d.blurry, "model": d.model})
             for r in records for d in r.focus]
    collection = feature_collection(items)
    collection["cyseg"] = {"coordinates": "Cytomine: full-resolution pixels, origin at the bottom-left"}
    return write_geojson(path, collection)


def write_summary(path: Path, records: list[RegionRecord]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(r.summary() for r in records)
    return path


def _draw(draw: ImageDraw.ImageDraw, geometry: BaseGeometry, image_height: int, scale: float,
          colour: tuple[int, int, int], width: int) -> None:
    raster = affinity.scale(from_cytomine(geometry, image_height), scale, scale, origin=(0, 0))
    for part in getattr(raster, "geoms", [raster]):
        if isinstance(part, Polygon) and not part.is_empty:
            draw.line(list(part.exterior.coords), fill=colour, width=width)


def _tint_blurry_tiles(picture: Image.Image, records: list[RegionRecord], scale: float) -> Image.Image:
    """The picture with the tiles the blurry model segmented tinted (semi-transparent)."""
    layer = Image.new("RGBA", picture.size)
    draw = ImageDraw.Draw(layer)
    for record in records:
        for decision in record.focus:
            if decision.blurry:
                draw.rectangle([value * scale for value in decision.box], fill=BLURRY_TINT)
    return Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")


def write_overlay(path: Path, thumbnail: np.ndarray, full_width: int, records: list[RegionRecord]) -> Path:
    """The thumbnail with the tiles a focus-gated model sent to its blurry model tinted blue, and each
    region of interest (green) and object (red) outlined."""
    picture = Image.fromarray(thumbnail).convert("RGB")
    scale = picture.width / full_width
    picture = _tint_blurry_tiles(picture, records, scale)
    draw = ImageDraw.Draw(picture)
    for record in records:
        if record.roi is not None:
            _draw(draw, record.roi, record.image_height, scale, ROI_COLOUR, 2)
        for obj in record.objects:
            _draw(draw, obj.polygon, record.image_height, scale, OBJECT_COLOUR, 1)
    picture.save(path)
    return path
