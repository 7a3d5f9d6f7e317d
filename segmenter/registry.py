"""Names to Segmenter classes and shipped model files; `load` returns a ready segmenter."""
from __future__ import annotations

from pathlib import Path

import torch

from segmenter.base import Segmenter
from segmenter.checkpoint import Checkpoint, ModelLoadError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

FAMILIES: dict[str, type[Segmenter]] = {}

# Shipped model names -> files in WEIGHTS_DIR (each with a model card, NAME.md). "default" is what the app
# uses unless told otherwise (the BNS blur-robust U-Net; "unet" is its plain U-Net counterpart, "default-v1" the
# previous default); "focus-gated" sends each tile to a sharp- or a blurry-trained U-Net and
# "combined" is their one-model counterpart; "detection" finds nuclei as scored star-convex polygons;
# "otsu" is the classical baseline (no network); "focus" is the focus-quality classifier
# (segmenter.focus.load_focus_classifier, not a Segmenter).
SHIPPED: dict[str, str] = {
    "default": "bns-bbbc039.pt",
    "bns": "bns-bbbc039.pt",
    "unet": "unet-bbbc039-v2.pt",
    "default-v1": "unet-bbbc039.pt",
    "combined": "unet-combined.pt",
    "focus-gated": "focus-gated.pt",
    "detection": "detection-bbbc039.pt",
    "he": "unet-he.pt",
    "otsu": "otsu.pt",
    "focus": "focuslitenn-10.pt",
    "focuslitenn-1": "focuslitenn-1.pt",
    "focuslitenn-2": "focuslitenn-2.pt",
    "focuslitenn-10": "focuslitenn-10.pt",
}


def register(cls: type[Segmenter]) -> type[Segmenter]:
    """Make a Segmenter class loadable from checkpoints whose family is `cls.name`."""
    FAMILIES[cls.name] = cls
    return cls


def model_path(name_or_path: str | Path) -> Path:
    """The file behind a shipped model name, or the path itself."""
    if str(name_or_path) in SHIPPED:
        return WEIGHTS_DIR / SHIPPED[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: '{name_or_path}' is neither a shipped model "
                                f"({', '.join(sorted(SHIPPED))}) nor an existing file")
    return path


def from_checkpoint(checkpoint: Checkpoint, device: str | torch.device | None = None,
                    backend: str = "torch", precision: str = "auto", **options) -> Segmenter:
    """Build the segmenter a checkpoint describes, its network run by `backend` (one of
    `segmenter.BACKENDS`; "auto": the fastest available; "torch" for now, until the job suite has run on "auto") at `precision` ("auto": the backend's best)."""
    if checkpoint.family not in FAMILIES:
        raise ModelLoadError(f"unknown model family '{checkpoint.family}' "
                             f"(known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[checkpoint.family].from_checkpoint(checkpoint, device=device, backend=backend,
                                                       precision=precision, **options)


def load(name_or_path: str | Path = "default", device: str | torch.device | None = None,
         backend: str = "torch", pixel_size_um: float | None = None, **options) -> Segmenter:
    """A ready segmenter from a shipped model name or a checkpoint path; `backend` and `options` as for
    `from_checkpoint`. With `pixel_size_um` (the images' µm/px), a model that records its own pixel size
    runs on images resampled to it (`segmenter.scale`)."""
    checkpoint = Checkpoint.load(model_path(name_or_path))
    if pixel_size_um is not None:
        from segmenter.scale import Rescaled
        return Rescaled.from_checkpoint(checkpoint, device=device, pixel_size_um=pixel_size_um, backend=backend,
                                        **options)
    return from_checkpoint(checkpoint, device=device, backend=backend, **options)
