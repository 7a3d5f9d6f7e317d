"""Colour augmentation of stained (brightfield) tissue: stain, hue/saturation/brightness, JPEG.

Images are H×W×3 RGB with values in 0..255 (uint8 or float); each function returns float32 in
0..255. Stain variation works in optical-density space through scikit-image's H&E-DAB
deconvolution (`rgb2hed` / `hed2rgb`, Ruifrok & Johnston 2001): each stain's density is scaled
and shifted, as in the "HED" augmentation of Tellez et al. (Medical Image Analysis 58, 2019),
which they found the most useful single augmentation for H&E across centres.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage.color import hed2rgb, hsv2rgb, rgb2hed, rgb2hsv


def _unit_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    return np.clip(image.astype(np.float64) / 255.0, 0.0, 1.0)


def _to_255(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.float32)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, scale: float = 0.25,
                 shift: float = 0.015) -> np.ndarray:
    """Scale each stain's optical density (H, E, DAB) by U(1 - scale, 1 + scale) and shift it by
    U(-shift, shift) (in `rgb2hed` units, where hematoxylin in a nucleus is about 0.05–0.15)."""
    hed = rgb2hed(_unit_rgb(image))
    hed = hed * rng.uniform(1 - scale, 1 + scale, 3) + rng.uniform(-shift, shift, 3)
    return _to_255(hed2rgb(np.clip(hed, 0.0, None)))


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hue: float = 0.04,
               saturation: tuple[float, float] = (0.7, 1.3),
               brightness: tuple[float, float] = (0.85, 1.15)) -> np.ndarray:
    """Shift the hue by U(-hue, hue) (a fraction of the colour circle), scale saturation and value."""
    hsv = rgb2hsv(_unit_rgb(image))
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue)) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation), 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(*brightness), 0.0, 1.0)
    return _to_255(hsv2rgb(hsv))


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """The image after a JPEG round trip at `quality` (1–95), as slide scanners store tiles."""
    if not 1 <= quality <= 95:
        raise ValueError(f"expected a JPEG quality between 1 and 95, got {quality}")
    pixels = np.rint(_unit_rgb(image) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32)
