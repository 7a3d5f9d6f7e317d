"""The job with every parameter at its default (`model=auto`) on each shared slide, as a pathologist would
launch it: the model chosen and why, the objects found, the time, and an overlay per slide.

    .venv/bin/python benchmarks/slides_bench.py [--slides ../shared/data/slides] [--docs docs/overlays]

The embedded server serves the slide folder; run.py runs as Cytomine runs it (the real client over
HTTP). Writes benchmarks/results/slides.json and copies each job's overlay PNG to `--docs`.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyseg.job.descriptor import command_line, load_descriptor  # noqa: E402
from cyseg.pipeline.results import SUMMARY_NAME, overlay_name  # noqa: E402
from cyseg.server.runner import LocalServer  # noqa: E402


def run_module():
    spec = importlib.util.spec_from_file_location("cyseg_run", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=Path, default=ROOT.parent / "shared" / "data" / "slides")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "overlays")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slides.json")
    args = parser.parse_args()
    job = run_module()
    results = {}
    args.docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cyseg-slides-") as scratch:
        with LocalServer(args.slides, Path(scratch) / "server", ROOT / "descriptor.json").in_thread() as server:
            for name, image_id in sorted(server.images.items()):
                out = Path(scratch) / name
                os.environ["CYSEG_OUTPUT_DIR"] = str(out)
                values = {"cytomine_host": server.host, "cytomine_public_key": server.public_key,
                          "cytomine_private_key": server.private_key, "cytomine_id_project": server.project_id,
                          "cytomine_id_software": server.software_id, "cytomine_id_images": image_id}
                start = time.perf_counter()
                code = job.main(command_line(load_descriptor(), values)[2:])
                seconds = time.perf_counter() - start
                with (out / SUMMARY_NAME).open() as stream:
                    row = next(csv.DictReader(stream))
                overlay = args.docs / f"{Path(name).stem}.png"
                shutil.copyfile(out / overlay_name(image_id), overlay)
                results[name] = {"exit_code": code, "objects": int(row["objects"]), "model": row["model"],
                                 "model_choice": row["model_choice"], "area_median_px": row["area_median"],
                                 "seconds": round(seconds, 1), "overlay": overlay.name}
                print(f"{name}: {row['objects']} objects, {row['model_choice']}, {seconds:.0f} s -> {overlay}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
