"""`cyseg evaluate`: score a model on labelled images, in focus and at synthetic blur levels."""
from __future__ import annotations

import argparse
from pathlib import Path

from cyseg.cli.train import float_list, positive_float
from transforms.defocus import KINDS


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="score a model against instance labels",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto",
                        help="shipped model name, checkpoint path, or auto (default: per image, the shipped model "
                             "of its modality, brightfield or fluorescence); several, comma-separated, are "
                             "compared side by side (each gets its own report in OUT/<name>)")
    parser.add_argument("--pixel-size", type=positive_float, default=None, metavar="UM",
                        help="the images' pixel size in µm (default: unknown, estimated from the nuclei for a model "
                             "that records its own pixel size)")
    parser.add_argument("--images", required=True, type=Path, help="folder of images")
    parser.add_argument("--labels", required=True, type=Path,
                        help="folder of uint16 instance labels with the images' file names")
    parser.add_argument("--defocus", type=float_list, default=[0.0], metavar="LEVELS",
                        help="blur levels in pixels, e.g. 0,2,4,8 (0 = in focus; default 0)")
    parser.add_argument("--psf", default="optical", choices=KINDS,
                        help="the defocus PSF of the blur levels (default optical; see transforms.defocus)")
    parser.add_argument("--sharp-levels", type=float_list, default=[0.0], metavar="LEVELS",
                        help="levels that count as sharp for NHM (default 0)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average the network's probabilities over the eight flips and "
                             "turns of each image (up to eight times slower; U-Net models: default, unet, he, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the defocus noise")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--backend", default="auto",
                        help="how the network runs: auto (default: OpenVINO on a CPU, PyTorch on a GPU), torch, openvino")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, report.md, plots")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cyseg.evaluation import evaluate
    from metrics import write_report
    from metrics.comparison import write_comparison
    from segmenter.datasets import load_labelled
    from segmenter.picker import ModelPicker

    models = [name for name in str(args.model).split(",") if name]
    samples = load_labelled(args.images, args.labels)
    compared = {}
    for name in models:
        out = args.out if len(models) == 1 else args.out / Path(name).stem
        picker = ModelPicker(name, device=args.device, backend=args.backend, **({"tta": True} if args.tta else {}))
        evaluation = evaluate(picker, samples, args.defocus, seed=args.seed,
                              pixel_size_um=args.pixel_size, psf=args.psf)
        metrics = evaluation.metrics(tuple(args.sharp_levels))
        metrics["setup"] = dict(model=name, images=str(args.images), labels=str(args.labels),
                                levels=args.defocus, psf=args.psf, seed=args.seed, pixel_size_um=args.pixel_size,
                                tta=args.tta,
                                models=evaluation.choices)
        write_report(metrics, out, title=f"cyseg evaluation: {name} on {args.images}",
                     pr_curves=evaluation.pr_curves(), overlay=evaluation.overlay)
        overall = metrics["overall"]
        print(f"{name}: F1 {overall['f1']:.4f}  AP@0.5 {overall['ap50']:.4f}  count MAPE {overall['count_mape']:.1f}%"
              + (f"  NHM {metrics['nhm']:.4f}" if "nhm" in metrics else "") + f"  -> {out}/report.md")
        compared[Path(name).stem] = metrics
    if len(models) > 1:
        print(f"comparison -> {write_comparison(compared, args.out, title=f'cyseg models on {args.images}')}")
    return 0
