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
- "pupil": scalar diffraction (Fraunhofer) of a circular pupil with a defocus aberration whose
  geometric blur radius is `level`, optionally with spherical aberration (which makes the blur
  differ above and below focus, as real objectives do) and averaged over the emission band
  (Born & Wolf, *Principles of Optics*, ch. 8-9; Gibson & Lanni 1991 for the aberrated pupil).
  Its rings, the bright edge of a strongly defocused spot and the loss of contrast at middle
  frequencies are what the disk and the Gaussian lack. RGB images get one wavelength per channel.

Level 0 is the identity for every kind (the in-focus image already went through the optics).
`RandomDefocus` draws a PSF kind, its shape and a camera's noise per image, for training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.fft import next_fast_len
from scipy.signal import fftconvolve

KINDS = ("optical", "disk", "gaussian", "pupil")
#: Radius of the first dark ring of the in-focus Airy pattern in units of wavelength / NA.
AIRY = 0.61
#: Emission band of the "pupil" kind: wavelengths relative to the central one (Hoechst, DAPI and
#: other blue dyes emit over about ±10%).
BAND = (0.92, 1.0, 1.08)
#: Wavelengths of the R, G, B channels relative to green (about 610, 540, 460 nm).
RGB_WAVELENGTHS = (1.13, 1.0, 0.85)
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


@lru_cache(maxsize=1024)
def _pupil_psf(radius: float, airy_radius: float, spherical: float) -> np.ndarray:
    wave_defocus = radius * AIRY / (2 * airy_radius)  # W20 in waves: radius = 2 W20 λ/NA, λ/NA = a / 0.61
    oversample = 1 if airy_radius >= 2.5 else 2 * math.ceil(2.5 / airy_radius / 2) + 1  # odd, samples the OTF
    half = math.ceil(radius + 3 * airy_radius)
    n = next_fast_len(2 * (2 * half + 1) * oversample)
    freq = np.fft.fftfreq(n) * oversample * airy_radius / AIRY  # pupil coordinate: 1 at the cutoff NA/λ
    rho2 = freq[:, None] ** 2 + freq[None, :] ** 2
    pupil = np.where(rho2 <= 1, np.exp(2j * np.pi * (wave_defocus * rho2 + spherical * rho2 ** 2)), 0)
    intensity = np.fft.fftshift(np.abs(np.fft.ifft2(pupil)) ** 2)
    side = (2 * half + 1) * oversample
    start = n // 2 - side // 2
    fine = intensity[start:start + side, start:start + side]
    psf = fine.reshape(2 * half + 1, oversample, 2 * half + 1, oversample).sum(axis=(1, 3))
    return psf / psf.sum()


def pupil_psf(radius: float, airy_radius: float = 1.0, spherical: float = 0.0,
              band: tuple[float, ...] = BAND) -> np.ndarray:
    """Diffraction PSF of a circular pupil defocused to a geometric blur of `radius` px.

    `airy_radius`: radius in px of the in-focus Airy disk (0.61 λ/NA over the pixel size) at the
    central wavelength; `spherical`: the W40 ρ⁴ aberration in waves (its sign with the defocus
    sets which side of focus); `band`: relative wavelengths averaged (the aberrations in waves
    and the Airy radius scale with the wavelength). Radius 0 gives a delta. Sums to 1.
    """
    if radius < 0 or airy_radius <= 0:
        raise ValueError(f"expected radius >= 0 and airy_radius > 0, got {radius} and {airy_radius}")
    if radius == 0:
        return _DELTA.copy()
    psfs = [_pupil_psf(float(radius), float(airy_radius * w), float(spherical / w)) for w in band]
    size = max(p.shape[0] for p in psfs)
    total = np.zeros((size, size))
    for p in psfs:
        pad = (size - p.shape[0]) // 2
        total[pad:pad + p.shape[0], pad:pad + p.shape[0]] += p
    return total / total.sum()


def defocus_psf(level: float, kind: str = "disk", **shape: float) -> np.ndarray:
    """PSF for a blur `level` in px; see the module docstring for each kind's convention. `shape`
    goes to `pupil_psf` (airy_radius, spherical) for the "pupil" kind."""
    if level < 0:
        raise ValueError(f"expected a blur level >= 0, got {level}")
    if shape and kind != "pupil":
        raise ValueError(f"PSF shape parameters {sorted(shape)} apply to the 'pupil' kind only, not {kind!r}")
    if kind == "pupil":
        return pupil_psf(level, **shape)
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


def channel_psfs(level: float, kind: str, channels: int, **shape: float) -> list[np.ndarray]:
    """One PSF per channel: the same for every kind but "pupil", which images each of 3 (RGB)
    channels at its own wavelength (`RGB_WAVELENGTHS`)."""
    if kind == "pupil" and channels == 3 and level > 0:
        return [pupil_psf(level, band=tuple(w * b for b in BAND), **shape) for w in RGB_WAVELENGTHS]
    return [defocus_psf(level, kind, **shape)] * channels


