"""`descriptor.json` (schema cytomine-0.1): its parameters, and the command line Cytomine builds from it.

As the software router does: `@ID` / `@id` in an input's fields become its id in upper / lower
case, each input's `value-key` in `command-line` is replaced by `<command-line-flag> <value>`, and
the result is split on spaces. An input without a value (an empty optional one) disappears from
the command line, so the job sees its default.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cyseg.errors import CysegError

DESCRIPTOR_PATH = Path(__file__).resolve().parents[2] / "descriptor.json"


@dataclass(frozen=True)
class Parameter:
    """One input of the descriptor, with its placeholders expanded."""

    id: str
    type: str
    default: Any
    optional: bool
    set_by_server: bool
    value_key: str
    flag: str


def load_descriptor(path: Path = DESCRIPTOR_PATH) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CysegError(f"cannot read the software descriptor {path}: {error}") from error


def parameters(descriptor: Mapping[str, Any]) -> list[Parameter]:
    """The descriptor's inputs in order."""
    def expand(text: str, ident: str) -> str:
        return text.replace("@ID", ident.upper()).replace("@id", ident)

    return [Parameter(id=entry["id"], type=entry["type"], default=entry.get("default-value"),
                      optional=bool(entry.get("optional", False)),
                      set_by_server=bool(entry.get("set-by-server", False)),
                      value_key=expand(entry.get("value-key", "[@ID]"), entry["id"]),
                      flag=expand(entry.get("command-line-flag", "--@id"), entry["id"]))
            for entry in descriptor["inputs"]]


def value_text(value: Any) -> str:
    """A value as Cytomine stores it (text; booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def command_line(descriptor: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """The command the router runs for these parameter values (defaults fill the others)."""
    command = descriptor["command-line"]
    for parameter in parameters(descriptor):
        value = values.get(parameter.id, parameter.default)
        text = "" if value is None else value_text(value)
        if not text and not parameter.optional:
            raise CysegError(f"parameter {parameter.id} is required")
        if " " in text:
            raise CysegError(f"parameter {parameter.id}={text!r} contains a space; the router splits "
                             "the command line on spaces")
        command = command.replace(parameter.value_key, f"{parameter.flag} {text}" if text else "")
    return command.split()
