"""Iterative data improvement (IDI) on BBBC039 with nuclei removed from the training labels.

    .venv/bin/python scripts/idi_experiment.py [--data ../shared/data/bbbc039] [--out runs/idi-experiment]
        [--removal 0.5,0.8] [--rounds 4] [--epochs 20] [--steps-per-epoch 50] [--normalize on|off|both]

For each removal share, a seeded share of the nuclei of every bbbc039/train label image is removed (into a
temporary folder; the images are linked, not copied), and IDI runs on those incomplete labels for
`--rounds` rounds (tolerance 0 unless given, so every run has the same number of rounds). Per round it
records the instance recall and precision (IoU >= 0.5) of the masks against the complete labels and the
F1 of the round's model on bbbc039/val (never used for training or model selection: each training
validates on a seeded 10% of its own, incomplete, training labels). Baselines: the model trained on
the incomplete labels directly is IDI's round-1 model (same recipe, same seed); one model is trained on
the complete labels. Writes OUT/results.json, OUT/results.md, OUT/masks.png, OUT/f1.png and each IDI
run's folders (OUT/idi-50/round-*/...).

Small runs for a smoke test: --limit 8 --val-limit 4 --rounds 1 --epochs 1 --steps-per-epoch 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyseg.idi import IDIConfig, improve, pooled  # noqa: E402
from segmenter.datasets import find_pairs, read_image  # noqa: E402
from segmenter.registry import from_checkpoint  # noqa: E402
from segmenter.training import TrainConfig, train  # noqa: E402
from transforms import relabel_consecutive  # noqa: E402

log = logging.getLogger("idi_experiment")
SHARED = Path(os.environ.get("CYSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


def float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "bbbc039", help="folder with train/ and val/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "idi-experiment")
    parser.add_argument("--removal", type=float_list, default=[0.5, 0.8], help="shares of nuclei removed")
    parser.add_argument("--normalize", choices=("on", "off", "both"), default="on",
                        help="IDI's per-channel normalisation of the predictions (both = one run each)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=0.0, help="IDI stops early below this mask growth")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--val-limit", type=int, default=None, help="score on only the first N val images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    return parser.parse_args(argv)


def linked_folder(source: Path, target: Path, limit: int | None) -> Path:
    """`target` with images/ and labels/ linking to the first `limit` pairs of `source`."""
    for kind in ("images", "labels"):
        (target / kind).mkdir(parents=True)
    for image, labels in find_pairs(source / "images", source / "labels")[:limit]:
        (target / "images" / image.name).symlink_to(image.resolve())
        (target / "labels" / labels.name).symlink_to(labels.resolve())
    return target


def remove_nuclei(complete: Path, target: Path, share: float, seed: int) -> dict[str, int]:
    """`target`: the images of `complete` (linked) with `share` of each label image's nuclei removed
    (seeded per image); returns the nuclei counts kept and total."""
    (target / "images").mkdir(parents=True)
    (target / "labels").mkdir()
    kept = total = 0
    for index, (image, label_path) in enumerate(find_pairs(complete / "images", complete / "labels")):
        (target / "images" / image.name).symlink_to(image.resolve())
        labels = relabel_consecutive(read_image(label_path).astype(np.int64))
        count = int(labels.max())
        rng = np.random.default_rng([seed, round(share * 1000), index])
        removed = rng.choice(np.arange(1, count + 1), int(round(share * count)), replace=False)
        tifffile.imwrite(target / "labels" / f"{label_path.stem}.tif",
                         relabel_consecutive(np.where(np.isin(labels, removed), 0, labels)), compression="zlib")
        kept, total = kept + count - len(removed), total + count
    return dict(kept=kept, total=total)


def training_recipe(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(data=[], out="", depth=args.depth, n_filters=args.filters, crop=args.crop,
                       batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       seed=args.seed, device=args.device)


def complete_baseline(args: argparse.Namespace, complete: Path, val: Path) -> dict:
    """The model trained on the complete labels, scored on val."""
    started = time.time()
    out = args.out / "complete" / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = train(dataclasses.replace(training_recipe(args), data=[str(complete)], out=str(out)), progress=False)
    out.with_name("model.state.pt").unlink(missing_ok=True)  # only needed to resume that training
    model = from_checkpoint(checkpoint, device=args.device)
    samples = [(read_image(image), read_image(labels)) for image, labels in find_pairs(val / "images", val / "labels")]
    scores = pooled([(model.instances(image).labels, labels.astype(np.int64)) for image, labels in samples])
    return dict(model=str(out), val=scores, seconds=round(time.time() - started, 1))


def plot(results: dict, out: Path) -> None:
    """masks.png: recall and precision of the masks per round; f1.png: val F1 of each round's model."""
    runs = results["runs"]
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    for name, run in runs.items():
        rounds = [r["round"] for r in run["rounds"]]
        line, = axes.plot(rounds, [r["masks"]["reference"]["recall"] for r in run["rounds"]], marker="o",
                          label=f"{name}: recall")
        axes.plot(rounds, [r["masks"]["reference"]["precision"] for r in run["rounds"]], marker="s", linestyle="--",
                  color=line.get_color(), label=f"{name}: precision")
    axes.set(xlabel="round (0 = incomplete labels)", ylabel="against the complete labels (IoU ≥ 0.5)",
             title="Training masks per IDI round", ylim=(0, 1.02))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize="small")
    FigureCanvasAgg(figure).print_png(out / "masks.png")

    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    for name, run in runs.items():
        models = [r for r in run["rounds"] if "eval" in r]
        axes.plot([r["round"] - 1 for r in models], [next(iter(r["eval"].values()))["f1"] for r in models],
                  marker="o", label=name)
    axes.axhline(results["complete"]["val"]["f1"], color="black", linestyle=":", label="complete labels")
    axes.set(xlabel="masks of round (0 = incomplete labels directly)", ylabel="F1 on bbbc039/val (IoU ≥ 0.5)",
             title="Model trained on the masks of each round")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize="small")
    FigureCanvasAgg(figure).print_png(out / "f1.png")


