"""Per-window statistics of the focus classifier, compiled (numba).

Windows are squares of `cells` response cells (one cell per 5×5 pixels) starting at
`y_starts` × `x_starts` (in cells; they may overlap). A statistic is reduced first down the
rows of each band of windows (element by element along whole rows, which vectorises), then
across each window's columns. As tensor operations these reductions took as long as the
convolution itself (`benchmarks/focus_bench.py`).

Inputs are finite (`focus_input` refuses NaN and infinity): `fastmath` lets the loops vectorise.
The first call compiles (seconds); numba caches the result in the package's `__pycache__` or
the user's cache folder, and compiles in memory where neither is writable (a read-only container).
"""
from __future__ import annotations

import numba
import numpy as np

#: FocusLiteNN's convolution: KERNEL × KERNEL at STRIDE; one response cell per STRIDE² pixels.
KERNEL, STRIDE = 7, 5
#: Offset of the pixel sampled in each response cell (its centre).
CENTRE = KERNEL // 2
MIN, MAX, SUM = 0, 1, 2


def _compiled(**options):
    """`numba.njit` with fastmath, cached on disk where numba finds a writable folder."""
    def decorate(function):
        try:
            return numba.njit(cache=True, fastmath=True, **options)(function)
        except RuntimeError:  # "no locator available": nowhere to write the cache
            return numba.njit(fastmath=True, **options)(function)
    return decorate


@_compiled(inline="always")
def _combine(a, b, how):
    if how == MIN:
        return a if a < b else b
    if how == MAX:
        return a if a > b else b
    return a + b


@_compiled()
def _window_reduce(plane: np.ndarray, y_starts: np.ndarray, x_starts: np.ndarray, cells: int, how: int,
                   out: np.ndarray) -> None:
    """`out[row, col]` = min, max or sum (`how`) of `plane` over window (row, col)."""
    band = plane[0].copy()
    for row in range(len(y_starts)):
        y0 = y_starts[row]
        band[:] = plane[y0]
        for i in range(y0 + 1, y0 + cells):
            for j in range(plane.shape[1]):
                band[j] = _combine(band[j], plane[i, j], how)
        for col in range(len(x_starts)):
            x0 = x_starts[col]
            value = band[x0]
            for j in range(x0 + 1, x0 + cells):
                value = _combine(value, band[j], how)
            out[row, col] = value


@_compiled()
def response_extrema(response: np.ndarray, y_starts: np.ndarray, x_starts: np.ndarray,
                     cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum (B×ny×nx×K each) of B×K×h×w response maps over each window."""
    batch, kernels = response.shape[:2]
    low = np.empty((batch, kernels, len(y_starts), len(x_starts)), np.float32)
    high = np.empty_like(low)
    for b in range(batch):
        for k in range(kernels):
            _window_reduce(response[b, k], y_starts, x_starts, cells, MIN, low[b, k])
            _window_reduce(response[b, k], y_starts, x_starts, cells, MAX, high[b, k])
    return low.transpose(0, 2, 3, 1), high.transpose(0, 2, 3, 1)


@_compiled()
def centre_statistics(image: np.ndarray, y_starts: np.ndarray, x_starts: np.ndarray, cells: int,
                      offset: float, span: float) -> tuple[np.ndarray, ...]:
    """Of the centre samples in each window of an H×W×C image: the darkest and the brightest
    sample over channels, and the mean and variance of their grey level (mean over channels)
    scaled as `(grey - offset) / span`; ny×nx each."""
    height, width, channels = image.shape
    rows, cols = (height - KERNEL) // STRIDE + 1, (width - KERNEL) // STRIDE + 1
    shape = (len(y_starts), len(x_starts))
    bottom, top = np.empty(shape, np.float32), np.empty(shape, np.float32)
    total, square = np.empty(shape), np.empty(shape)
    darkest, brightest = np.empty((rows, cols), np.float32), np.empty((rows, cols), np.float32)
    grey, grey_square = np.empty((rows, cols)), np.empty((rows, cols))
    for i in range(rows):
        line = image[CENTRE + STRIDE * i]
        for j in range(cols):
            pixel = line[CENTRE + STRIDE * j]
            lo = hi = value = np.float32(pixel[0])
            for c in range(1, channels):
                sample = np.float32(pixel[c])
                lo, hi, value = min(lo, sample), max(hi, sample), value + sample
            darkest[i, j], brightest[i, j] = lo, hi
            grey[i, j] = (value / channels - offset) / span
            grey_square[i, j] = grey[i, j] * grey[i, j]
    _window_reduce(darkest, y_starts, x_starts, cells, MIN, bottom)
    _window_reduce(brightest, y_starts, x_starts, cells, MAX, top)
    _window_reduce(grey, y_starts, x_starts, cells, SUM, total)
    _window_reduce(grey_square, y_starts, x_starts, cells, SUM, square)
    mean = total / (cells * cells)
    variance = square / (cells * cells) - mean * mean
    return bottom, top, mean.astype(np.float32), variance.astype(np.float32)
