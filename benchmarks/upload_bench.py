"""Upload seconds per 10,000 objects: the job's uploader against the embedded server, with and without the
per-object properties (`cyseg.score`, `cyseg.class`).

    .venv/bin/python benchmarks/upload_bench.py [--objects 10000] [--repeats 3] [--profile]

`cyseg.job.upload.ImageUploader.upload` (run record, annotations in bulk, then the properties in bulk) with
the real client over HTTP, as the job calls it, on nucleus-like 25-point outlines laid on a grid of a
generated slide. The server runs in its own process, as it does for a job, a fresh one (empty state) per
run; each case's median run is kept. Per run: wall seconds, and the CPU seconds of the client (this process)
and of the server (its process); the rest of the wall time is neither computing (round trips, waiting).
With `--profile`, one more run per case is profiled (cProfile in every thread of both processes) and the
functions that take the most time are kept. Targets (issue 16): at most 1 s per 10,000 objects without
properties, and properties no more than doubling it. Writes `benchmarks/results/upload.json`.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cytomine import Cytomine  # noqa: E402
from cytomine.models import ImageInstance  # noqa: E402
from shapely import affinity  # noqa: E402
from shapely.geometry import Point  # noqa: E402

from cyseg.cytomine.connection import harden  # noqa: E402
from cyseg.demo_slide import write_demo_slide  # noqa: E402
from cyseg.job.upload import ImageUploader  # noqa: E402
from cyseg.pipeline.objects import DetectedObject  # noqa: E402
from cyseg.server.runner import LocalServer  # noqa: E402

SPACING = 30  # pixels between the objects' centres
CLASS_NAMES = ["background", "nucleus"]
TARGET_S = 1.0  # per 10,000 objects, without properties
TARGET_RATIO = 2.0  # with properties / without
TOP = 12  # functions kept from each profile


class ThreadProfiles:
    """cProfile in the calling thread and in every thread started after `start`."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def _enable(self, *_: object) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile()
        self.profiles.append(profile)
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._enable)
        self._enable()

    def top(self) -> list[str]:
        """The `TOP` functions with the most own time (summed over threads)."""
        threading.setprofile(None)
        stream = io.StringIO()
        pstats.Stats(*self.profiles, stream=stream).sort_stats("tottime").print_stats(TOP)
        return [line.strip() for line in stream.getvalue().splitlines() if line.strip()[:1].isdigit()]


def serve(slides: Path, data: Path, profile: bool, connection) -> None:
    """The server process: serve until told to stop; answer with its endpoint, then its profile."""
    profiles = ThreadProfiles()
    if profile:
        profiles.start()
    with LocalServer(slides, data).in_thread() as endpoint:
        connection.send(endpoint)
        connection.recv()
        connection.send(profiles.top() if profile else None)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (all threads), or of process `pid`."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grid_objects(count: int, side: int, properties: bool) -> list[DetectedObject]:
    """`count` ellipses (25-point outlines) on a grid, Cytomine coordinates; with a score when `properties`."""
    columns = math.ceil(math.sqrt(count))
    objects = []
    for i in range(count):
        x, y = SPACING * (1 + i % columns), side - SPACING * (1 + i // columns)
        outline = affinity.scale(Point(x, y).buffer(1, quad_segs=6), 9 + i % 3, 7 + i % 4)
        objects.append(DetectedObject(outline, outline.area, 1, 0.5 + (i % 50) / 100 if properties else None))
    return objects


def run_once(slides: Path, data: Path, image_name: str, objects: list[DetectedObject], properties: bool,
             profile: bool) -> dict:
    """One upload on a fresh server process."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(slides, data, profile, theirs), daemon=True)
    server.start()
    try:
        endpoint = ours.recv()
        client = Cytomine(endpoint.host, endpoint.public_key, endpoint.private_key, configure_logging=False,
                          verbose=logging.WARNING)
        harden(client)
        image = ImageInstance().fetch(endpoint.images[image_name])
        uploader = ImageUploader(image, endpoint.project_id, client.current_user.id, "upload-bench",
                                 endpoint.terms["Nucleus"], class_names=CLASS_NAMES if properties else ())
        profiles = ThreadProfiles()
        if profile:
            profiles.start()
        client_cpu, server_cpu, began = cpu_seconds(), cpu_seconds(server.pid), time.perf_counter()
        report = uploader.upload(objects)
        wall = time.perf_counter() - began
        result = {"wall_s": wall, "client_cpu_s": cpu_seconds() - client_cpu,
                  "server_cpu_s": cpu_seconds(server.pid) - server_cpu, "uploaded": report.count("uploaded")}
        if profile:
            result["client_profile"] = profiles.top()
        ours.send("stop")
        server_profile = ours.recv()
        if profile:
            result["server_profile"] = server_profile
        return result
    finally:
        server.join(timeout=30)
        if server.is_alive():
            server.terminate()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also profile one run per case")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "upload.json")
    args = parser.parse_args()
    side = SPACING * (math.ceil(math.sqrt(args.objects)) + 2)
    per_10k = 10_000 / args.objects
    cases = {}
    with tempfile.TemporaryDirectory(prefix="cyseg-upload-") as scratch:
        slides = Path(scratch) / "slides"
        slide = write_demo_slide(slides / "upload.tif", side, side, density=0.001)
        for name, properties in (("without properties", False), ("with properties", True)):
            objects = grid_objects(args.objects, side, properties)
            runs = [run_once(slides, Path(scratch) / f"server-{name}-{n}", slide.path.name, objects, properties,
                             False) for n in range(args.repeats)]
            if any(run["uploaded"] != args.objects for run in runs):
                raise RuntimeError(f"{name}: not every object was uploaded: {runs}")
            median = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
            cases[name] = {"s_per_10k": round(median["wall_s"] * per_10k, 3),
                           "client_cpu_s_per_10k": round(median["client_cpu_s"] * per_10k, 3),
                           "server_cpu_s_per_10k": round(median["server_cpu_s"] * per_10k, 3),
                           "runs_wall_s": [round(run["wall_s"], 3) for run in runs]}
            if args.profile:
                profiled = run_once(slides, Path(scratch) / f"server-{name}-profile", slide.path.name, objects,
                                    properties, True)
                cases[name] |= {"profiled_wall_s": round(profiled["wall_s"], 3),
                                "client_profile": profiled["client_profile"],
                                "server_profile": profiled["server_profile"]}
            print(f"{name}: {cases[name]['s_per_10k']:.2f} s per 10,000 objects (client CPU "
                  f"{cases[name]['client_cpu_s_per_10k']:.2f} s, server CPU {cases[name]['server_cpu_s_per_10k']:.2f} s)",
                  flush=True)
    without, with_ = cases["without properties"]["s_per_10k"], cases["with properties"]["s_per_10k"]
    report = {"date": datetime.now().strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2), "objects": args.objects,
              "repeats": args.repeats, "cases": cases, "properties_ratio": round(with_ / without, 2),
              "targets": {"without_properties_s_per_10k": TARGET_S, "properties_ratio": TARGET_RATIO},
              "meets_targets": without <= TARGET_S and with_ / without <= TARGET_RATIO}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print("| case | s per 10,000 | client CPU s | server CPU s |\n|---|---|---|---|")
    for name, case in cases.items():
        print(f"| {name} | {case['s_per_10k']:.2f} | {case['client_cpu_s_per_10k']:.2f} "
              f"| {case['server_cpu_s_per_10k']:.2f} |")
    print(f"properties: x{report['properties_ratio']:.2f}; targets met: {report['meets_targets']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
