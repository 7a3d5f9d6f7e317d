"""The job's GeoJSON and the task's nuclei follow QuPath's GeoJSON rules as its documentation states
them: a FeatureCollection of Features, each one geometry in pixels of the full-resolution image with
the origin at the top-left, `objectType` (detection), `classification` (name, RGB colour) and
`measurements` (name -> number) in its properties."""
from __future__ import annotations

import json
import math
from pathlib import Path

from shapely.geometry import Polygon, shape

from cyseg import qupath
from cyseg.coordinates import to_cytomine
from cyseg.pipeline.objects import DetectedObject
from cyseg.pipeline.results import RegionRecord, write_geojson_file

HEIGHT = 1000
# an asymmetric triangle near the top-left corner of the image (image coordinates)
TRIANGLE = Polygon([(10, 20), (60, 20), (10, 90)])


def assert_qupath_feature(feature: dict) -> None:
    assert feature["type"] == "Feature" and feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    properties = feature["properties"]
    assert properties["objectType"] == "detection"
    classification = properties["classification"]
    assert isinstance(classification["name"], str) and classification["name"]
    assert len(classification["color"]) == 3 and all(isinstance(c, int) and 0 <= c <= 255
                                                      for c in classification["color"])
    assert all(isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(v)
               for k, v in properties["measurements"].items())


def test_the_jobs_geojson_is_a_qupath_feature_collection_in_top_left_pixels(tmp_path: Path) -> None:
    record = RegionRecord(7, "slide.svs", HEIGHT, "whole image", class_names=["background", "nucleus"])
    record.set_objects([DetectedObject(to_cytomine(TRIANGLE, HEIGHT), TRIANGLE.area, 1, 0.91234),
                        DetectedObject(to_cytomine(TRIANGLE.buffer(1), HEIGHT), 100.0, 2, None)])
    collection = json.loads(write_geojson_file(tmp_path / "objects.geojson", [record]).read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    for feature in collection["features"]:
        assert_qupath_feature(feature)
    first, second = collection["features"]
    assert shape(first["geometry"]).equals(TRIANGLE)  # not flipped: QuPath's origin is the top-left
    assert first["properties"]["classification"]["name"] == "nucleus"
    assert first["properties"]["measurements"] == {"score": 0.9123, "area": round(TRIANGLE.area, 2)}
    assert second["properties"]["classification"]["name"] == "2"  # a label beyond the model's classes
    assert "score" not in second["properties"]["measurements"]  # no score: no measurement


def test_class_colours_are_stable_rgb() -> None:
    assert qupath.class_colour("Nucleus") == list(qupath.NUCLEUS_COLOUR)
    assert qupath.class_colour("mitosis") == qupath.class_colour("mitosis") != qupath.class_colour("other")


def test_task_nuclei_are_qupath_detections(tmp_path: Path) -> None:
    feature = qupath.detection(TRIANGLE, "nucleus", {"score": 0.5, "area": 1750.0})
    assert_qupath_feature(feature)
    assert shape(feature["geometry"]).equals(TRIANGLE)
