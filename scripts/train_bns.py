"""Train the BNS model (blur-robust Y-forked U-Net) on BBBC039 and write its model card.

    .venv/bin/python scripts/train_bns.py [--data ../shared/data] [--epochs 12] [--steps-per-epoch 100] [--resume]

Starts from the shipped plain U-Net, `unet` (same width; the same seeded 10% of bbbc039/train held out), or
trains a BNS model on (`--init-from` a BNS checkpoint, e.g. with a lower `--lr`).
Writes segmenter/weights/bns-bbbc039.pt (+ .md model card, + training history) and the evaluation
report on bbbc039/val under runs/bns-bbbc039-eval/.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.card_tables import shared_sections  # noqa: E402
from scripts.training_arguments import training_parser  # noqa: E402
from segmenter.bns_training import BNSTrainConfig, train_bns  # noqa: E402
from segmenter.checkpoint import Checkpoint  # noqa: E402
from segmenter.registry import SHIPPED, WEIGHTS_DIR  # noqa: E402

LEVELS = "0,2,4,8,12,16,20,28"


def level_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def start(config: BNSTrainConfig) -> str:
    """Where the run started: the plain U-Net, or a BNS model and how that one was trained."""
    if not config.init_from:
        return "Started from random weights."
    source = Checkpoint.load(config.init_from)
    name = Path(config.init_from).name
    if source.family != "bns":
        return f"Started from the shipped plain U-Net (`{name}`: encoder and decoder weights into both branches)."
    before = source.training.get("config", {})
    return (f"Fine-tuned from the BNS model `{name}`, itself {before.get('epochs')} epochs × "
            f"{before.get('steps_per_epoch')} steps at lr {before.get('lr')} from "
            f"`{Path(before.get('init_from') or 'random').name}`.")


def precision_text(checkpoint: Checkpoint) -> str:
    """How a run computed: bf16 autocast + channels_last where the CPU has native bf16, else fp32."""
    precision = checkpoint.training.get("precision")
    done = f" (this run: {precision})" if precision else ""
    return f"bf16 autocast + channels_last where the device runs bf16 natively, else fp32{done}"


def model_card(checkpoint: Checkpoint, path: Path, config: BNSTrainConfig, metrics: dict, command: str,
               levels: str) -> str:
    shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
    per_level, calls = metrics["per_level"], metrics.get("classifier_error", {})
    rows = "\n".join(
        f"| {level} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['ap50']:.3f} | {m['dice']:.3f} | "
        f"{m['count_mape']:.1f}% | {calls.get(level, float('nan')):.0%} |" for level, m in per_level.items())
    tuned = checkpoint.metrics.get("val_f1_tuned_postprocess", {})
    sets = "\n".join(f"  - {name}: {checkpoint.postprocess[name]}"
                     + (f" (F1 {tuned[name]['f1']:.3f} on {tuned[name]['images']} held-out images)" if name in tuned else "")
                     for name in ("sharp", "blurry"))
    data = checkpoint.training["data"]
    return f"""# Model card: {path.name}

BNS (blur-robust nucleus segmentation, seed 002): a U-Net with a Y-forked decoder. One encoder
feeds a 3-class segmentation decoder (background / nucleus interior / boundary) and a deblurring
decoder; nuclei come from a boundary-aware marker watershed whose values follow the tile's focus.

- **Date**: {date.today().isoformat()}
- **Architecture**: U-Net encoder, depth {config.depth}, {config.n_filters} filters at the first level doubling
  per level, batch norm, 1 input channel (grey; colour input is averaged); two decoders of the
  same shape: softmax over background / interior / boundary (boundary = each nucleus's
  one-pixel outline and the seams between touching nuclei), and a residual deblurred image
  (added to the normalised input). The deblurring decoder only runs when asked (`deblur`), so
  segmenting costs one plain U-Net of the same width. {start(config)}
- **Input**: per-image percentile normalisation (1st–99.8th), span at least
  {config.normalization['min_snr']:g}× the pixel noise σ, as the default model. Any size (padded), 8/16-bit.
