"""`cyseg segment`: write a uint16 instance label TIFF and GeoJSON polygons per input image."""
from __future__ import annotations

import argparse
from pathlib import Path

import tifffile
from tqdm import tqdm

from cyseg.errors import CysegError


def register(subparsers) -> None:
    parser = subparsers.add_parser("segment", help="segment images into nuclei",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (TIFF, PNG, JPEG)")
    parser.add_argument("--model", default="default",
                        help="shipped model name or checkpoint path (default: the shipped default)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--threshold", type=float, default=None, help="override the model's threshold")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import segmenter
    from cyseg.polygons import feature_collection, label_polygons, write_geojson
    from segmenter.datasets import read_image

    stems = [image.stem for image in args.images]
    if len(set(stems)) != len(stems):
        raise CysegError("two inputs share a file name stem; their outputs would overwrite each other")
    options = {} if args.threshold is None else {"threshold": args.threshold}
    model = segmenter.load(args.model, device=args.device, **options)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in tqdm(args.images, desc="segmenting", unit="image"):
        found = model.instances(read_image(path))
        tifffile.imwrite(args.out / f"{path.stem}.tif", found.labels.astype("uint16"),
                         compression="zlib")
        polygons = label_polygons(found.labels)
        items = [(polygon, {"label": label, "score": round(float(found.scores[label - 1]), 4),
                            "class": model.class_names[found.classes[label - 1]]})
                 for label, polygon in polygons.items()]
        write_geojson(args.out / f"{path.stem}.geojson", feature_collection(items))
        total += len(found)
    print(f"{total} objects in {len(args.images)} image(s); results in {args.out}")
    return 0
