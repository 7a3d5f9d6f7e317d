"""Names and types shared by the server tests (fixtures live in conftest.py)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DESCRIPTOR = Path(__file__).parent / "data" / "descriptor.json"
PYRAMID_NAME = "pyramid.tif"
PNG_NAME = "plain.png"


@dataclass(frozen=True)
class GeneratedSlides:
    folder: Path
    pyramid: np.ndarray  # full-resolution pixels of the tiled pyramidal TIFF
    png: np.ndarray


def read_picture(source: Path | bytes) -> np.ndarray:
    """The pixels of an image file (or of its bytes), the file closed afterwards."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as picture:
        return np.asarray(picture)
