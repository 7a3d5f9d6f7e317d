"""`cyseg evaluate`: score a model on labelled images, in focus and at synthetic blur levels."""
from __future__ import annotations

import argparse
from pathlib import Path

from cyseg.cli.train import float_list


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="score a model against instance labels",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--images", required=True, type=Path, help="folder of images")
    parser.add_argument("--labels", required=True, type=Path,
                        help="folder of uint16 instance labels with the images' file names")
    parser.add_argument("--defocus", type=float_list, default=[0.0], metavar="LEVELS",
                        help="blur levels in pixels, e.g. 0,2,4,8 (0 = in focus; default 0)")
    parser.add_argument("--sharp-levels", type=float_list, default=[0.0], metavar="LEVELS",
                        help="levels that count as sharp for NHM (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the defocus noise")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, report.md, plots")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import segmenter
    from cyseg.evaluation import evaluate
    from metrics import write_report
    from segmenter.datasets import load_labelled

    model = segmenter.load(args.model, device=args.device)
    evaluation = evaluate(model, load_labelled(args.images, args.labels), args.defocus, seed=args.seed)
    metrics = evaluation.metrics(tuple(args.sharp_levels))
    metrics["setup"] = dict(model=str(args.model), images=str(args.images), labels=str(args.labels),
                            levels=args.defocus, seed=args.seed)
    write_report(metrics, args.out, title=f"cyseg evaluation: {args.model} on {args.images}",
                 pr_curves=evaluation.pr_curves(), overlay=evaluation.overlay)
    overall = metrics["overall"]
    print(f"F1 {overall['f1']:.4f}  AP@0.5 {overall['ap50']:.4f}  count MAPE {overall['count_mape']:.1f}%"
          + (f"  NHM {metrics['nhm']:.4f}" if "nhm" in metrics else "") + f"  -> {args.out}/report.md")
    return 0