def table(results: dict) -> str:
    """Markdown: per run and round, the masks' quality and the F1 of the model trained on them."""
    complete = results["complete"]["val"]
    lines = [f"Model trained on the complete labels: val F1 {complete['f1']:.3f} "
             f"(precision {complete['precision']:.3f}, recall {complete['recall']:.3f}).", ""]
    for name, run in results["runs"].items():
        lines += [f"### {name} ({run['stopped']})", "",
                  "| masks of round | objects | recall | precision | pixel recall | pixel precision | "
                  "model trained on them: val F1 | val precision | val recall |",
                  "|---|---|---|---|---|---|---|---|---|"]
        by_round = {r["round"]: r for r in run["rounds"]}
        for number, metrics in by_round.items():
            masks, reference = metrics["masks"], metrics["masks"]["reference"]
            trained = by_round.get(number + 1, {}).get("eval")
            score = next(iter(trained.values())) if trained else None
            model = (f"{score['f1']:.3f} | {score['precision']:.3f} | {score['recall']:.3f}" if score
                     else "(not trained) | | ")
            lines.append(f"| {number} | {masks['objects']} | {reference['recall']:.3f} | "
                         f"{reference['precision']:.3f} | {reference['pixel_recall']:.3f} | "
                         f"{reference['pixel_precision']:.3f} | {model} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cyseg-idi-") as temporary:
        work = Path(temporary)
        complete = linked_folder(args.data / "train", work / "complete", args.limit)
        val = linked_folder(args.data / "val", work / "val", args.val_limit)
        results: dict = dict(setup={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                             runs={})
        log.info("baseline: training on the complete labels")
        results["complete"] = complete_baseline(args, complete, val)
        normalizations = {"on": [True], "off": [False], "both": [True, False]}[args.normalize]
        for share in args.removal:
            incomplete = work / f"incomplete-{round(100 * share)}"
            counts = remove_nuclei(complete, incomplete, share, args.seed)
            for normalize in normalizations:
                name = f"{round(100 * share)}% removed" + ("" if normalize else ", no normalisation")
                log.info("IDI: %s (%d of %d nuclei kept)", name, counts["kept"], counts["total"])
                folder = args.out / f"idi-{round(100 * share)}{'' if normalize else '-raw'}"
                config = IDIConfig(rounds=args.rounds, tolerance=args.tolerance, normalize=normalize,
                                   reference=str(complete / "labels"), eval_data=[str(val)])
                run_started = time.time()
                result = improve(incomplete, folder, config, training_recipe(args))
                results["runs"][name] = dict(folder=str(folder), nuclei=counts, stopped=result.stopped,
                                             seconds=round(time.time() - run_started, 1), rounds=result.rounds)
        results["seconds"] = round(time.time() - started, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, args.out)
    (args.out / "results.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
