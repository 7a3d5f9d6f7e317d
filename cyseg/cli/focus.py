"""`cyseg focus`: focus-quality scores, heat maps and blurry regions of slides and images.

Writes `scores.json` (input file name → {"score", "blurry", "threshold", "kind", "size", "grid"};
score: higher = blurrier), and per input `<stem>.focus.png` (heat map over the thumbnail) and
`<stem>.blurry.geojson` (out-of-focus regions, level-0 pixels, origin top-left).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from cyseg.errors import CysegError


def register(subparsers) -> None:
    parser = subparsers.add_parser("focus", help="score focus quality and map blurry regions",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="slides (any OpenSlide format) or images (TIFF, PNG, JPEG)")
    parser.add_argument("--model", default="focus",
                        help="shipped focus model name or checkpoint path (default: the shipped classifier)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--stride", type=int, default=None,
                        help="window stride in px, a multiple of 5 (default: the window size minus 2)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="override the model's threshold (blurry = score above it)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for scoring (default 1: one convolution per window is cheap, and "
                             "slides are read by another thread alongside)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from cyseg.focus_map import focus_map, write_focus_outputs
    from segmenter.focus import load_focus_classifier

    stems = [path.stem for path in args.inputs]
    if len(set(stems)) != len(stems):
        raise CysegError("two inputs share a file name stem; their outputs would overwrite each other")
    if args.threads < 1:
        raise CysegError(f"--threads must be at least 1, got {args.threads}")
    classifier = load_focus_classifier(args.model, device=args.device, threshold=args.threshold)
    args.out.mkdir(parents=True, exist_ok=True)
    scores = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for path in tqdm(args.inputs, desc="focus", unit="input"):
            focus = focus_map(path, classifier, args.stride)
            write_focus_outputs(focus, args.out)
            scores[path.name] = focus.to_json()
    finally:
        torch.set_num_threads(threads)
    (args.out / "scores.json").write_text(json.dumps(scores))
    blurry = sum(entry["blurry"] for entry in scores.values())
    print(f"{blurry} of {len(scores)} input(s) blurry (threshold {classifier.threshold:.3f}); "
          f"results in {args.out}")
    return 0