- **Training data**: `bbbc039/train` (U2OS nuclei, Hoechst, CC0; Caicedo et al. 2019):
  {data['n_train']} images for training, a seeded {config.val_fraction:.0%} ({data['n_val']} images, the
  default model's held-out set) for checkpoint selection and post-processing tuning.
  `bbbc039/val` was not used for training, selection or tuning; the numbers below are on it.
- **Recipe**: random {config.crop}² crops, batch {config.batch_size}, {config.epochs} epochs × {config.steps_per_epoch}
  steps, Adam (lr {config.lr}, cosine schedule), {precision_text(checkpoint)}; augmentation:
  flips, 90° turns, translations, intensity jitter, empty fields (probability {config.background_prob}),
  then with probability {config.blur_prob} `transforms.RandomDefocus` (pupil / optical / Gaussian / disk
  PSF with drawn aberrations, shot + read noise, background, transmission) at a level drawn from
  0..{config.max_blur} px. Loss = cross-entropy (boundary ×{config.boundary_weight:g}) + {config.mse_weight:g}·MSE +
  {config.l1_weight:g}·L1 of the deblurred output against the clean normalised crop. Selection: mean F1 on
  the held-out images in focus and at {config.val_defocus_levels} px; seed {config.seed}.
- **Post-processing**: nuclei = interior + boundary > threshold (holes filled); markers =
  interior − boundary > marker threshold (at least `min_marker_size` px); the markers flood the
  nuclei over boundary − interior; small objects removed. Quality control: the embedded FocusLiteNN
  classifier (`{config.focus_model}`, threshold {checkpoint.children['focus']['threshold']:.3f}) calls each tile sharp or
  blurry and the tile gets that set; each set tuned on the held-out images (in focus and at
  {config.tune_levels} px, optical defocus) that the classifier sends to it:
{sets}
- **Reproduce**: `{command}`

## Validation (bbbc039/val, IoU ≥ 0.5)

Blur level = radius in pixels of the synthetic optical defocus (`transforms.defocus`, seed 0);
the last column is the share of images the focus classifier called wrongly (blurry at 0, sharp above).

| blur | precision | recall | F1 | AP@0.5 | Dice | count MAPE | QC error |
|---|---|---|---|---|---|---|---|
{rows}

Overall F1 {metrics['overall']['f1']:.3f}, AP@0.5 {metrics['overall']['ap50']:.3f}{f", NHM {metrics['nhm']:.3f}" if 'nhm' in metrics else ''}.

{shared_sections()}
Evaluate again: `cyseg evaluate --model {shown} --images ../shared/data/bbbc039/val/images
--labels ../shared/data/bbbc039/val/labels --defocus {levels} --out runs/{path.stem}-eval`
"""


def main() -> int:
    parser = training_parser(__doc__.splitlines()[0], epochs=12, steps_per_epoch=100)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "bns-bbbc039.pt")
    parser.add_argument("--init-from", type=Path, default=WEIGHTS_DIR / SHIPPED["unet"],
                        help="the plain U-Net to start from, or a BNS model to train on")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-levels", default=LEVELS, help="blur levels of the bbbc039/val evaluation")
    parser.add_argument("--tune-levels", type=level_list, default=[8, 16, 24],
                        help="blur levels of the post-processing tuning (with 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = BNSTrainConfig(data=[str(args.data / "bbbc039" / "train")], out=str(args.out), depth=4, n_filters=12,
                            crop=256, batch_size=8, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                            lr=args.lr, max_blur=32, blur_prob=0.7, tune_levels=args.tune_levels, seed=0, device=args.device,
                            resume=args.resume, bf16=True, init_from=str(args.init_from))
    checkpoint = train_bns(config)
    eval_dir = ROOT / "runs" / f"{args.out.stem}-eval"
    val = args.data / "bbbc039" / "val"
    subprocess.run([sys.executable, "-m", "cyseg", "evaluate", "--model", str(args.out), "--images",
                    str(val / "images"), "--labels", str(val / "labels"), "--defocus", args.eval_levels,
                    "--out", str(eval_dir)], check=True)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    command = " ".join(["python scripts/train_bns.py", *sys.argv[1:]]).replace(" --resume", "")
    card = model_card(checkpoint, args.out, config, metrics, command, args.eval_levels)
    args.out.with_suffix(".md").write_text(card)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
