"""Train the shipped FocusLiteNN focus classifiers and write their model cards.

    .venv/bin/python scripts/train_focus.py [--data ../shared/data] [--kernels 1,2,10] [--loss pearson]

Writes segmenter/weights/focuslitenn-<k>.pt (Pearson loss) or focuslitenn-<k>-mse.pt (MSE loss),
each with a .md model card. The training images are blurred once and shared by every model of
the run. bbbc006_z00 and bbbc039/val are only scored at the end, as a test (never for training,
calibration or the threshold).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmenter.checkpoint import Checkpoint  # noqa: E402
from segmenter.focus import FocusClassifier  # noqa: E402
from segmenter.focus_training import (FocusTrainConfig, prepare_data, real_defocus_rates,  # noqa: E402
                                      train_focus)
from segmenter.registry import WEIGHTS_DIR  # noqa: E402


def model_name(kernels: int, loss: str) -> str:
    return f"focuslitenn-{kernels}" + ("" if loss == "pearson" else f"-{loss}")


def model_card(name: str, checkpoint: Checkpoint, command: str, default: bool) -> str:
    config, data = checkpoint.training["config"], checkpoint.training["data"]
    content = config["content"]
    held, test = checkpoint.metrics["holdout"], checkpoint.metrics["test_real_defocus"]
    n_params = sum(v.numel() for v in checkpoint.state_dict.values())
    sources = "\n".join(f"| {source} | {d['train']} | {d['crops']} | {d['holdout']} |" for source, d in data.items())
    per_level = " | ".join(f"{level} px: {score:.2f}" for level, score in held["mean_score_per_level"].items())
    per_source = "\n".join(f"| {source} | {m['roc_auc']:.3f} | {m['sharp_called_sharp']:.1%} | "
                           f"{m['blurry_called_blurry']:.1%} |" for source, m in held["per_source"].items())
    loss = ("1 − Pearson correlation over the batch (the paper's PLCC loss), then calibrated: a "
            "least-squares affine map from score to blur level on the held-out set, folded into the last layer"
            if config["loss"] == "pearson" else "MSE between score and blur level (absolute scores, no calibration)")
    return f"""# Model card: {name}.pt

