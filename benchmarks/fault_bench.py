"""The job's upload under faults: fault-free and at 15% faults, side by side, for several seeds.

    .venv/bin/python benchmarks/fault_bench.py [--seeds 1 2 3] [--repeats 3] [--rate 0.15] [--size 2048 1536]

The demo slide (`cyseg.demo_slide`, seed 0: 574 nuclei at 2048x1536) is served by the embedded server
behind the fault proxy (`cyseg.server.fault_proxy`), and run.py runs the job on it with the tests'
deterministic threshold model, so every run finds the same objects. For each seed, runs in pairs, each
on a fresh server: one without faults, one where that seed's 15% of all requests (start-up, tiles,
upload, properties) meet a 502/503 without being forwarded, a lost answer, or a delay (which requests
meet them varies a little from run to run: the job's requests run concurrently). The job's own retry
settings are used. A sub-second upload on a shared machine is noisy, so each pair is repeated and
the medians are compared. Per run: the job's seconds, the upload's seconds (`ImageUploader.upload`, run record
to last property), the faults injected, and a check of what the server holds: each object exactly
once, each with one `cyseg.score` and one `cyseg.class`, one run record, the job TERMINATED. Writes
`benchmarks/results/fault_bench.json` and prints a table; the target is an upload under faults within
3x its fault-free time.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cytomine.models import AnnotationCollection, ImageInstance, Job, JobCollection, PropertyCollection  # noqa: E402

from cyseg.demo_slide import write_demo_slide  # noqa: E402
from cyseg.job import upload  # noqa: E402
from cyseg.job.descriptor import command_line, load_descriptor  # noqa: E402
from cyseg.server.fault_proxy import FaultProxy  # noqa: E402
from cyseg.server.runner import LocalServer  # noqa: E402
from segmenter.checkpoint import Checkpoint  # noqa: E402
from tests.job.helpers import ThresholdSegmenter, connect  # noqa: E402  (registers the test model)

RESULT = ROOT / "benchmarks" / "results" / "fault_bench.json"
TARGET_RATIO = 3.0
TERMINATED = 3


def timed_uploads() -> list[float]:
    """Wrap `ImageUploader.upload` so that each call's seconds are recorded in the list returned."""
    seconds: list[float] = []
    real = upload.ImageUploader.upload

    def timed(self: upload.ImageUploader, objects: list) -> upload.UploadReport:
        start = time.perf_counter()
        try:
            return real(self, objects)
        finally:
            seconds.append(time.perf_counter() - start)

    upload.ImageUploader.upload = timed
    return seconds


def server_check(endpoint: Any, image_id: int) -> dict[str, Any]:
    """What the server holds: annotations, those without exactly one score and one class, run records, jobs."""
    connect(endpoint)
    annotations = list(AnnotationCollection(image=image_id, includeAlgo=True).fetch())
    wrong = sum(sorted(p.key for p in PropertyCollection(a).fetch()) != [upload.CLASS_KEY, upload.SCORE_KEY]
                for a in annotations)
    records = [p for p in PropertyCollection(ImageInstance().fetch(image_id)).fetch()
               if p.key.startswith(upload.MANIFEST_PREFIX)]
    jobs = [Job().fetch(j.id) for j in JobCollection(project=endpoint.project_id).fetch()]
    return {"annotations": len(annotations), "without_exactly_one_score_and_class": wrong,
            "run_records": len(records), "jobs": [(j.status, j.statusComment) for j in jobs]}


