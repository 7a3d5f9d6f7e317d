"""`cyseg improve`: iterative data improvement of incomplete masks (train, predict, OR into the masks, repeat)."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from cyseg.cli.train import add_recipe_arguments, recipe_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("improve", help="complete incomplete masks by iterative data improvement (IDI)",
                                   description=__doc__.split(": ", 1)[1])
    parser.add_argument("--data", required=True, type=Path,
                        help="a `cyseg dataset` folder (its train split is improved, its val split validates) "
                             "or a folder with images/ and labels/")
    parser.add_argument("--out", required=True, type=Path, help="new or empty folder for the rounds")
    loop = parser.add_argument_group("the loop")
    loop.add_argument("--rounds", type=int, default=5, help="at most this many rounds (default 5)")
    loop.add_argument("--tolerance", type=float, default=0.01,
                      help="stop when a round grows the masks' foreground by less than this share (default 0.01)")
    loop.add_argument("--no-normalize", dest="normalize", action="store_false",
                      help="threshold raw probabilities (default: min-max normalise each channel per image first)")
    loop.add_argument("--min-span", type=float, default=0.2,
                      help="a probability range under this is not stretched to [0, 1] (default 0.2)")
    loop.add_argument("--threshold", type=float, default=0.5, help="on the (normalised) foreground (default 0.5)")
    loop.add_argument("--overlap", type=float, default=0.5,
                      help="a predicted object this much on an existing one extends it rather than adds one")
    loop.add_argument("--reference", default=None, metavar="DIR",
                      help="complete labels of the training images: score each round's masks (experiments)")
    loop.add_argument("--eval-data", action="append", default=[], metavar="DIR",
                      help="folder with images/ and complete labels/: score each round's model (repeatable)")
    add_recipe_arguments(parser.add_argument_group("training of each round (see `cyseg train`)"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cyseg.idi import IDIConfig, improve

    config = IDIConfig(rounds=args.rounds, tolerance=args.tolerance, normalize=args.normalize,
                       min_span=args.min_span, threshold=args.threshold, overlap=args.overlap,
                       reference=args.reference, eval_data=args.eval_data)
    training = recipe_config(args, data=[], out="")
    with tqdm(desc="IDI", unit="step") as bar:
        def progress(done: int, total: int, message: str) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix_str(message)

        result = improve(args.data, args.out, config, training, progress, train_progress=True)
    for metrics in result.rounds:
        masks = metrics["masks"]
        line = f"round {metrics['round']}: {masks['objects']} objects"
        if "change" in masks:
            line += f" (+{masks['added_objects']}, foreground +{100 * masks['change']:.1f}%)"
        if "reference" in masks:
            line += f", recall {masks['reference']['recall']:.3f} precision {masks['reference']['precision']:.3f}"
        print(line)
    print(f"{result.stopped}; improved dataset: {result.final_data}, model: {result.final_model}")
    return 0
