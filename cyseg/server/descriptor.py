"""Read a Cytomine software descriptor (`descriptor.json`, schema cytomine-0.1) into parameter specs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyseg.errors import CysegError
from cyseg.server.store import ParameterSpec

# The parameter types the 2.x client knows how to parse on the command line.
PARAMETER_TYPES = ("Number", "String", "Boolean", "Domain", "List", "ListDomain", "Date")


@dataclass(frozen=True, slots=True)
class SoftwareSpec:
    """A software as Cytomine registers it from its descriptor."""
    name: str
    version: str | None
    digest: str  # identifies this exact descriptor, so re-registering it is a no-op
    parameters: tuple[ParameterSpec, ...]


def _default_text(value: Any) -> str | None:
    """Cytomine keeps default values as text; booleans as 'true'/'false'."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parameter(entry: Any, position: int, source: Path) -> ParameterSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
        raise CysegError(f"{source}: input #{position + 1} has no 'id'")
    ident = entry["id"]
    kind = entry.get("type", "String")
    if kind not in PARAMETER_TYPES:
        raise CysegError(f"{source}: input '{ident}' has type '{kind}', expected one of {', '.join(PARAMETER_TYPES)}")
    value_key = entry.get("value-key", "[@ID]")
    flag = entry.get("command-line-flag")
    return ParameterSpec(
        name=ident, type=kind, default_value=_default_text(entry.get("default-value")),
        required=not entry.get("optional", False), set_by_server=bool(entry.get("set-by-server", False)),
        index=(position + 1) * 100, human_name=str(entry.get("name", ident)),
        value_key=value_key.replace("@ID", ident.upper()) if isinstance(value_key, str) else None,
        command_line_flag=flag.replace("@id", ident) if isinstance(flag, str) else None)


def read_descriptor(path: Path) -> SoftwareSpec:
    """Parse `path`; a malformed descriptor is a CysegError naming the problem."""
    try:
        descriptor = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CysegError(f"cannot read software descriptor {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise CysegError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("name"), str):
        raise CysegError(f"{path}: a descriptor is a JSON object with a 'name'")
    inputs = descriptor.get("inputs", [])
    if not isinstance(inputs, list):
        raise CysegError(f"{path}: 'inputs' must be a list")
    parameters = tuple(_parameter(entry, position, path) for position, entry in enumerate(inputs))
    names = [p.name for p in parameters]
    if len(set(names)) != len(names):
        raise CysegError(f"{path}: duplicate input ids")
    digest = hashlib.sha256(json.dumps(descriptor, sort_keys=True).encode("utf-8")).hexdigest()
    version = descriptor.get("version")
    return SoftwareSpec(descriptor["name"], str(version) if version is not None else None, digest, parameters)