FocusLiteNN focus-quality classifier (after Wang et al., "FocusLiteNN: High Efficiency Focus
Quality Assessment for Digital Pathology", MICCAI 2020; architecture re-implemented from the
paper, weights trained by this project; the authors' weights are not used).

- **Date**: {checkpoint.training['date']} (torch {checkpoint.training['torch']})
- **Role**: {"the default focus classifier (best held-out ROC-AUC of the variants trained together)"
             if default else "an alternative; the default is the variant with the best held-out ROC-AUC"}
- **Architecture**: {config['kernels']} kernel(s) 7×7, stride 5, on RGB (grey fed as equal channels);
  {'global min pooling' if config['kernels'] == 1 else 'min and max pooling combined by a weighted sum'};
  {n_params} parameters.
- **Score**: higher = blurrier, an estimate of the defocus radius in pixels of the optical model in
  `transforms.defocus`. **Blurry** = score > threshold = **{checkpoint.threshold:.3f}**.
- **Input**: grey or RGB, 8/16-bit or float, scored on {config['patch_size']}-px windows, each scaled to
  [0, 1] between its darkest and brightest samples (one per 5×5 px). An input's score is the median
  over windows with content: sample span > {content['min_contrast']} × the input's 1st–99.8th percentile range
  and > {content['min_snr']} × its noise, grey-level std > {content['min_spread']} × that range. An input without
  content has no score (NaN) and is not blurry.
- **Training data** (in focus, from `../shared/data`; a seeded {config['holdout_fraction']:.0%} of each
  source held out):

| source | training images | crops | held-out images |
|---|---|---|---|
{sources}

  DSB 2018 fluorescence fields of 520×696 px are excluded: they come from the BBBC039/BBBC006
  acquisition and include fields of `bbbc039/val`, which is kept for testing.
- **Synthetic blur**: per training image {config['levels_per_image']} levels (0 px with probability
  {config['sharp_fraction']}, else uniform in [0, {config['max_level']}] px), PSF optical 60% / Gaussian 20% /
  disk 20%, Poisson noise (300–30000 photons at the brightest pixel, log-uniform) and read noise
  (0–0.6% of the range); the whole image is blurred, then one crop with content is kept and
  scaled like a window.
- **Recipe**: loss {loss}; Adam, lr {config['lr']}, cosine schedule, {config['steps']} steps of batch
  {config['batch_size']} (equal share per source), random flips and 90° turns; {config['restarts']}
  initialisations trained {config['restart_steps']} steps each, the lowest-loss one continued; seed {config['seed']}.
- **Threshold**: chosen on {checkpoint.training['threshold_chosen_on']} (best balanced accuracy).
  Nothing was tuned on `bbbc039/val` or `bbbc006_z00`.
- **Reproduce**: `{command}`

## Held-out synthetic blur ({len(held['mean_score_per_level'])} levels, optical PSF with noise)

PLCC {held['plcc']:.3f}, SRCC {held['srcc']:.3f}, ROC-AUC (sharp ≤ {config['sharp_max']} px vs blurry ≥
{config['blurry_min']} px) {held['roc_auc']:.3f}, balanced accuracy at the threshold {held['balanced_accuracy']:.3f}.

Mean score per level: {per_level}

| source | ROC-AUC | sharp called sharp | blurry called blurry |
|---|---|---|---|
{per_source}

## Test on real defocus (not used for any choice)

| set | images | result |
|---|---|---|
| `bbbc006_z00/images` (real strong optical defocus) | {test['n_z00']} | {test['z00_called_blurry']:.1%} called blurry |
| `bbbc039/val/images` (in focus) | {test['n_val']} | {test['val_called_sharp']:.1%} not called blurry ({test['val_without_content']} without content) |

ROC-AUC z00 vs val (images with a score): {test['roc_auc']:.3f}.

## Known limitations

- The score measures edge sharpness relative to each window's contrast: a window where a bright
  out-of-focus object (debris, a fibre) sets the contrast reads blurry even if dim in-focus
  nuclei lie beside it, and smooth low-texture tissue reads blurrier than dense tissue.
- Trained on synthetic defocus only (no real z-stacks); the score is an estimate of the optical
  model's blur radius at the training images' scale, not a physical distance.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="shared data folder")
    parser.add_argument("--kernels", default="1,2,10", help="comma-separated kernel counts")
    parser.add_argument("--loss", default="pearson", choices=["pearson", "mse"])
    parser.add_argument("--steps", type=int, default=FocusTrainConfig.steps)
    parser.add_argument("--levels-per-image", type=int, default=FocusTrainConfig.levels_per_image)
    parser.add_argument("--seed", type=int, default=FocusTrainConfig.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(["scripts/train_focus.py", *sys.argv[1:]])
    base = FocusTrainConfig(data=args.data, loss=args.loss, steps=args.steps,
                            levels_per_image=args.levels_per_image, seed=args.seed)
    data = prepare_data(base)
    trained = {}
    for kernels in (int(k) for k in args.kernels.split(",")):
        config = FocusTrainConfig(**{**vars(base), "kernels": kernels})
        checkpoint = train_focus(config, data)
        checkpoint.metrics["test_real_defocus"] = real_defocus_rates(FocusClassifier.from_checkpoint(checkpoint),
                                                                     args.data)
        trained[model_name(kernels, args.loss)] = checkpoint
    best = max(trained, key=lambda name: trained[name].metrics["holdout"]["roc_auc"])
    rows = []
    for name, checkpoint in trained.items():
        checkpoint.save(args.out / f"{name}.pt")
        (args.out / f"{name}.md").write_text(model_card(name, checkpoint, command, default=name == best))
        held, test = checkpoint.metrics["holdout"], checkpoint.metrics["test_real_defocus"]
        rows.append(f"{name:18} thr {checkpoint.threshold:6.3f}  held-out AUC {held['roc_auc']:.3f} "
                    f"bal.acc {held['balanced_accuracy']:.3f} SRCC {held['srcc']:.3f} | z00 blurry "
                    f"{test['z00_called_blurry']:.1%}  val sharp {test['val_called_sharp']:.1%}  AUC {test['roc_auc']:.3f}")
    print("\n".join(rows))
    print(f"default (best held-out ROC-AUC): {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
