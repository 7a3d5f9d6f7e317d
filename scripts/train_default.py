"""Train the shipped default U-Net on BBBC039 with defocus augmentation and write its model card.

    .venv/bin/python scripts/train_default.py [--data ../shared/data] [--epochs 24]

Writes segmenter/weights/unet-bbbc039.pt (+ .md model card, + training history) and the
evaluation report on bbbc039/val under runs/default-eval/.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.training_arguments import training_parser  # noqa: E402
from segmenter.checkpoint import Checkpoint  # noqa: E402
from segmenter.registry import WEIGHTS_DIR  # noqa: E402
from segmenter.training import TrainConfig, train  # noqa: E402
from transforms import RandomDefocus  # noqa: E402

LEVELS = "0,2,4,8,12,16,20,28"
#: Largest training blur radius in px: real BBBC006 z = 00 planes match a pupil blur of 24-32 px
#: (scripts/calibrate_defocus.py).
MAX_BLUR = 32


def model_card(checkpoint_path: Path, config: TrainConfig, metrics: dict, command: str,
               postprocess: dict) -> str:
    overall, per_level = metrics["overall"], metrics["per_level"]
    baseline = metrics.get("connected_components", {}).get("per_level", {})
    rows = "\n".join(
        f"| {level} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['ap50']:.3f} | "
        f"{m['dice']:.3f} | {m['count_mape']:.1f}% | {baseline.get(level, {}).get('f1', float('nan')):.3f} |"
        for level, m in per_level.items())
    return f"""# Model card: {checkpoint_path.name}

The default cyseg model: a binary U-Net (nucleus vs background) whose mask is split into
nuclei by marker-controlled watershed on the distance transform.

- **Date**: {date.today().isoformat()}
- **Architecture**: U-Net, depth {config.depth}, {config.n_filters} filters at the first level
  doubling per level, batch norm, 1 input channel (grey; colour input is averaged), sigmoid output.
- **Input**: per-image percentile normalisation (1st–99.8th) with a noise floor: the span
  mapped to 1 is at least {config.normalization['min_snr']:g}× the pixel noise σ, so an empty field is not
  stretched until its noise looks like nuclei (in bbbc039/train the span is ≤ 11σ in the two
  empty fields and ≥ 100σ in every field with nuclei). Any size (padded), 8/16-bit.
- **Training data**: `bbbc039/train` (U2OS nuclei, Hoechst, CC0; Caicedo et al. 2019), 90% for
  training and a seeded 10% for checkpoint selection. `bbbc039/val` was not used for training or
  selection; the numbers below are on it.
- **Recipe**: random {config.crop}² crops, batch {config.batch_size}, {config.epochs} epochs ×
  {config.steps_per_epoch} steps, Adam (lr {config.lr}, cosine schedule), loss = BCE (seams
  between touching nuclei weighted ×{1 + config.seam_weight:g} and removed from the target) +
  soft Dice; augmentation: flips, 90° turns, translations, intensity jitter, empty-field crops
  (background level + pixel noise, probability {config.background_prob}) and optical defocus
  (circle of confusion softened by a Gaussian; levels {config.defocus_levels} px, probability
  {config.defocus_prob}); seed {config.seed}.
- **Post-processing**: threshold, hole filling, watershed split (markers `min_distance` apart),
  small objects removed; threshold, `min_distance` and minimum size chosen on the held-out 10%
  of train (`segmenter.tuning`): {postprocess}.
- **Reproduce**: `{command}`

## Validation (bbbc039/val, 20 images, IoU ≥ 0.5)

Blur level = radius in pixels of the synthetic optical defocus (`transforms.defocus`, seed 0).
The last column is the same masks turned into objects by plain connected components.

| blur | precision | recall | F1 | AP@0.5 | Dice | count MAPE | F1 (connected comp.) |
|---|---|---|---|---|---|---|---|
{rows}

Overall F1 {overall['f1']:.3f}, AP@0.5 {overall['ap50']:.3f}{f", NHM {metrics['nhm']:.3f}" if 'nhm' in metrics else ''}.

Evaluate again: `cyseg evaluate --model default --images ../shared/data/bbbc039/val/images
--labels ../shared/data/bbbc039/val/labels --defocus {LEVELS} --out runs/default-eval`
"""


def main() -> int:
    args = training_parser(__doc__.splitlines()[0], epochs=24).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = WEIGHTS_DIR / "unet-bbbc039-v2.pt"
    config = TrainConfig(data=[str(args.data / "bbbc039" / "train")], out=str(out), depth=4,
                         n_filters=12, crop=256, batch_size=8, epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch, lr=1e-3,
                         defocus_levels=list(range(1, MAX_BLUR + 1)), defocus_prob=0.7,
                         blur=asdict(RandomDefocus()), val_defocus_levels=[8, 20], pixel_size_um=None, seed=0,
                         device=args.device, resume=args.resume, bf16=True,
                         init_from=str(WEIGHTS_DIR / "unet-bbbc039.pt"))
    train(config)
    eval_dir = ROOT / "runs" / "default-eval"
    val = args.data / "bbbc039" / "val"
    subprocess.run([sys.executable, "-m", "cyseg", "evaluate", "--model", str(out), "--images",
                    str(val / "images"), "--labels", str(val / "labels"), "--defocus", LEVELS,
                    "--out", str(eval_dir)], check=True)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    command = "python scripts/train_default.py" + (f" --epochs {args.epochs}" if args.epochs != 24 else "")
    postprocess = Checkpoint.load(out).postprocess
    out.with_suffix(".md").write_text(model_card(out, config, metrics, command, postprocess))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