def defocus(image: np.ndarray, level: float, kind: str = "optical", photons: float | None = None,
            read_noise: float = 0.0, background: float = 0.0, transmission: float = 1.0,
            seed: int | np.random.Generator | None = None, **shape: float) -> np.ndarray:
    """Blur `image` (H, W or H, W, C) as if `level` px out of focus, then image it with a camera.

    - blur: each channel convolved with its `channel_psfs(level, kind, **shape)`, reflecting at the
      borders (the PSF sums to 1, so the mean intensity is kept).
    - transmission: the share of the light that reaches the camera (< 1: a dimmer field, as out
      of focus light spreads outside the depth of field); background: a uniform offset (stray
      light, autofluorescence) as a fraction of the input's dynamic range (max - min).
    - shot noise (when `photons` is set): Poisson, with `photons` the expected count at the
      input's maximum intensity (the same gain whatever the blur). Intensities are counted from
      0, or from the input's minimum when it is negative (a normalised float image).
    - read noise: Gaussian with std `read_noise` times the input's dynamic range.

    Returns the input's dtype and shape; integer images are rounded and clipped to their dtype's
    range. Level 0 without camera effects returns an equal copy. The same `seed` gives the same output.
    """
    image = _check_image(image)
    if photons is not None and photons <= 0:
        raise ValueError(f"expected photons > 0 or None, got {photons}")
    if read_noise < 0 or background < 0 or not 0 < transmission <= 1:
        raise ValueError(f"expected read_noise >= 0, background >= 0 and transmission in (0, 1], got "
                         f"{read_noise}, {background} and {transmission}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    psfs = channel_psfs(level, kind, channels, **shape)
    camera = photons is not None or read_noise > 0 or background > 0 or transmission < 1
    if psfs[0].shape == (1, 1) and not camera:
        return image.copy()
    x = image.astype(np.float64)
    if psfs[0].shape != (1, 1):
        x = _blur(x, psfs[0]) if len({id(p) for p in psfs}) == 1 else np.stack(
            [_blur(x[..., c], psf) for c, psf in enumerate(psfs)], axis=-1)
    rng = np.random.default_rng(seed)
    offset = min(0.0, float(image.min()))
    span = float(np.ptp(image))
    x = offset + (x - offset) * transmission + background * span
    if photons is not None:
        peak = float(image.max()) - offset
        if peak > 0:
            gain = photons / peak
            x = rng.poisson(np.clip(x - offset, 0.0, None) * gain) / gain + offset
    if read_noise > 0:
        x = x + rng.normal(0.0, read_noise * span, size=x.shape)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(image.dtype)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


@dataclass(frozen=True)
class RandomDefocus:
    """Real-looking defocus for training: per image, a PSF kind drawn by `kinds` weight, the
    pupil's shape (Airy radius in px, spherical aberration in waves) and, with probability
    `camera_prob`, a camera (photons at the brightest pixel log-uniform in `photons`, read noise,
    background and transmission uniform in their ranges; `photons=None`: no shot noise); without
    it the blur alone (the input's own noise smoothed, as a noise-free simulation shows it).
    Shape values are rounded so the PSFs are cached."""

    kinds: dict[str, float] = field(default_factory=lambda: {"pupil": 0.5, "optical": 0.3, "gaussian": 0.1,
                                                             "disk": 0.1})
    photons: tuple[float, float] | None = (100.0, 30000.0)
    read_noise: tuple[float, float] = (0.0, 0.006)
    background: tuple[float, float] = (0.0, 0.05)
    transmission: tuple[float, float] = (0.6, 1.0)
    airy_radius: tuple[float, float] = (0.6, 2.0)
    spherical: tuple[float, float] = (-1.0, 1.0)
    camera_prob: float = 0.5

    @classmethod
    def plain(cls, kind: str = "optical") -> "RandomDefocus":
        """Always `kind` with its default shape, and no camera effects."""
        return cls(kinds={kind: 1.0}, camera_prob=0.0)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds or min(self.kinds.values()) < 0 or sum(self.kinds.values()) <= 0:
            raise ValueError(f"expected positive weights for PSF kinds among {KINDS}, got {self.kinds}")
        if not 0 <= self.camera_prob <= 1:
            raise ValueError(f"expected camera_prob in [0, 1], got {self.camera_prob}")

    def __call__(self, image: np.ndarray, level: float, rng: np.random.Generator,
                 kind: str | None = None) -> np.ndarray:
        """`image` defocused by `level` px with a random (or the given) PSF kind and a random camera."""
        weights = np.array(list(self.kinds.values()), dtype=np.float64)
        kind = kind or str(rng.choice(list(self.kinds), p=weights / weights.sum()))
        shape = {}
        if kind == "pupil":
            shape = dict(airy_radius=round(float(rng.uniform(*self.airy_radius)), 1),
                         spherical=round(float(rng.uniform(*self.spherical)) * 4) / 4)
        if rng.random() >= self.camera_prob:
            return defocus(image, level, kind=kind, **shape)
        return defocus(image, level, kind=kind,
                       photons=None if self.photons is None else _log_uniform(rng, self.photons),
                       read_noise=float(rng.uniform(*self.read_noise)),
                       background=float(rng.uniform(*self.background)),
                       transmission=float(rng.uniform(*self.transmission)), seed=rng, **shape)


def blur_measure(image: np.ndarray) -> float:
    """Variance of the Laplacian (channels averaged first): higher means sharper."""
    x = _check_image(image).astype(np.float64)
    if x.ndim == 3:
        x = x.mean(axis=2)
    return float(ndimage.laplace(x, mode="reflect").var())
