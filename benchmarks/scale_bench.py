"""How the job's cost grows with the slide: the real job on generated fluorescence slides of about 4, 16, 64
and 256 Mpix (the largest with ~100,000 nuclei).

    .venv/bin/python benchmarks/scale_bench.py [--sizes 4,16,64,256] [--out benchmarks/results/scale.json]

Each slide is written by `cyseg.demo_slide` (a pyramidal TIFF rendered strip by strip; it holds level 1
and below, a quarter of the pixels, in memory, never level 0), with its sparse part denser than the demo's
(`SPARSE_DENSITY`) so that 256 Mpix holds ~100,000 nuclei. The job runs as `make demo` runs it: `run.py`
in a subprocess with the command line Cytomine builds from descriptor.json (model `default`, backend
`auto`), against a fresh embedded server, reading the slide file directly (`CYSEG_SLIDE_ROOTS`), with the
real client over HTTP. Per size: wall time of the job process, Mpix/s, objects, the job process's peak
RSS (`os.wait4`; the generator and the server are not counted), and its stages: fetch, inference and
polygons (summed over threads) and the segmentation's wall time from the job's summary CSV; from the job
log's timestamps, `startup` (connection, job, model, thumbnail, tissue, model choice) and `upload`;
`finish` is the rest (result files written and attached). Writes `--out` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import segmenter  # noqa: E402
from cyseg import demo_slide  # noqa: E402
from cyseg.cytomine.source import ROOTS_VARIABLE  # noqa: E402
from cyseg.job.descriptor import command_line, load_descriptor  # noqa: E402
from cyseg.job.runner import OUTPUT_VARIABLE  # noqa: E402
from cyseg.pipeline.results import SUMMARY_NAME  # noqa: E402
from cyseg.server.runner import LocalServer  # noqa: E402

SIDES = {4: 2048, 16: 4096, 64: 8192, 256: 16384}  # Mpix -> side of the square slide
SPARSE_DENSITY = 4.0  # nuclei outside the dense cluster, relative to the demo's (one per 2250 px² instead of 9000)
RSS_TARGET_GB = 3.0


def log_time(line: str) -> float:
    """The time of a line of the job log (`[2026-01-01 12:00:00,123][INFO] ...`), in seconds since the epoch."""
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_times(log_path: Path, started: float) -> dict[str, float]:
    """Seconds from the job's start (`started`, epoch) to its segmentation starting ("...: starting"), and
    from its objects announced ("... objects found, uploading") to its upload done ("uploading, 100% done")."""
    lines = log_path.read_text().splitlines()

    def first(text: str) -> float:
        return next(log_time(line) for line in lines if text in line)

    return {"startup": first('): starting"') - started,
            "upload": first("uploading, 100% done") - first('objects found, uploading"')}


def run_size(mpix: int, scratch: Path) -> dict:
    """Generate the slide, run the job on it, and measure."""
    side = SIDES[mpix]
    slides = scratch / f"slides-{mpix}"
    began = time.perf_counter()
    slide = demo_slide.write_demo_slide(slides / f"scale-{mpix}.tif", side, side, sparse_density=SPARSE_DENSITY)
    generated = time.perf_counter() - began
    out, log_path = scratch / f"job-{mpix}", scratch / f"job-{mpix}.log"
    with LocalServer(slides, scratch / f"server-{mpix}", ROOT / "descriptor.json").in_thread() as server:
        values = {"cytomine_host": server.host, "cytomine_public_key": server.public_key,
                  "cytomine_private_key": server.private_key, "cytomine_id_project": server.project_id,
                  "cytomine_id_software": server.software_id, "cytomine_id_images": server.images[slide.path.name],
                  "cytomine_id_result_term": server.terms["Nucleus"], "model": "default", "backend": "auto"}
        command = command_line(load_descriptor(), values)
        environment = os.environ | {OUTPUT_VARIABLE: str(out), ROOTS_VARIABLE: str(slides)}
        load = os.getloadavg()[0]
        with log_path.open("w") as log_file:
            began, started = time.perf_counter(), time.time()
            process = subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env=environment, stdout=log_file,
                                       stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - began
            process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the job failed on {mpix} Mpix (exit {process.returncode}): see {log_path}")
    with (out / SUMMARY_NAME).open() as stream:
        row = next(csv.DictReader(stream))
    logged = log_times(log_path, started)
    segment = float(row["seconds"])
    pixels = side * side / 1e6
    slide.path.unlink()  # the next, larger slide needs the disk more than this one
    return {"mpix": round(pixels, 1), "side_px": side, "nuclei_generated": len(slide.nuclei),
            "generation_s": round(generated, 1), "wall_s": round(wall, 1), "mpix_per_s": round(pixels / wall, 3),
            "s_per_mpix": round(wall / pixels, 3), "objects": int(row["objects"]), "uploaded": int(row["uploaded"]),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "tiles": int(row["tiles"]),
            "tiles_with_tissue": int(row["tiles_with_tissue"]), "load_average_before": round(load, 2),
            "stages_s": {"segment_wall": round(segment, 1), "fetch": float(row["fetch_seconds"]),
                         "inference": float(row["inference_seconds"]), "polygons": float(row["polygons_seconds"]),
                         "startup": round(logged["startup"], 1), "upload": round(logged["upload"], 1),
                         "finish": round(wall - logged["startup"] - segment - logged["upload"], 1)},
            "model_choice": row["model_choice"]}


def table(results: list[dict]) -> str:
    lines = ["| Mpix | objects | wall s | Mpix/s | s/Mpix | peak RSS MB | startup s | segment wall s | fetch s "
             "| inference s | polygons s | upload s | finish s |", "|" + "---|" * 13]
    for r in results:
        s = r["stages_s"]
        lines.append(f"| {r['mpix']:.0f} | {r['objects']:,} | {r['wall_s']:.0f} | {r['mpix_per_s']:.2f} "
                     f"| {r['s_per_mpix']:.2f} | {r['peak_rss_mb']:,} | {s['startup']:.1f} | {s['segment_wall']:.1f} "
                     f"| {s['fetch']:.1f} | {s['inference']:.1f} | {s['polygons']:.1f} | {s['upload']:.1f} "
                     f"| {s['finish']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64,256", help=f"Mpix, comma-separated, among {sorted(SIDES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the servers' state, job logs and result files here (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if unknown := set(sizes) - set(SIDES):
        parser.error(f"unknown sizes {sorted(unknown)} (choose from {sorted(SIDES)})")
    model = segmenter.load("default", device="cpu", backend="auto")  # fills the OpenVINO cache the jobs read
    results = []
    with tempfile.TemporaryDirectory(prefix="cyseg-scale-") as scratch:
        for mpix in sizes:
            results.append(run_size(mpix, args.work or Path(scratch)))
            print(json.dumps(results[-1]), flush=True)
    report = {"date": datetime.now().strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "backend": model.backend, "sparse_density": SPARSE_DENSITY,
              "rss_target_gb": RSS_TARGET_GB, "sizes": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(results))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
