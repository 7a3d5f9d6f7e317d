"""`cyseg dataset`: download crops and instance masks of chosen Cytomine annotations as a training dataset."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cyseg.cli.train import float_list
from cyseg.errors import CysegError


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="build a training dataset from a Cytomine project's annotations",
                                   description=__doc__.split(": ", 1)[1])
    server = parser.add_argument_group("Cytomine server (a credentials file, e.g. from `cyseg serve`, "
                                       "or the options; options win)")
    server.add_argument("--credentials", type=Path, default=None, metavar="FILE",
                        help="JSON with host, public_key, private_key and project_id")
    server.add_argument("--host", default=None, help="e.g. https://cytomine.example.org")
    server.add_argument("--public-key", default=None)
    server.add_argument("--private-key", default=None)
    server.add_argument("--project", type=int, default=None, help="project id")
    chosen = parser.add_argument_group("which annotations (each option can be repeated; none = all)")
    chosen.add_argument("--term", action="append", default=[], metavar="ID|NAME", help="annotations with this term")
    chosen.add_argument("--user", action="append", type=int, default=[], metavar="ID", help="annotations by this user")
    chosen.add_argument("--image", action="append", default=[], metavar="ID|NAME", help="annotations in this image")
    crops = parser.add_argument_group("crops")
    crops.add_argument("--zoom", type=int, default=0, help="zoom level: 0 = full resolution, 1 = half, ...")
    crops.add_argument("--crop-size", type=int, default=256, help="crop side in pixels of the zoom level")
    crops.add_argument("--layout", choices=("tiles", "around"), default="tiles",
                       help="tiles: a grid over the annotated region; around: crops centred on annotations")
    crops.add_argument("--split", type=float_list, default=[0.7, 0.15, 0.15], metavar="TRAIN,VAL,TEST",
                       help="shares of the slides in each split (default 0.7,0.15,0.15); a slide is in one split")
    crops.add_argument("--seed", type=int, default=0, help="seed of the split and of the augmentation")
    crops.add_argument("--augment", type=int, default=0, metavar="N",
                       help="N augmented copies (flips, 90° turns) of each training crop (default 0)")
    crops.add_argument("--defocus", type=float_list, default=[], metavar="LEVELS",
                       help="defocus the augmented copies at one of these blur levels in pixels, e.g. 2,4")
    parser.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    parser.set_defaults(func=run)


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """host, keys and project from the credentials file and the options."""
    values: dict[str, Any] = {}
    if args.credentials:
        try:
            values = json.loads(args.credentials.read_text())
        except (OSError, ValueError) as error:
            raise CysegError(f"cannot read the credentials file {args.credentials}: {error}") from error
    for key, option in (("host", args.host), ("public_key", args.public_key), ("private_key", args.private_key),
                        ("project_id", args.project)):
        if option is not None:
            values[key] = option
    missing = [key for key in ("host", "public_key", "private_key", "project_id") if values.get(key) is None]
    if missing:
        raise CysegError(f"missing {', '.join(missing)}: give --credentials FILE or the options "
                         f"--host, --public-key, --private-key, --project")
    return values


def connect(host: str, public_key: str, private_key: str) -> Any:
    """A connected, hardened client; CysegError when the server cannot be reached or refuses the keys (the
    client alone would wait two minutes for an unreachable server, then fail obscurely)."""
    import requests
    from cytomine import Cytomine

    from cyseg.cytomine.connection import describe, harden

    url = host if "://" in host else f"http://{host}"  # the client's default protocol
    try:
        requests.get(url, timeout=10)
    except requests.RequestException as error:
        raise CysegError(f"cannot reach the Cytomine server {host}: {describe(error)}") from error
    client = Cytomine(host, public_key, private_key, configure_logging=False, verbose=logging.WARNING)
    if not client.current_user:
        raise CysegError(f"the Cytomine server {host} refused the keys (public key {public_key})")
    harden(client)
    return client


def run(args: argparse.Namespace) -> int:
    from cyseg.dataset import DatasetConfig, Selection, build_dataset

    server = connection(args)
    if len(args.split) != 3:
        raise CysegError(f"--split takes three shares (train,val,test), got {args.split}")
    config = DatasetConfig(zoom=args.zoom, crop_size=args.crop_size, layout=args.layout, split=tuple(args.split),
                           seed=args.seed, augment=args.augment, defocus_levels=tuple(args.defocus))
    selection = Selection(int(server["project_id"]), tuple(args.term), tuple(args.user), tuple(args.image))
    connect(server["host"], server["public_key"], server["private_key"])
    with tqdm(desc="crops", unit="crop") as bar:
        def progress(done: int, total: int, message: str) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix_str(message, refresh=False)

        manifest = build_dataset(selection, config, args.out, progress)
    splits = ", ".join(f"{name} {split['crops']} crops from {len(split['slides'])} slide(s)"
                       for name, split in manifest["splits"].items() if split["crops"])
    print(f"{manifest['counts']['annotations']} annotations -> {manifest['counts']['crops']} crops in {args.out} "
          f"({splits}); train with: cyseg train --data {args.out / 'train'}"
          + (f" --val-data {args.out / 'val'}" if manifest["splits"]["val"]["crops"] else ""))
    return 0
