"""`cyseg bench`: throughput of the job's workflow against the plain sldc-cytomine path, side by side."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tqdm import tqdm


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the job's workflow against plain sldc-cytomine",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None,
                        help="slide file (default: a generated synthetic slide of --width x --height)")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--height", type=int, default=3072)
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--backend", default="auto",
                        help="how cyseg's variants run the network: auto (default), torch, openvino; the sldc "
                             "baseline runs it in PyTorch fp32")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--tile-overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every variant (alternating order); the fastest of each is kept")
    parser.add_argument("--out", type=Path, default=Path("runs/bench.json"), help="results file (JSON)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cyseg.demo_slide import write_demo_slide
    from cyseg.errors import CysegError
    from cyseg.job.bench import VARIANTS, BenchSettings, run_bench

    if args.repeats < 1:
        raise CysegError("--repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="cyseg-bench-") as temporary:
        work = Path(temporary)
        slide = args.slide
        if slide is None:
            slide = write_demo_slide(work / "slides" / "bench.tif", args.width, args.height).path
        elif not slide.is_file():
            raise CysegError(f"slide {slide} not found")
        settings = BenchSettings(slide.resolve(), args.model, args.device, args.backend, args.tile_size,
                                 args.tile_overlap, args.batch_size)
        with tqdm(total=args.repeats * len(VARIANTS), desc="bench", unit="run") as bar:
            def done(name: str) -> None:
                bar.set_postfix_str(f"{name} done")
                bar.update(1)

            results = run_bench(settings, work, args.repeats, on_step=done)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for kind, values in results["model_alone_runs_mpix_per_s"].items():
        print(f"model alone on {results['device']} ({kind}), around its runs: "
              + ", ".join(f"{value:.3f}" for value in values) + " Mpix/s")
    print(f"{'variant':<22}{'Mpix/s':>8}{'model':>8}{'x sldc':>8}{'adjusted':>10}{'of model':>10}{'pipeline':>10}"
          "  stages (s)")
    for name, result in results["variants"].items():
        stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in result["stages_s"].items())
        print(f"{name:<22}{result['mpix_per_s']:>8.3f}{result['model_alone_mpix_per_s']:>8.3f}"
              f"{result['speedup_vs_sldc_default']:>8.2f}{result['speedup_vs_sldc_default_load_adjusted']:>10.2f}"
              f"{result['share_of_model_throughput']:>10.0%}{result['pipeline_efficiency']:>10.0%}  {stages}")
    print(f"results in {args.out}")
    return 0
