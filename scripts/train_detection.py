"""Train the shipped detection models and compare transfer learning with training from scratch.

    .venv/bin/python scripts/train_detection.py [--data ../shared/data] [--epochs 8] [--bccd-epochs 6]

(the shipped model: --epochs 6 --steps-per-epoch 40 --bccd-epochs 4 --bccd-steps-per-epoch 25)

1. nuclei: the detection heads on our U-Net, initialised from the shipped default U-Net
   (`unet-bbbc039.pt`), trained on bbbc039/train with the default's defocus augmentation
   -> segmenter/weights/detection-bbbc039.pt (shipped as "detection").
2. BCCD (RBC, WBC, platelets; images halved to 320×240): the same network on colour input,
   (a) initialised from the nuclei detector with the encoder frozen for the first half of the
   epochs, then all layers (staged freezing); (b) from scratch, same steps.
   -> runs/detection/bccd-{transfer,scratch}.pt; not shipped yet (see the detection model card).
A finished model is kept (delete it to retrain). Results: benchmarks/results/detection.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmenter.checkpoint import Checkpoint  # noqa: E402
from segmenter.detection import DetectionSegmenter  # noqa: E402
from segmenter.box_datasets import load_voc  # noqa: E402
from segmenter.detection_training import DetectionTrainConfig, box_ap, train_detection  # noqa: E402
from segmenter.registry import WEIGHTS_DIR  # noqa: E402

BCCD_CLASSES = ["background", "RBC", "WBC", "Platelets"]
RESULTS = ROOT / "benchmarks" / "results" / "detection.json"


def train_once(config: DetectionTrainConfig) -> dict:
    """Train unless the output exists; the checkpoint's validation metrics and training time."""
    if not Path(config.out).is_file():
        train_detection(config)
    checkpoint = Checkpoint.load(config.out)
    return dict(val=checkpoint.metrics, seconds=checkpoint.training.get("seconds"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--bccd-epochs", type=int, default=6)
    parser.add_argument("--bccd-steps-per-epoch", type=int, default=30)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runs = ROOT / "runs" / "detection"
    runs.mkdir(parents=True, exist_ok=True)
    nuclei = DetectionTrainConfig(
        out=str(WEIGHTS_DIR / "detection-bbbc039.pt"), data=[str(args.data / "bbbc039" / "train")],
        init_from=str(WEIGHTS_DIR / "unet-bbbc039.pt"), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        lr=5e-4,
        defocus_levels=[1, 2, 3, 4, 6, 8], defocus_prob=0.5, device=args.device)
    results = {"nuclei": train_once(nuclei)}
    bccd = dict(voc=str(args.data / "bccd"), voc_scale=0.5, class_names=BCCD_CLASSES, in_channels=3,
                normalization={"kind": "percentile", "low": 1.0, "high": 99.8}, crop=192,
                epochs=args.bccd_epochs, steps_per_epoch=args.bccd_steps_per_epoch, background_prob=0.0,
                device=args.device)
    transfer = DetectionTrainConfig(out=str(runs / "bccd-transfer.pt"), init_from=nuclei.out,
                                    freeze_encoder_epochs=args.bccd_epochs // 2, **bccd)
    scratch = DetectionTrainConfig(out=str(runs / "bccd-scratch.pt"), **bccd)
    test = load_voc(args.data / "bccd", "test", BCCD_CLASSES, 0.5)
    for name, config in (("bccd_transfer", transfer), ("bccd_scratch", scratch)):
        results[name] = train_once(config)
        began = time.perf_counter()
        results[name]["test_ap50"] = box_ap(DetectionSegmenter(Checkpoint.load(config.out)), test)
        results[name]["test_seconds"] = round(time.perf_counter() - began, 1)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
