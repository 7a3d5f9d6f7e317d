"""The command line the training scripts of shipped models share: data folder, length, device, resume."""
from __future__ import annotations

import argparse
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def training_parser(description: str, epochs: int, steps_per_epoch: int = 50) -> argparse.ArgumentParser:
    """A parser with --data, --epochs, --steps-per-epoch, --device and --resume; scripts add their own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--steps-per-epoch", type=int, default=steps_per_epoch)
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    return parser
