"""Intensity normalisation of images before they enter a model.

Images are 2-D (H, W: one channel) or 3-D (H, W, C: channel axis last).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._validation import from_known_fields

STD_FLOOR = 1e-6
_KINDS = ("percentile", "zscore", "none")


def _as_float_hwc(image: np.ndarray) -> np.ndarray:
    """Return `image` as float64 with a channel axis last (a 2-D image gets one channel)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D (H, W) or 3-D (H, W, C) image, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"expected a numeric image, got dtype {image.dtype}")
    out = image.astype(np.float64)
    return out[..., None] if image.ndim == 2 else out


def _per_channel(values: float | Sequence[float] | None, n_channels: int, name: str) -> np.ndarray | None:
    """Broadcast a scalar or per-channel sequence to shape (C,); None stays None."""
    if values is None:
        return None
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size not in (1, n_channels):
        raise ValueError(f"expected {name} as a scalar or {n_channels} values, got {values!r}")
    return np.broadcast_to(arr, (n_channels,))


def noise_sigma(image: np.ndarray, per_channel: bool = True) -> np.ndarray:
    """Robust estimate of the pixel noise's standard deviation: the median absolute deviation
    of differences between horizontal neighbours, which structures hardly affect. Shape (1, 1, C)
    (or (1, 1, 1) when not per channel)."""
    x = _as_float_hwc(image)
    diffs = x[:, 1:] - x[:, :-1] if x.shape[1] > 1 else x[1:] - x[:-1]
    diffs = diffs.reshape(-1, x.shape[2]) if per_channel else diffs.reshape(-1, 1)
    if diffs.shape[0] == 0:
        return np.zeros((1, 1, diffs.shape[1]))
    mad = np.median(np.abs(diffs - np.median(diffs, axis=0)), axis=0)
    return (1.4826 * mad / np.sqrt(2)).reshape(1, 1, -1)


def percentile_normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8,
                         per_channel: bool = True, min_snr: float = 0.0) -> np.ndarray:
    """Map the `low` and `high` percentiles to 0 and 1 (values outside are not clipped).

    With `min_snr` > 0 the span that maps to 1 is at least `min_snr` times the noise (see
    `noise_sigma`), so an image of pure background is not stretched until its noise looks like
    objects. A channel (or image) whose two percentiles coincide,
    e.g. a constant one, maps to zeros. Returns float32 with the input's shape.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"expected 0 <= low < high <= 100, got low={low}, high={high}")
    x = _as_float_hwc(image)
    axes = (0, 1) if per_channel else (0, 1, 2)
    lo = np.percentile(x, low, axis=axes, keepdims=True)
    hi = np.percentile(x, high, axis=axes, keepdims=True)
    span = hi - lo
    if min_snr > 0:
        span = np.maximum(span, min_snr * noise_sigma(image, per_channel))
    ok = span > 0
    out = np.where(ok, (x - lo) / np.where(ok, span, 1.0), 0.0)
    return out.reshape(np.shape(image)).astype(np.float32)


def zscore_normalize(image: np.ndarray, mean: float | Sequence[float] | None = None,
                     std: float | Sequence[float] | None = None, per_channel: bool = True) -> np.ndarray:
    """Subtract `mean` and divide by `std` (per channel; computed from the image when None).

    `std` is floored at 1e-6 so a constant image maps to zeros rather than NaN. Returns float32.
    """
    x = _as_float_hwc(image)
    n_channels = x.shape[-1]
    axes = (0, 1) if per_channel else (0, 1, 2)
    m = _per_channel(mean, n_channels, "mean")
    s = _per_channel(std, n_channels, "std")
    m = x.mean(axis=axes) if m is None else m
    s = x.std(axis=axes) if s is None else s
    s = np.maximum(np.broadcast_to(s, (n_channels,)), STD_FLOOR)
    out = (x - np.broadcast_to(m, (n_channels,))) / s
    return out.reshape(np.shape(image)).astype(np.float32)


@dataclass
class Normalization:
    """A serialisable input normalisation, stored in model checkpoints.

    kind: "percentile" (uses `low`, `high` and the noise floor `min_snr`),
    "zscore" (uses `mean`, `std`, computed per image when None) or "none" (cast to float32 only).
    """

    kind: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    min_snr: float = 0.0
    min_span: float = 0.0  # an image whose percentiles span less, in every channel, is blank (see `blank`)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown normalization kind {self.kind!r}, expected one of {_KINDS}")
        self.mean = None if self.mean is None else tuple(float(v) for v in np.atleast_1d(self.mean))
        self.std = None if self.std is None else tuple(float(v) for v in np.atleast_1d(self.std))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "percentile":
            return percentile_normalize(image, self.low, self.high, min_snr=self.min_snr)

        if self.kind == "zscore":
            return zscore_normalize(image, self.mean, self.std)
        return _as_float_hwc(image).reshape(np.shape(image)).astype(np.float32)

    def blank(self, image: np.ndarray) -> bool:
        """Whether the image holds nothing to find: with `min_span` > 0, its `low`-`high` percentiles span
        less than that many input units in every channel (empty glass in an 8-bit brightfield scan spans
        a few grey levels; stretched to the full range, its JPEG texture would look like nuclei)."""
        if self.min_span <= 0:
            return False
        x = _as_float_hwc(image)
        span = np.percentile(x, self.high, axis=(0, 1)) - np.percentile(x, self.low, axis=(0, 1))
        return bool(np.all(span < self.min_span))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        d = asdict(self)
        for key in ("mean", "std"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        """Inverse of `to_dict`; unknown keys are an error."""
        return from_known_fields(cls, d)
