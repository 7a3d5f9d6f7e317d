"""Task parameters as files, as the App Engine's task I/O spec encodes them (task-io.md).

Each parameter is a file or folder named after it: a number, integer or boolean as its text, a
string as UTF-8, a geometry as one GeoJSON object (a plain geometry or a Feature), an image as the
file itself (no extension), an array as a folder holding `array.yml` (`size: N`) and one entry per
index, each encoded as the array's subtype. Values are checked against the parameter's type and
constraints (`gt`, `lt`, `geq`, `leq`, enumeration values, string lengths); a problem is a
`ParameterError` naming the parameter.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from shapely.geometry import shape

from cyseg.errors import CysegError
from cyseg.task.descriptor import type_spec

INTEGER = re.compile(r"[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+")
NUMBER = re.compile(r"[-+]?([0-9]+)?\.[0-9]*([eE][-+]?[0-9]+)?|[-+]?[0-9]+([eE][-+]?[0-9]+)?"
                    r"|[-+]?(inf|Inf|INF)|(nan|NaN|NAN)")
PLAIN_GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
ARRAY_FILE = "array.yml"
BOUNDS = {"gt": (lambda v, b: v > b, ">"), "lt": (lambda v, b: v < b, "<"),
          "geq": (lambda v, b: v >= b, ">="), "leq": (lambda v, b: v <= b, "<=")}


class ParameterError(CysegError):
    """A parameter value that does not fit its type; the message names the parameter."""


def _integer(text: str) -> int:
    if not INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not an integer")
    octal = re.fullmatch(r"([-+]?)0([0-7_]+)", text)
    return int(octal.group(1) + octal.group(2), 8) if octal else int(text, 0)


def _number(text: str) -> float:
    if not NUMBER.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def _boolean(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"{text!r} is not true or false")
    return text == "true"


def check_geometry(value: Any) -> dict[str, Any]:
    """A GeoJSON geometry or Feature of one plain geometry, as task-io.md allows."""
    if not isinstance(value, dict) or value.get("type") not in (*PLAIN_GEOMETRIES, "Feature"):
        raise ValueError(f"expected a GeoJSON geometry or Feature ({', '.join(PLAIN_GEOMETRIES)}), got "
                         f"{str(value)[:80]}")
    geometry = value.get("geometry") if value["type"] == "Feature" else value
    if not isinstance(geometry, dict) or geometry.get("type") not in PLAIN_GEOMETRIES:
        raise ValueError("a Feature must hold one plain geometry")
    try:
        shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise ValueError(f"invalid GeoJSON {geometry['type']}: {error}") from None
    return value


def check(kind: dict[str, Any], value: Any) -> Any:
    """`value` (a Python value) checked against a long-form type; ValueError saying what is wrong."""
    kind_id = kind["id"]
    if kind_id in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind_id == "integer" and not float(value).is_integer()):
            raise ValueError(f"{value!r} is not {'an integer' if kind_id == 'integer' else 'a number'}")
        value = int(value) if kind_id == "integer" else float(value)
        if isinstance(value, float) and math.isnan(value) and not kind.get("nan_allowed", False):
            raise ValueError("NaN is not allowed")
        if isinstance(value, float) and math.isinf(value) and not kind.get("infinity_allowed", False):
            raise ValueError("infinity is not allowed")
        for key, (holds, sign) in BOUNDS.items():
            if key in kind and not holds(value, kind[key]):
                raise ValueError(f"{value:g} must be {sign} {kind[key]:g}")
        return value
    if kind_id == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if kind_id in ("string", "enumeration"):
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        if kind_id == "enumeration" and value not in kind["values"]:
            raise ValueError(f"{value!r} is not one of {', '.join(kind['values'])}")
        if not kind.get("min_length", 0) <= len(value) <= kind.get("max_length", math.inf):
            raise ValueError(f"a string of {len(value)} characters is outside the allowed lengths")
        return value
    if kind_id == "geometry":
        return check_geometry(value)
    if kind_id == "image":
        return value  # a file, checked by whoever opens it
    if kind_id == "array":
        if not isinstance(value, list):
            raise ValueError("expected an array")
        if not kind.get("min_size", 0) <= len(value) <= kind.get("max_size", math.inf):
            raise ValueError(f"an array of {len(value)} items is outside the allowed sizes")
        return [check(type_spec({"type": kind["subtype"]}), item) for item in value]
    raise ValueError(f"values of type {kind_id} are not read from text")


def parse(kind: dict[str, Any], text: str) -> Any:
    """The value a primitive or geometry parameter file holds (its text), checked."""
    kind_id = kind["id"]
    if kind_id in ("string", "enumeration"):
        return check(kind, text)
    text = text.strip()
    if kind_id == "geometry":
        try:
            return check(kind, json.loads(text))
        except json.JSONDecodeError as error:
            raise ValueError(f"not GeoJSON: {error}") from None
    reader = {"integer": _integer, "number": _number, "boolean": _boolean}.get(kind_id)
    if reader is None:
        raise ValueError(f"values of type {kind_id} are not read from text")
    return check(kind, reader(text))


def decode(kind: dict[str, Any], path: Path) -> Any:
    """The value at `path` (a file, or an array's folder); an image is its path."""
    if kind["id"] == "image":
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        return path
    if kind["id"] == "array":
        try:
            size = int(yaml.safe_load((path / ARRAY_FILE).read_text(encoding="utf-8"))["size"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"no readable {ARRAY_FILE} with its size in {path}: {error}") from None
        subtype = type_spec({"type": kind["subtype"]})
        return check(kind, [decode(subtype, path / str(index)) for index in range(size)])
    try:
        return parse(kind, path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def format_number(value: float) -> str:
    """A float as task-io.md's number pattern wants it (always with a decimal point)."""
    text = repr(float(value))
    return text if "." in text or text.lstrip("-") in ("inf", "nan") else text.replace("e", ".0e")


def encode(kind: dict[str, Any], path: Path, value: Any) -> None:
    """Write `value` (checked) at `path` as its type is encoded."""
    value = check(kind, value)
    kind_id = kind["id"]
    if kind_id == "array":
        path.mkdir(parents=True, exist_ok=True)
        (path / ARRAY_FILE).write_text(yaml.safe_dump({"size": len(value)}), encoding="utf-8")
        subtype = type_spec({"type": kind["subtype"]})
        for index, item in enumerate(value):
            encode(subtype, path / str(index), item)
        return
    text = {"integer": str, "number": format_number, "boolean": lambda v: "true" if v else "false",
            "geometry": json.dumps}.get(kind_id, str)(value)
    path.write_text(text, encoding="utf-8")


def read_parameter(folder: Path, name: str, spec: dict[str, Any]) -> Any:
    """The input `name` from `folder`: its default (None without one) when an optional input is absent."""
    path = folder / name
    if not path.exists():
        if spec.get("optional", False):
            return spec.get("default")
        raise ParameterError(f"input {name}: missing (no {path})")
    try:
        return decode(type_spec(spec), path)
    except ValueError as error:
        raise ParameterError(f"input {name}: {error}") from None


def write_parameter(folder: Path, name: str, spec: dict[str, Any], value: Any) -> None:
    try:
        encode(type_spec(spec), folder / name, value)
    except ValueError as error:
        raise ParameterError(f"output {name}: {error}") from None
