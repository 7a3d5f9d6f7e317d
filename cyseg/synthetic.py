"""Synthetic fluorescence-like images of nuclei with known positions (for the demo and tests)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Nucleus:
    """An elliptical nucleus: centre (x = column, y = row, top-left origin), semi-axes, angle."""

    x: float
    y: float
    a: float
    b: float
    angle: float = 0.0


def random_nuclei(shape: tuple[int, int], count: int, rng: np.random.Generator,
                  radius: tuple[float, float] = (7.0, 11.0), margin: int = 14,
                  min_gap: float = 4.0) -> list[Nucleus]:
    """Up to `count` non-overlapping nuclei placed at random (rejection sampling)."""
    height, width = shape
    nuclei: list[Nucleus] = []
    for _ in range(count * 50):
        if len(nuclei) == count:
            break
        a, b = rng.uniform(*radius), rng.uniform(*radius)
        x, y = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
        if all(np.hypot(x - n.x, y - n.y) > max(a, b) + max(n.a, n.b) + min_gap for n in nuclei):
            nuclei.append(Nucleus(x, y, a, b, rng.uniform(0, np.pi)))
    return nuclei


def render(shape: tuple[int, int], nuclei: list[Nucleus], rng: np.random.Generator,
           background: float = 0.08, noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 grey image (bright nuclei on a dark background, slightly blurred, noisy) and
    its uint16 instance labels (nucleus i has label i + 1; a later nucleus wins on overlap)."""
    labels = np.zeros(shape, dtype=np.uint16)
    intensity = np.full(shape, background, dtype=np.float32)
    rows, cols = np.indices(shape, dtype=np.float32)
    for index, n in enumerate(nuclei, start=1):
        r0, r1 = int(max(0, n.y - n.a - n.b)), int(min(shape[0], n.y + n.a + n.b + 1))
        c0, c1 = int(max(0, n.x - n.a - n.b)), int(min(shape[1], n.x + n.a + n.b + 1))
        dy, dx = rows[r0:r1, c0:c1] - n.y, cols[r0:r1, c0:c1] - n.x
        u = dx * np.cos(n.angle) + dy * np.sin(n.angle)
        v = -dx * np.sin(n.angle) + dy * np.cos(n.angle)
        inside = (u / n.a) ** 2 + (v / n.b) ** 2 <= 1.0
        labels[r0:r1, c0:c1][inside] = index
        intensity[r0:r1, c0:c1][inside] = rng.uniform(0.55, 0.9)
    texture = ndimage.gaussian_filter(rng.normal(0, 0.06, shape).astype(np.float32), 1.5)
    intensity = ndimage.gaussian_filter(intensity + texture * (labels > 0), 1.0)
    intensity += rng.normal(0, noise, shape).astype(np.float32)
    return (np.clip(intensity, 0, 1) * 255).astype(np.uint8), labels
