"""`cyseg segment`: write a uint16 instance label TIFF and GeoJSON polygons per input image (and, with
--deblurred, the deblurred image of a model that has a deblurring head)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import tifffile
from tqdm import tqdm

from cyseg.cli.train import positive_float
from cyseg.errors import CysegError

MODELS_FILE = "models.json"  # image file name -> the model picked for it and why


def register(subparsers) -> None:
    parser = subparsers.add_parser("segment", help="segment images into nuclei",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (TIFF, PNG, JPEG)")
    parser.add_argument("--model", default="auto",
                        help="shipped model name, checkpoint path, or auto (default: per image, the shipped model "
                             "of its modality, brightfield or fluorescence)")
    parser.add_argument("--pixel-size", type=positive_float, default=None, metavar="UM",
                        help="the images' pixel size in µm (default: unknown, estimated from the nuclei for a model "
                             "that records its own pixel size)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--deblurred", action="store_true",
                        help="also write the model's deblurred image (float32 TIFF, normalised intensities) per input; "
                             "needs a model with a deblurring head (bns)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average the network's probabilities over the eight flips and "
                             "turns of each image (up to eight times slower; U-Net models: default, unet, he, ...)")
    parser.add_argument("--threshold", type=float, default=None, help="override the model's threshold")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--backend", default="auto",
                        help="how the network runs: auto (default: OpenVINO on a CPU, PyTorch on a GPU), torch, openvino")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cyseg.polygons import feature_collection, label_polygons, write_geojson
    from segmenter.datasets import read_image
    from segmenter.picker import ModelPicker

    stems = [image.stem for image in args.images]
    if len(set(stems)) != len(stems):
        raise CysegError("two inputs share a file name stem; their outputs would overwrite each other")
    options = ({} if args.threshold is None else {"threshold": args.threshold}) | ({"tta": True} if args.tta else {})
    picker = ModelPicker(args.model, device=args.device, backend=args.backend, **options)
    if args.deblurred and args.model != "auto":
        _deblurring(picker.load(args.model)[1], args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    total, choices = 0, {}
    for path in tqdm(args.images, desc="segmenting", unit="image"):
        image = read_image(path)
        picked = picker.pick(image, args.pixel_size)
        tqdm.write(f"{path.name}: {picked.describe()}")
        choices[path.name] = picked.to_dict()
        model = picked.model
        found = model.instances(image)
        tifffile.imwrite(args.out / f"{path.stem}.tif", found.labels.astype("uint16"),
                         compression="zlib")
        polygons = label_polygons(found.labels)
        items = [(polygon, {"label": label, "score": round(float(found.scores[label - 1]), 4),
                            "class": model.class_names[found.classes[label - 1]]})
                 for label, polygon in polygons.items()]
        write_geojson(args.out / f"{path.stem}.geojson", feature_collection(items))
        if args.deblurred:
            tifffile.imwrite(args.out / f"{path.stem}-deblurred.tif", _deblurring(model, picked.name).deblur(image),
                             compression="zlib")
        total += len(found)
    (args.out / MODELS_FILE).write_text(json.dumps(choices, indent=1))
    print(f"{total} objects in {len(args.images)} image(s); results in {args.out} (models chosen: {MODELS_FILE})")
    return 0


def _deblurring(model, name: str):
    """`model` when it can deblur; a clear error otherwise."""
    if not hasattr(model, "deblur"):
        raise CysegError(f"--deblurred needs a model with a deblurring head (bns); {name} has none")
    return model