def one_run(run_module: Any, slide: Any, model: Path, data: Path, rate: float, seed: int,
            uploads: list[float]) -> dict[str, Any]:
    server = LocalServer(slide.path.parent, data, ROOT / "descriptor.json")
    with server.in_thread() as endpoint, FaultProxy(endpoint.host, rate=rate, seed=seed) as proxy:
        values = {"cytomine_host": proxy.host, "cytomine_public_key": endpoint.public_key,
                  "cytomine_private_key": endpoint.private_key, "cytomine_id_project": endpoint.project_id,
                  "cytomine_id_software": endpoint.software_id, "cytomine_id_result_term": None,
                  "model": str(model), "tile_size": 512}
        argv = command_line(load_descriptor(), values)[2:] + ["--log_level", "WARNING"]
        uploads.clear()
        start = time.perf_counter()
        exit_code = run_module.main(argv)
        job_s = time.perf_counter() - start
        faults = collections.Counter(s.fault for s in proxy.faulted())
        check = server_check(endpoint, endpoint.images[slide.path.name])
    return {"exit_code": exit_code, "job_s": round(job_s, 2), "upload_s": round(sum(uploads), 2),
            "requests": len(proxy.log), "faults": dict(faults), **check,
            "exact": (exit_code == 0 and check["annotations"] == len(slide.nuclei)
                      and check["without_exactly_one_score_and_class"] == 0 and check["run_records"] == 1
                      and all(status == TERMINATED for status, _ in check["jobs"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind per seed (medians compared)")
    parser.add_argument("--rate", type=float, default=0.15)
    parser.add_argument("--size", type=int, nargs=2, default=[2048, 1536], metavar=("WIDTH", "HEIGHT"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    spec = importlib.util.spec_from_file_location("cyseg_run", ROOT / "run.py")
    run_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_module)
    uploads = timed_uploads()
    with tempfile.TemporaryDirectory(prefix="fault-bench-") as folder:
        work = Path(folder)
        os.environ["CYSEG_OUTPUT_DIR"] = str(work / "results")
        slide = write_demo_slide(work / "slides" / "demo.tif", *args.size, seed=0)
        model = Checkpoint(family=ThresholdSegmenter.name, architecture={}, class_names=["background", "nucleus"],
                           in_channels=3, normalization={}, state_dict={}, threshold=0.5).save(work / "threshold.pt")
        rows = []
        for seed in args.seeds:
            runs: dict[str, list[dict[str, Any]]] = {"fault_free": [], "faulty": []}
            for repeat in range(args.repeats):
                for kind, rate in (("fault_free", 0.0), ("faulty", args.rate)):
                    runs[kind].append(one_run(run_module, slide, model, work / f"{kind}-{seed}-{repeat}", rate, seed,
                                              uploads))
            clean, faulty = (statistics.median(r["upload_s"] for r in runs[kind]) for kind in ("fault_free", "faulty"))
            rows.append({"seed": seed, "fault_free_upload_s": clean, "faulty_upload_s": faulty,
                         "upload_ratio": round(faulty / clean, 2), "runs": runs})
            print(f"seed {seed}: upload {clean:.2f} s fault-free, {faulty:.2f} s at {args.rate:.0%} faults "
                  f"({faulty / clean:.2f}x, medians of {args.repeats}); faults per faulty run "
                  f"{[sum(r['faults'].values()) for r in runs['faulty']]} of "
                  f"{[r['requests'] for r in runs['faulty']]} requests; every run exact: "
                  f"{all(r['exact'] for kind in runs for r in runs[kind])}", flush=True)
    result = {"slide": {"size": args.size, "objects": len(slide.nuclei)}, "rate": args.rate,
              "repeats": args.repeats, "target_ratio": TARGET_RATIO,
              "within_target": all(r["upload_ratio"] <= TARGET_RATIO for r in rows),
              "all_exact": all(run["exact"] for r in rows for runs in r["runs"].values() for run in runs),
              "settings": {"chunk": upload.CHUNK_SIZE, "property_chunk": upload.PROPERTY_CHUNK,
                           "workers": upload.WORKERS, "attempts": upload.ATTEMPTS, "backoff_s": upload.BACKOFF_S},
              "runs": rows, "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                        "python": platform.python_version()}}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULT}")


if __name__ == "__main__":
    main()
