"""Training augmentation of (image, labels) pairs, deterministic under a numpy Generator.

Images are (H, W) or (H, W, C); labels are (H, W) integers (instance ids or classes). Geometric
steps move image and labels together and keep label values as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .colour import hsv_jitter, jpeg_compress, stain_jitter
from .defocus import RandomDefocus
from .normalize import noise_sigma


def _check_pair(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D (H, W) or 3-D (H, W, C) image, got shape {image.shape}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"expected labels of shape {image.shape[:2]} to match the image, got {labels.shape}")
    return image, labels


def random_flip(image: np.ndarray, labels: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip vertically and horizontally, each with probability 1/2."""
    image, labels = _check_pair(image, labels)
    for axis in (0, 1):
        if rng.random() < 0.5:
            image, labels = np.flip(image, axis), np.flip(labels, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def random_rot90(image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by a random multiple of 90 degrees.

    Non-square inputs only turn by 0 or 180 degrees, so the shape (and a batch) is preserved.
    """
    image, labels = _check_pair(image, labels)
    square = image.shape[0] == image.shape[1]
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    return (np.ascontiguousarray(np.rot90(image, k, axes=(0, 1))),
            np.ascontiguousarray(np.rot90(labels, k, axes=(0, 1))))


def random_translate(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     max_shift: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Shift by up to `max_shift` px per axis (uniform integers), mirroring in at the borders.

    Image and labels are both mirror-padded, so the tissue that moves in stays annotated (zero
    labels next to mirrored nuclei would teach the model that nuclei are background). A mirrored
    copy keeps its source's label value: an instance id may then cover two disjoint pieces.
    """
    image, labels = _check_pair(image, labels)
    if max_shift < 0:
        raise ValueError(f"expected max_shift >= 0, got {max_shift}")
    h, w = labels.shape
    dy, dx = (int(rng.integers(-max_shift, max_shift + 1)) for _ in range(2))
    dy, dx = int(np.clip(dy, 1 - h, h - 1)), int(np.clip(dx, 1 - w, w - 1))
    if dy == 0 and dx == 0:
        return image.copy(), labels.copy()
    py, px = abs(dy), abs(dx)

    def shift(a: np.ndarray) -> np.ndarray:
        padded = np.pad(a, [(py, py), (px, px)] + [(0, 0)] * (a.ndim - 2), mode="symmetric")
        return padded[py - dy:py - dy + h, px - dx:px - dx + w].copy()

    return shift(image), shift(labels)


def intensity_jitter(image: np.ndarray, rng: np.random.Generator, scale: tuple[float, float] = (0.8, 1.2),
                     shift: tuple[float, float] = (-0.1, 0.1),
                     gamma: tuple[float, float] = (0.8, 1.25)) -> np.ndarray:
    """Random gamma, then contrast scale, then brightness shift, on a floating-point image.

    Gamma is drawn log-uniformly (so 0.8 and 1.25 are equally likely) and applied within the
    image's own [min, max] range, which also works on z-scored images; `scale` (a factor) and
    `shift` (a fraction of that range, so the same on 0-1 and 0-255 floats) are uniform.
    """
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a floating-point (normalised) image, got dtype {image.dtype}")
    for name, (a, b) in (("scale", scale), ("shift", shift), ("gamma", gamma)):
        if a > b:
            raise ValueError(f"expected {name} as (low, high) with low <= high, got {(a, b)}")
    if gamma[0] <= 0:
        raise ValueError(f"expected gamma > 0, got {gamma}")
    g = math.exp(rng.uniform(math.log(gamma[0]), math.log(gamma[1])))
    s = rng.uniform(*scale)
    t = rng.uniform(*shift)
    x = image.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g
    return (x * s + t * (hi - lo)).astype(image.dtype)


def background_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An object-free image with `image`'s background level (1st percentile) and pixel noise
    (`noise_sigma`), per channel: teaches a model that an empty field holds nothing."""
    x = np.asarray(image, dtype=np.float32)
    x3 = x[..., None] if x.ndim == 2 else x
    level = np.percentile(x3, 1, axis=(0, 1), keepdims=True)
    noise = rng.normal(0.0, 1.0, x3.shape) * noise_sigma(x3)
    return (level + noise).reshape(x.shape).astype(np.float32)


def rescale_pair(image: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels resampled to `size` (rows, columns): the image by area averaging when it
    shrinks and bilinearly when it grows, the labels by nearest neighbour (ids kept)."""
    image, labels = _check_pair(image, labels)
    rows, cols = size
    if (rows, cols) == labels.shape:
        return image, labels
    shrink = rows * cols < labels.size
    resized = cv2.resize(np.asarray(image, dtype=np.float32), (cols, rows),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if image.ndim == 3 and resized.ndim == 2:
        resized = resized[..., None]
    ids = cv2.resize(labels.astype(np.float32), (cols, rows), interpolation=cv2.INTER_NEAREST)
    return resized, np.rint(ids).astype(labels.dtype)


@dataclass
class Augmenter:
    """Random flips, 90-degree turns, translation, stain and colour variation, defocus, JPEG
    compression and intensity jitter, in that order.

    With probability `stain_prob` an RGB image (0..255) gets `stain_jitter` and `hsv_jitter`
    (stained brightfield tissue), and with probability `jpeg_prob` a JPEG round trip at a quality
    drawn from 40..95. With probability `defocus_prob` the image is defocused at a level drawn uniformly from
    `defocus_levels` (px, see `transforms.defocus`; empty = never) by `blur` (PSF kind, shape and camera
    noise drawn per image). `translate` is the maximum shift (0 = off).
    With probability `background_prob` the pair is replaced first by an empty one
    (`background_like`, labels all zero).
    """

    flips: bool = True
    rot90: bool = True
    translate: int = 16
    jitter: bool = True
    defocus_levels: tuple[float, ...] = ()
    defocus_prob: float = 0.5
    blur: RandomDefocus = field(default_factory=lambda: RandomDefocus.plain("disk"))
    background_prob: float = 0.0
    stain_prob: float = 0.0
    jpeg_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("defocus_prob", "background_prob", "stain_prob", "jpeg_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"expected {name} in [0, 1], got {getattr(self, name)}")
        self.defocus_levels = tuple(float(v) for v in self.defocus_levels)

    def __call__(self, image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, labels = _check_pair(image, labels)
        if self.background_prob and rng.random() < self.background_prob:
            image, labels = background_like(image, rng), np.zeros_like(labels)
        if self.flips:
            image, labels = random_flip(image, labels, rng)
        if self.rot90:
            image, labels = random_rot90(image, labels, rng)
        if self.translate:
            image, labels = random_translate(image, labels, rng, self.translate)
        if self.stain_prob and rng.random() < self.stain_prob:
            image = hsv_jitter(stain_jitter(image, rng), rng)
        if self.defocus_levels and rng.random() < self.defocus_prob:
            level = self.defocus_levels[int(rng.integers(len(self.defocus_levels)))]
            image = self.blur(image, level, rng)
        if self.jpeg_prob and rng.random() < self.jpeg_prob:
            image = jpeg_compress(image, int(rng.integers(40, 96)))
        if self.jitter:
            image = intensity_jitter(image, rng)
        return image, labels
