"""`cyseg train`: train a U-Net on folders of images + uint16 instance labels."""
from __future__ import annotations

import argparse


def float_list(text: str) -> list[float]:
    """'0,2,4' -> [0.0, 2.0, 4.0] (argparse type)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def positive_float(text: str) -> float:
    """A number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def add_recipe_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The training recipe's options (shared by every command that trains)."""
    parser.add_argument("--val-data", action="append", default=[], metavar="DIR",
                        help="validation folder (default: hold out --val-fraction of the training data)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--in-channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--filters", type=int, default=16, help="filters at the first level")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--defocus", type=float_list, default=[], metavar="LEVELS",
                        help="defocus augmentation blur levels in pixels, e.g. 2,4,8")
    parser.add_argument("--defocus-prob", type=float, default=0.5)
    parser.add_argument("--pixel-size", type=float, default=None, help="µm per pixel of the data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")


def recipe_config(args: argparse.Namespace, data: list[str], out: str, resume: bool = False):
    """The `TrainConfig` that `add_recipe_arguments`' options describe."""
    from segmenter.training import TrainConfig

    return TrainConfig(
        data=data, out=out, val_data=args.val_data, val_fraction=args.val_fraction,
        in_channels=args.in_channels, depth=args.depth, n_filters=args.filters, crop=args.crop,
        batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        lr=args.lr, defocus_levels=args.defocus, defocus_prob=args.defocus_prob,
        pixel_size_um=args.pixel_size, seed=args.seed, device=args.device, resume=resume)


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a U-Net segmenter",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="folder with images/ and labels/ (repeat to combine folders)")
    parser.add_argument("--out", required=True, help="checkpoint to write (the best on validation)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's .state.pt")
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segmenter.training import train

    checkpoint = train(recipe_config(args, args.data, args.out, args.resume))
    print(f"wrote {args.out}: validation F1 {checkpoint.metrics.get('val_f1')}")
    return 0
