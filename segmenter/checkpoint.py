"""The checkpoint format: everything needed to rebuild and use a model, in one file.

A checkpoint is a plain dict saved with `torch.save` and read back with
`torch.load(weights_only=True)` (no pickled code runs on load).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


def _plain(value: Any) -> Any:
    """Metadata as plain Python types (numpy scalars become numbers, paths strings), which is
    what `weights_only` loading accepts."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class ModelLoadError(ValueError):
    """A model file that exists but cannot be used."""


@dataclass
class Checkpoint:
    """A model's weights and metadata.

    family: registry name of the Segmenter class that uses it ("unet", ...).
    architecture: keyword arguments that rebuild the network.
    class_names: output classes, index 0 = background.
    in_channels / normalization: what the network expects as input (see transforms.Normalization).
    threshold / postprocess: how probabilities become masks and instances (transforms.PostProcess).
    pixel_size_um: the pixel size the model was trained at (None = unknown).
    training / metrics: provenance (data, recipe, seed, date) and validation metrics.
    children: nested checkpoints (dicts) for composite models.
    """

    family: str
    architecture: dict[str, Any]
    class_names: list[str]
    in_channels: int
    normalization: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    threshold: float = 0.5
    postprocess: dict[str, Any] = field(default_factory=dict)
    pixel_size_um: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        metadata = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name not in ("state_dict", "children")}
        children = {name: _plain({k: v for k, v in child.items() if k != "state_dict"})
                    | ({"state_dict": child["state_dict"]} if "state_dict" in child else {})
                    for name, child in self.children.items()}
        return _plain(metadata) | {"children": children, "state_dict": self.state_dict}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> "Checkpoint":
        if not isinstance(data, dict):
            raise ModelLoadError(f"{source}: not a cyseg checkpoint (found {type(data).__name__})")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise ModelLoadError(f"{source}: not a cyseg checkpoint (missing {', '.join(missing)})")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ModelLoadError(f"{source}: checkpoint format {data['format_version']} is newer than "
                                 f"this cyseg supports ({FORMAT_VERSION}); upgrade cyseg")
        return cls(**{key: value for key, value in data.items() if key in names})

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename) so a crash never leaves half a model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(self.to_dict(), partial)
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Checkpoint":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for corrupt or foreign files
            raise ModelLoadError(f"{path}: cannot read model file ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200]})") from error
        return cls.from_dict(data, source=str(path))
