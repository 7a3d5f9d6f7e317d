"""Validating and shaping raw images into model input."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def as_image_list(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A batch (N×H×W[×C] array or list of arrays) as a list of H×W[×C] arrays."""
    if isinstance(images, np.ndarray) and images.dtype != object:
        if images.ndim < 3:
            raise ValueError(f"a batch needs at least 3 dimensions (N×H×W), got shape {images.shape}")
        return list(images)
    return [np.asarray(image) for image in images]


def to_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """An H×W×`in_channels` float32 view of a grey or colour image (alpha dropped).

    Grey input to a colour model is replicated; colour input to a grey model is averaged.
    Anything else (wrong rank, empty, unsupported channel count) is a ValueError.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an H×W or H×W×C image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image (shape {image.shape})")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
            or image.dtype == bool):
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels == 4:  # RGBA from a slide reader: alpha carries no signal
        image, channels = image[..., :3], 3
    if channels not in (1, 3):
        raise ValueError(f"expected 1 (grey) or 3 (RGB) channels, got {channels} (shape {image.shape})")
    image = image.astype(np.float32)
    if channels == in_channels:
        return image
    if in_channels == 1:
        return image.mean(axis=2, keepdims=True)
    if in_channels == 3:
        return np.repeat(image, 3, axis=2)
    raise ValueError(f"cannot feed a {channels}-channel image to a {in_channels}-channel model")


def pad_to_multiple(image: np.ndarray, multiple: int, height: int | None = None,
                    width: int | None = None) -> np.ndarray:
    """Reflect-pad an H×W×C image at the bottom/right to at least `height`×`width`, rounded up
    to a multiple of `multiple` (the network's total downsampling)."""
    h, w = image.shape[:2]
    target_h = -(-max(h, height or h) // multiple) * multiple
    target_w = -(-max(w, width or w) // multiple) * multiple
    mode = "reflect" if h > 1 and w > 1 and target_h - h < h and target_w - w < w else "edge"
    return np.pad(image, ((0, target_h - h), (0, target_w - w), (0, 0)), mode=mode)


def padded_batch(images: list[np.ndarray], multiple: int) -> np.ndarray:
    """N×C×H×W float32: H×W×C images padded (`pad_to_multiple`) to their common size."""
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    batch = np.stack([pad_to_multiple(image, multiple, height, width) for image in images])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
