"""Calibrate the synthetic defocus range against real defocus: BBBC006 z = 00 planes vs blurred BBBC039.

    .venv/bin/python scripts/calibrate_defocus.py [--data ../shared/data]

Both sets share cells, stain and microscope. For each image the radial power spectrum is
measured (Hann window, the noise floor of the highest frequencies subtracted, normalised to the
lowest band); its *cutoff* is the frequency where the power falls to 1% of the lowest band. Every
real z = 00 plane is matched to the blur radius of each PSF kind (`transforms.defocus`) whose
blurred BBBC039 train fields have the nearest median cutoff, and the kinds are compared by how
closely their spectrum follows the real one (RMS of log10 power over the bands above 1e-4 of the
real spectrum). Writes benchmarks/results/defocus_calibration.json and docs/defocus_calibration.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.training_arguments import SHARED_DATA  # noqa: E402
from segmenter.datasets import list_images, read_image  # noqa: E402
from transforms import defocus  # noqa: E402

BANDS = np.geomspace(0.006, 0.35, 30)  # cycles per pixel
RADII = (0, 4, 8, 12, 16, 20, 24, 28, 32, 36)
KINDS = ("pupil", "optical", "gaussian")
CUTOFF = 1e-2


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """Radial power per band of `BANDS`, noise floor (mean of the last 8 bands) subtracted,
    relative to the mean of the first 4 bands."""
    x = image.astype(np.float64) - image.mean()
    h, w = x.shape
    power = np.abs(np.fft.fft2(x * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    band = np.digitize(radius.ravel(), BANDS)
    profile = np.array([power.ravel()[band == i].mean() for i in range(1, len(BANDS))])
    signal = np.clip(profile - profile[-8:].mean(), 1e-12, None)
    return signal / signal[:4].mean()


def cutoff(spectrum: np.ndarray) -> float:
    """The first band's frequency where the relative power is below `CUTOFF`."""
    below = np.nonzero(spectrum < CUTOFF)[0]
    return float(BANDS[below[0]] if len(below) else BANDS[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--fields", type=int, default=16, help="BBBC039 train fields blurred per radius")
    parser.add_argument("--photons", type=float, default=2000.0, help="shot noise of the synthetic blur")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "defocus_calibration.json")
    args = parser.parse_args()
    real_paths = list_images(args.data / "bbbc006_z00" / "images")
    real = {p.name: power_spectrum(read_image(p)) for p in real_paths}
    fields = [read_image(p) for p in list_images(args.data / "bbbc039" / "train" / "images")[:args.fields]]
    rng = np.random.default_rng(0)
    result = dict(method=__doc__.splitlines()[0], photons=args.photons, fields=len(fields),
                  real_cutoff={name: cutoff(s) for name, s in real.items()}, kinds={})
    for kind in KINDS:
        synthetic = {r: np.median([power_spectrum(defocus(f, r, kind, photons=args.photons, seed=rng))
                                   for f in fields], axis=0) for r in RADII}
        median_cutoff = {r: cutoff(spectrum) for r, spectrum in synthetic.items()}
        usable = [r for r in RADII if r <= 32]  # beyond, the blurred signal sinks under the noise floor
        matched = {name: min(usable, key=lambda r: abs(np.log(median_cutoff[r] / cutoff(s)))) for name, s in real.items()}
        misfit = [log_misfit(real[name], synthetic[r]) for name, r in matched.items()]
        values = np.array(list(matched.values()))
        result["kinds"][kind] = dict(
            synthetic_median_cutoff=median_cutoff, matched_radius_px=matched,
            radius=dict(min=int(values.min()), median=float(np.median(values)), max=int(values.max())),
            spectrum_misfit=float(np.median(misfit)))
        if kind == "pupil":
            plot(real, synthetic, ROOT / "docs" / "defocus_calibration.png")
        print(f"{kind}: z = 00 planes match a blur of {values.min()}-{values.max()} px (median {np.median(values):g}), "
              f"spectrum misfit {np.median(misfit):.2f} (log10 RMS)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")
    return 0


def log_misfit(real: np.ndarray, synthetic: np.ndarray) -> float:
    """RMS difference of log10 power over the bands where the real spectrum is above 1e-4."""
    keep = real > 1e-4
    return float(np.sqrt(np.mean((np.log10(real[keep]) - np.log10(np.clip(synthetic[keep], 1e-12, None))) ** 2)))


def plot(real: dict[str, np.ndarray], synthetic: dict[int, np.ndarray], path: Path) -> None:
    """Real z = 00 spectra (grey) against the median synthetic spectrum per radius."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    centres = np.sqrt(BANDS[1:] * BANDS[:-1])
    for i, spectrum in enumerate(real.values()):
        ax.loglog(centres, spectrum, color="0.6", lw=0.8, label="real z = 00 (BBBC006)" if i == 0 else None)
    colours = plt.cm.viridis(np.linspace(0, 1, len(synthetic)))
    for colour, (radius, spectrum) in zip(colours, synthetic.items()):
        ax.loglog(centres, spectrum, color=colour, lw=1.5, label=f"pupil blur {radius} px")
    ax.axhline(CUTOFF, color="k", ls=":", lw=0.8)
    ax.set(xlabel="spatial frequency (cycles / px)", ylabel="relative power (noise floor removed)",
           ylim=(1e-5, 3), title="Real defocus vs synthetic pupil blur of BBBC039")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
