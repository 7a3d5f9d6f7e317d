"""Train the shipped brightfield nuclei models (`he`) on real stained tissue.

    .venv/bin/python scripts/train_brightfield.py [--data ../shared/data] [--epochs 30] [--resume]
    .venv/bin/python scripts/train_brightfield.py --bns --init-from segmenter/weights/unet-he.pt [--tune] ...
    .venv/bin/python scripts/train_brightfield.py --blur-robust --init-from segmenter/weights/unet-he.pt --tune ...

Two kinds, the same data, split, scale and stain augmentation: the binary U-Net (seam-weighted target,
marker watershed; `segmenter.training`) and, with `--bns`, the BNS network (background / interior /
boundary + deblurring decoders, the fluorescence default's defocus training per RGB channel;
`segmenter.bns_training`), which starts both branches from a binary U-Net of the same width.

Data: `he_train` (MoNuSeg H&E tiles, 40×, CC BY-NC-SA 4.0), `dsb2018/stained` and
`dsb2018/brightfield` (CC0). The model runs at `--pixel-size` (default 0.25 µm/px, 40×, the shipped
model's): `he_train` is resampled from 0.25 µm/px when another size is asked; the DSB tiles, whose pixel
size is unknown, are resampled so that their median nucleus has the median diameter of the `he_train`
nuclei. Validation: one `he_train` tile per organ, i.e. seven patients (every tile is a different
patient) never seen in training. The shipped weights were trained in stages (see the model card).

Writes segmenter/weights/unet-he.pt (bns-he.pt with `--bns`, or `--out`) and its training history; measure it with
benchmarks/brightfield_bench.py and record the numbers in its card (segmenter/weights/unet-he.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.training_arguments import training_parser  # noqa: E402
from segmenter.bns_training import GRID, BNSTrainConfig, train_bns  # noqa: E402
from segmenter.registry import SHIPPED, WEIGHTS_DIR  # noqa: E402
from segmenter.training import TrainConfig, train  # noqa: E402
from transforms import Normalization, PostProcess, RandomDefocus  # noqa: E402

PIXEL_SIZE_UM = 0.25
HE_PIXEL_SIZE_UM = 0.25
BNS_FILE = "bns-he.pt"
BNS_MAX_BLUR = 12  # px at 0.25 µm/px: the focus classifier calls stained tissue blurry from about 4-8 px
BLUR_ROBUST_LEVELS = [1, 2, 3, 4, 6, 8, 10, 12]  # px at 0.25 µm/px, up to BNS_MAX_BLUR
BNS_GRID = {**GRID, "min_size": (20, 40, 60, 80)}  # H&E nuclei at 40× are larger than BBBC039's at 20×
GLASS_SPAN = 64  # grey levels: crops and tiles of less contrast are blank (empty glass spans ~12)
# One tile per organ (seven patients) for model selection: lung, breast, colon, kidney, prostate, bladder, stomach.
VAL_TILES = ["monuseg_TCGA-21-5784-01Z-00-DX1", "monuseg_TCGA-A7-A13E-01Z-00-DX1",
             "monuseg_TCGA-AY-A8YK-01A-01-TS1", "monuseg_TCGA-HE-7129-01Z-00-DX1",
             "monuseg_TCGA-G9-6336-01Z-00-DX1", "monuseg_TCGA-DK-A2I6-01A-01-TS1",
             "monuseg_TCGA-KB-A93J-01A-01-TS1"]


def shared_settings(data: Path, out: Path, args: argparse.Namespace) -> dict:
    """The data, split, scale, crops and stain augmentation both model kinds train with."""
    folders = [data / "he_train", data / "dsb2018" / "stained", data / "dsb2018" / "brightfield"]
    return dict(
        data=[str(f) for f in folders], out=str(out), in_channels=3, depth=4, n_filters=16, crop=256,
        batch_size=8, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
        data_pixel_size_um=[HE_PIXEL_SIZE_UM, None, None], data_weights=[0.6, 0.25, 0.15],
        val_names=VAL_TILES, pixel_size_um=args.pixel_size, scale_range=(0.6, 2.0),
        stain_prob=0.8, jpeg_prob=0.3, background_prob=0.0,
        normalization=Normalization(kind="percentile", low=1.0, high=99.8, min_snr=20.0,
                                    min_span=GLASS_SPAN).to_dict(),
        tune_postprocess=args.tune, bf16=True, seed=0, device=args.device, resume=args.resume,
        init_from=args.init_from)


def config_for(data: Path, out: Path, args: argparse.Namespace) -> TrainConfig:
    """The binary U-Net (seam-weighted target + marker watershed), optical defocus 1-6 px per channel; with
    `--blur-robust`, the fluorescence default's defocus model (every PSF kind and the camera) per channel,
    1-12 px, and the checkpoint chosen on the mean F1 in focus and at 4 and 8 px of defocus."""
    blur = dict(defocus_levels=BLUR_ROBUST_LEVELS, defocus_prob=0.5, blur=asdict(RandomDefocus()),
                val_defocus_levels=[4, 8]) if args.blur_robust else \
        dict(defocus_levels=[1, 2, 3, 4, 6], defocus_prob=0.3, val_defocus_levels=[])
    return TrainConfig(**shared_settings(data, out, args), **blur,
                       postprocess=PostProcess(min_size=8, min_distance=3).to_dict())


def bns_config_for(data: Path, out: Path, args: argparse.Namespace) -> BNSTrainConfig:
    """The BNS network (background / interior / boundary + deblurring decoders): the fluorescence model's
    defocus training (`RandomDefocus`, every PSF kind and the camera) applied per RGB channel, 0-12 px."""
    return BNSTrainConfig(**shared_settings(data, out, args), max_blur=BNS_MAX_BLUR, blur_prob=0.5,
                          val_defocus_levels=[], tune_levels=[4, 8], tune_grid=BNS_GRID)


def main() -> int:
    parser = training_parser(__doc__.splitlines()[0], epochs=40)
    parser.add_argument("--pixel-size", type=float, default=PIXEL_SIZE_UM, help="µm/px the model runs at")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--init-from", default=None, help="a checkpoint of the same architecture to start from")
    parser.add_argument("--tune", action="store_true", help="tune the post-processing on the validation tiles")
    parser.add_argument("--blur-robust", action="store_true",
                        help="train the binary U-Net on defocus up to 12 px (every PSF kind, the camera) and choose the "
                             "checkpoint on in-focus, 4 and 8 px validation F1")
    parser.add_argument("--bns", action="store_true",
                        help="train the 3-class BNS network (boundary + deblurring decoders) instead of the binary U-Net")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default: segmenter/weights/{SHIPPED['he']} ({BNS_FILE} with --bns)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.bns:
        out = args.out or WEIGHTS_DIR / BNS_FILE
        checkpoint = train_bns(bns_config_for(args.data, out, args))
    else:
        out = args.out or WEIGHTS_DIR / SHIPPED["he"]
        checkpoint = train(config_for(args.data, out, args))
    print(json.dumps(checkpoint.metrics, indent=1))
    print(f"wrote {out} ({date.today().isoformat()}); measure it with benchmarks/brightfield_bench.py "
          f"and record the numbers in its card (segmenter/weights/unet-he.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
