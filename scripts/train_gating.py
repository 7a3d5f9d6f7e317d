"""Train the sharp-only, blurry-only and combined U-Nets of the focus-gated pipeline.

    .venv/bin/python scripts/train_gating.py [--data ../shared/data] [--init-from segmenter/weights/unet-bbbc039-v2.pt]

After the dual-model study, with one shared start so the three differ only in what they saw last: the
shipped plain U-Net (`unet`, trained from in focus to 32 px of defocus), fine-tuned three times, same steps
and learning rate, on three training distributions made with `transforms.RandomDefocus` (PSF kind, pupil
shape and camera noise drawn per crop, as the shipped models are trained):

- sharp-only: in-focus crops only;
- blurry-only: every crop blurred, 2-32 px (the focus classifier calls >= 2 px blurry);
- combined: 70% of the crops blurred, 1-32 px (the shipped `unet`'s mix).

Writes runs/gating/unet-{sharp,blurry}.pt, segmenter/weights/unet-combined.pt and the focus-gated
composite segmenter/weights/focus-gated.pt (shipped focus classifier + the sharp and blurry U-Nets);
a finished model is kept (delete it to retrain; an interrupted one resumes). Then one `cyseg evaluate`
run compares them with the shipped default (`bns`) and Otsu on bbbc039/val over the issue's blur sweep
(runs/gating-eval/comparison.md).
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmenter import Checkpoint, FocusGated  # noqa: E402
from segmenter.registry import WEIGHTS_DIR, model_path  # noqa: E402
from segmenter.training import TrainConfig, train  # noqa: E402
from transforms import RandomDefocus  # noqa: E402

LEVELS = "0,2,4,8,12,16,20,28"
MAX_BLUR = 32  # px, as the shipped models: real BBBC006 z = 00 planes sit at 20-32 px
RECIPES = {  # name -> (defocus levels, probability a crop is blurred, validation blur levels)
    "sharp": ([], 0.0, []),
    "blurry": (list(range(2, MAX_BLUR + 1)), 1.0, [8, 20]),
    "combined": (list(range(1, MAX_BLUR + 1)), 0.7, [8, 20]),
}


def config_for(name: str, data: Path, epochs: int, steps: int, device: str | None, out: Path,
               init_from: Path, lr: float) -> TrainConfig:
    levels, prob, val_levels = RECIPES[name]
    return TrainConfig(data=[str(data / "bbbc039" / "train")], out=str(out), depth=4, n_filters=12, crop=256,
                       batch_size=8, epochs=epochs, steps_per_epoch=steps, lr=lr, defocus_levels=levels,
                       defocus_prob=prob, blur=asdict(RandomDefocus()), val_defocus_levels=val_levels, seed=0,
                       device=device, resume=True, bf16=True, init_from=str(init_from))


def train_unless_done(config: TrainConfig) -> None:
    """Train (resuming an interrupted run) unless the checkpoint is already finished."""
    out = Path(config.out)
    state = out.with_name(out.stem + ".state.pt")
    if out.is_file() and not state.is_file():
        print(f"{out} exists; delete it to retrain")
        return
    train(config)
    state.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--init-from", type=Path, default=model_path("unet"), help="the shared start")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs of each model")
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runs = ROOT / "runs" / "gating"
    runs.mkdir(parents=True, exist_ok=True)
    paths = {name: (WEIGHTS_DIR if name == "combined" else runs) / f"unet-{name}.pt" for name in RECIPES}
    for name, path in paths.items():
        train_unless_done(config_for(name, args.data, args.epochs, args.steps_per_epoch, args.device, path,
                                     args.init_from, args.lr))
    gated = FocusGated.build_checkpoint(Checkpoint.load(model_path("focus")), Checkpoint.load(paths["sharp"]),
                                        Checkpoint.load(paths["blurry"]))
    gated.save(model_path("focus-gated"))
    val = args.data / "bbbc039" / "val"
    models = ",".join([str(paths["sharp"]), str(paths["blurry"]), "combined", "focus-gated", "unet", "default", "otsu"])
    subprocess.run([sys.executable, "-m", "cyseg", "evaluate", "--model", models,
                    "--images", str(val / "images"), "--labels", str(val / "labels"), "--defocus", LEVELS,
                    "--sharp-levels", "0", "--out", str(ROOT / "runs" / "gating-eval")], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
