"""Parameters as files, as task-io.md encodes each type, read back as they were written."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cyseg.task.io import ParameterError, decode, encode, format_number, read_parameter, write_parameter

POLYGON = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 5], [0, 0]]]}


@pytest.mark.parametrize("text, value", [("42", 42), ("-1", -1), ("0", 0), ("0b101", 5), ("0x1F", 31),
                                         ("017", 15), ("1_000", 1000)])
def test_integers_in_every_base_of_the_spec(tmp_path: Path, text: str, value: int) -> None:
    (tmp_path / "n").write_text(text)
    assert read_parameter(tmp_path, "n", {"type": "integer"}) == value


@pytest.mark.parametrize("text, value", [("685230.15", 685230.15), ("6.8523015e+5", 685230.15), ("-.5", -0.5),
                                         ("3", 3.0)])
def test_numbers(tmp_path: Path, text: str, value: float) -> None:
    (tmp_path / "x").write_text(text)
    assert read_parameter(tmp_path, "x", {"type": "number"}) == pytest.approx(value)


@pytest.mark.parametrize("text, spec, message", [
    ("abc", {"id": "number"}, "input x: 'abc' is not a number"),
    ("1.5", {"id": "number", "gt": 0, "lt": 1}, "input x: 1.5 must be < 1"),
    ("nan", {"id": "number"}, "input x: NaN is not allowed"),
    ("2.5", {"id": "integer"}, "input x: '2.5' is not an integer"),
    ("yes", {"id": "boolean"}, "input x: 'yes' is not true or false"),
    ("huge", {"id": "enumeration", "values": ["a", "b"]}, "input x: 'huge' is not one of a, b"),
    ('{"type": "Polygon"}', {"id": "geometry"}, "input x: invalid GeoJSON Polygon"),
    ("{", {"id": "geometry"}, "input x: not GeoJSON"),
])
def test_bad_values_name_the_input(tmp_path: Path, text: str, spec: dict, message: str) -> None:
    (tmp_path / "x").write_text(text)
    with pytest.raises(ParameterError, match=message.replace("(", r"\(")):
        read_parameter(tmp_path, "x", {"type": spec})


def test_missing_inputs_default_when_optional_and_fail_otherwise(tmp_path: Path) -> None:
    assert read_parameter(tmp_path, "t", {"type": "number", "optional": True, "default": 0.5}) == 0.5
    assert read_parameter(tmp_path, "roi", {"type": "geometry", "optional": True}) is None
    with pytest.raises(ParameterError, match="input image: missing"):
        read_parameter(tmp_path, "image", {"type": "image"})


def test_arrays_are_folders_with_their_size_and_one_file_per_index(tmp_path: Path) -> None:
    feature = {"type": "Feature", "geometry": POLYGON, "properties": {"objectType": "detection"}}
    spec = {"type": {"id": "array", "subtype": {"id": "geometry"}}}
    write_parameter(tmp_path, "nuclei", spec, [POLYGON, feature])
    assert yaml.safe_load((tmp_path / "nuclei" / "array.yml").read_text()) == {"size": 2}
    assert sorted(p.name for p in (tmp_path / "nuclei").iterdir()) == ["0", "1", "array.yml"]
    assert read_parameter(tmp_path, "nuclei", spec) == [POLYGON, feature]
    encode({"id": "array", "subtype": "integer"}, tmp_path / "ints", [4, 1, -1])
    assert [(tmp_path / "ints" / str(i)).read_text() for i in range(3)] == ["4", "1", "-1"]


def test_numbers_are_written_as_the_spec_reads_them(tmp_path: Path) -> None:
    assert format_number(1e-05) == "1.0e-05" and format_number(3) == "3.0" and format_number(0.25) == "0.25"
    write_parameter(tmp_path, "scores", {"type": {"id": "array", "subtype": {"id": "number", "leq": 1}}}, [0.5, 1e-7])
    assert decode({"id": "array", "subtype": "number"}, tmp_path / "scores") == [0.5, 1e-7]
    with pytest.raises(ParameterError, match="output scores: 2 must be <= 1"):
        write_parameter(tmp_path, "scores", {"type": {"id": "array", "subtype": {"id": "number", "leq": 1}}}, [2.0])
