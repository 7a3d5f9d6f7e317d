"""Helpers for tests in any folder: a running server and small generated slides.

    with run_server(slides_dir) as server:
        client = Cytomine(server.host, server.public_key, server.private_key)
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from cyseg.server.runner import Endpoint, LocalServer


@contextmanager
def run_server(slides_dir: Path, data_dir: Path | None = None, software: Path | None = None,
               **options: Any) -> Iterator[Endpoint]:
    """A server on a free loopback port for the duration of the block (state in a temporary folder by default).

    `options` go to `LocalServer` (e.g. `max_body_bytes`).
    """
    with tempfile.TemporaryDirectory(prefix="cyseg-server-") as temporary:
        server = LocalServer(Path(slides_dir), Path(data_dir or temporary), software, **options)
        with server.in_thread() as endpoint:
            yield endpoint


def slide_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Deterministic RGB test pixels: smooth gradients plus noise, so any offset error shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return ((base + rng.integers(0, 32, base.shape)) % 256).astype(np.uint8)


def write_test_slide(path: Path, width: int = 1500, height: int = 1100, levels: int = 3,
                     resolution_um: float = 0.5, seed: int = 0) -> np.ndarray:
    """Write a tiled pyramidal TIFF (OpenSlide's "generic tiled TIFF") and return its full-resolution pixels."""
    pixels = slide_pixels(width, height, seed)
    pixels_per_cm = 1e4 / resolution_um
    with tifffile.TiffWriter(path) as tiff:
        for level in range(levels):
            step = 2 ** level
            tiff.write(pixels[::step, ::step], tile=(256, 256), photometric="rgb", compression="zlib",
                       subfiletype=1 if level else 0, resolution=(pixels_per_cm / step, pixels_per_cm / step),
                       resolutionunit="CENTIMETER")
    return pixels
