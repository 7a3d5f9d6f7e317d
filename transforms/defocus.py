"""An optical model of out-of-focus blur, used to train and test robustness to defocus.

Geometric optics: a point source at a distance from the focal plane images to a uniform disk,
the circle of confusion, whose radius grows linearly with the defocus distance. Diffraction
theory (Hopkins, "The frequency response of a defocused optical system", Proc. R. Soc. A 231,
1955) shows the real defocused PSF is that disk with softened edges and ringing; aberrations and
broadband (white-light) illumination, which spreads the radius over wavelengths, soften it
further. The seed papers on blur-robust nucleus segmentation modelled defocus as a Gaussian blur
plus Poisson and Gaussian noise; both kernels are available here.

The blur *level* is in pixels of the image it is applied to:

- "disk": a uniform disk of radius `level` (anti-aliased by supersampling).
- "gaussian": a Gaussian of sigma `level / 2`, which has the same second moment per axis as
  the disk of radius `level` (a uniform disk of radius r has per-axis variance r**2 / 4).
- "optical" (default): the disk of radius `level` convolved with a Gaussian of sigma
  `level / 4`, standing in for the edge softening above while keeping level 0 = no blur.

Level 0 is the identity for every kind.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

KINDS = ("optical", "disk", "gaussian")
#: Sigma of the edge-softening Gaussian of the "optical" PSF, as a fraction of the disk radius.
OPTICAL_EDGE_SIGMA = 0.25
#: Sub-pixel samples per pixel side used to anti-alias the disk.
_SUPERSAMPLING = 16
_DELTA = np.ones((1, 1))


def gaussian_psf(sigma: float) -> np.ndarray:
    """Sampled 2-D Gaussian truncated at 4 sigma, summing to 1; sigma 0 gives a delta."""
    if sigma < 0:
        raise ValueError(f"expected sigma >= 0, got {sigma}")
    if sigma == 0:
        return _DELTA.copy()
    half = math.ceil(4 * sigma)
    r = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    psf = np.outer(g, g)
    return psf / psf.sum()


def disk_psf(radius: float) -> np.ndarray:
    """Uniform disk of `radius` px (circle of confusion), each pixel weighted by its covered area.

    Sums to 1; a radius too small to cover any sub-pixel sample (including 0) gives a delta.
    """
    if radius < 0:
        raise ValueError(f"expected radius >= 0, got {radius}")
    half = max(0, math.ceil(radius + 0.5) - 1)  # outermost pixel the disk still reaches
    size = 2 * half + 1
    n = _SUPERSAMPLING
    c = (np.arange(size * n) + 0.5) / n - (half + 0.5)
    inside = (c[:, None] ** 2 + c[None, :] ** 2) <= radius ** 2
    psf = inside.reshape(size, n, size, n).mean(axis=(1, 3))
    total = psf.sum()
    return _DELTA.copy() if total == 0 else psf / total


def defocus_psf(level: float, kind: str = "disk") -> np.ndarray:
    """PSF for a blur `level` in px; see the module docstring for each kind's convention."""
    if level < 0:
        raise ValueError(f"expected a blur level >= 0, got {level}")
    if kind == "disk":
        return disk_psf(level)
    if kind == "gaussian":
        return gaussian_psf(level / 2)
    if kind == "optical":
        psf = fftconvolve(disk_psf(level), gaussian_psf(OPTICAL_EDGE_SIGMA * level))
        psf = np.clip(psf, 0.0, None)
        return psf / psf.sum()
    raise ValueError(f"unknown PSF kind {kind!r}, expected one of {KINDS}")


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D (H, W) or 3-D (H, W, C) image, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"expected an integer or floating-point image, got dtype {image.dtype}")
    return image


def _blur(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve each channel of float `x` with `psf`, reflecting at the borders."""
    half = psf.shape[0] // 2
    pad = [(half, half), (half, half)] + [(0, 0)] * (x.ndim - 2)
    kernel = psf if x.ndim == 2 else psf[..., None]
    return fftconvolve(np.pad(x, pad, mode="symmetric"), kernel, mode="valid", axes=(0, 1))


def defocus(image: np.ndarray, level: float, kind: str = "optical", photons: float | None = None,
            read_noise: float = 0.0, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Blur `image` (H, W or H, W, C) as if `level` px out of focus, then add sensor noise.

    - blur: each channel convolved with `defocus_psf(level, kind)`, reflecting at the borders
      (the PSF sums to 1, so the mean intensity is kept).
    - shot noise (when `photons` is set): Poisson, with `photons` the expected count at the
      input's maximum intensity (the same gain whatever the blur). Intensities are counted from
      0, or from the input's minimum when it is negative (a normalised float image).
    - read noise: Gaussian with std `read_noise` times the input's dynamic range (max - min).

    Returns the input's dtype and shape; integer images are rounded and clipped to their dtype's
    range. Level 0 without noise returns an equal copy. The same `seed` gives the same output.
    """
    image = _check_image(image)
    if photons is not None and photons <= 0:
        raise ValueError(f"expected photons > 0 or None, got {photons}")
    if read_noise < 0:
        raise ValueError(f"expected read_noise >= 0, got {read_noise}")
    psf = defocus_psf(level, kind)
    if psf.shape == (1, 1) and photons is None and read_noise == 0:
        return image.copy()
    x = image.astype(np.float64)
    if psf.shape != (1, 1):
        x = _blur(x, psf)
    rng = np.random.default_rng(seed)
    if photons is not None:
        offset = min(0.0, float(image.min()))
        peak = float(image.max()) - offset
        if peak > 0:
            gain = photons / peak
            x = rng.poisson(np.clip(x - offset, 0.0, None) * gain) / gain + offset
    if read_noise > 0:
        x = x + rng.normal(0.0, read_noise * float(np.ptp(image)), size=x.shape)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(image.dtype)


def blur_measure(image: np.ndarray) -> float:
    """Variance of the Laplacian (channels averaged first): higher means sharper."""
    x = _check_image(image).astype(np.float64)
    if x.ndim == 3:
        x = x.mean(axis=2)
    return float(ndimage.laplace(x, mode="reflect").var())
