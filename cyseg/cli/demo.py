"""`cyseg demo`: the job end to end on this machine: embedded server, run.py launched as Cytomine would.

Starts the embedded server on a slide (a synthetic slide of nuclei with known positions unless
--slide is given), runs `run.py` with the command line Cytomine builds from descriptor.json,
shows the job's progress, prints what was found (checked against the known nuclei) and where the
result files are, and stops the server.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
DEMO_SLIDE = "demo-nuclei.tif"
SUCCESS = 3
MATCH_DISTANCE_PX = 4.0


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the Cytomine job on a demo slide against the embedded server",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None,
                        help="slide to segment (default: a generated synthetic slide with known nuclei)")
    parser.add_argument("--width", type=int, default=4096, help="size of the generated slide")
    parser.add_argument("--height", type=int, default=3072)
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="folder for the slide, the server's state, the job's log and results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cyseg.demo_slide import write_demo_slide
    from cyseg.errors import CysegError
    from cyseg.server.runner import LocalServer

    if not (ROOT / "run.py").is_file():
        raise CysegError(f"run.py not found in {ROOT}: run the demo from a cyseg checkout")
    out = args.out.resolve()
    if args.slide is not None:
        if not args.slide.is_file():
            raise CysegError(f"slide {args.slide} not found")
        slide = args.slide.resolve()
    else:
        slide = out / "slides" / DEMO_SLIDE
        if not slide.is_file():
            print(f"writing a {args.width}x{args.height} synthetic slide to {slide} ...")
            write_demo_slide(slide, args.width, args.height)
    shutil.rmtree(out / "server", ignore_errors=True)  # a fresh server each time: the demo starts empty
    server = LocalServer(slide.parent, out / "server", ROOT / "descriptor.json")
    with server.in_thread() as endpoint:
        print(f"embedded Cytomine server at {endpoint.host}, project {endpoint.project_id}")
        return _run_job(endpoint, slide, args, out)


def _run_job(endpoint, slide: Path, args: argparse.Namespace, out: Path) -> int:
    from cytomine import Cytomine
    from cytomine.models import Job, JobCollection

    from cyseg.job.descriptor import command_line, load_descriptor

    name = slide.relative_to(slide.parent).as_posix()
    values = {"cytomine_host": endpoint.host, "cytomine_public_key": endpoint.public_key,
              "cytomine_private_key": endpoint.private_key, "cytomine_id_project": endpoint.project_id,
              "cytomine_id_software": endpoint.software_id, "cytomine_id_images": endpoint.images[name],
              "cytomine_id_result_term": endpoint.terms["Nucleus"], "model": args.model, "device": args.device}
    command = command_line(load_descriptor(), values)
    print("command (as the Cytomine router builds it from descriptor.json):")
    print("  " + " ".join(_hide_key(command)))
    environment = os.environ | {"CYSEG_OUTPUT_DIR": str(out / "results"), "CYSEG_SLIDE_ROOTS": str(slide.parent)}
    log_path = out / "job.log"
    Cytomine(endpoint.host, endpoint.public_key, endpoint.private_key, configure_logging=False,
             verbose=logging.WARNING)
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env=environment, stdout=log_file,
                                   stderr=subprocess.STDOUT)
        job = _follow(process, endpoint.project_id, JobCollection)
    job = Job().fetch(job.id) if job else None
    print(f"job {job.id if job else '?'}: {'SUCCESS' if job and job.status == SUCCESS else 'FAILED'}"
          f" - {job.statusComment if job else 'the job did not start'} (log: {log_path})")
    if not job or job.status != SUCCESS:
        print(_last_line(log_path))
        return 1
    _report(out / "results", job, slide)
    return 0


def _follow(process: subprocess.Popen, project_id: int, jobs_of):
    """Show the job's progress until the process ends; the job (None if it never appeared)."""
    job = None
    with tqdm(total=100, desc="job", unit="%") as bar:
        while process.poll() is None:
            time.sleep(0.5)
            found = sorted(jobs_of(project=project_id).fetch(), key=lambda j: j.id)
            if found:
                job = found[-1]
                bar.update((job.progress or 0) - bar.n)
                bar.set_postfix_str((job.statusComment or "")[:60])
        if job:
            bar.update(100 - bar.n if process.returncode == 0 else 0)
    return job


def _report(results: Path, job, slide: Path) -> None:
    import numpy as np
    import shapely
    from cytomine.models import AnnotationCollection
    from scipy.spatial import cKDTree

    from cyseg.coordinates import from_cytomine
    from cyseg.demo_slide import read_truth, truth_path_for
    from cyseg.job.results import GEOJSON_NAME, SUMMARY_NAME, overlay_name

    height = None
    with (results / SUMMARY_NAME).open() as stream:
        for row in csv.DictReader(stream):
            print(f"{row['image_name']} ({row['region']}): {row['objects']} objects, median area "
                  f"{row['area_median'] or '-'} px², {row['tiles_with_tissue']}/{row['tiles']} tiles with tissue, "
                  f"{row['seconds']} s; {row['uploaded']} uploaded, {row['duplicates']} already there")
            print(f"  overlay: {results / overlay_name(int(row['image_id']))}")
    print(f"all objects (GeoJSON): {results / GEOJSON_NAME}")
    if truth_path_for(slide).is_file():
        import openslide
        with openslide.OpenSlide(slide) as opened:
            height = opened.dimensions[1]
        truth = np.array([(n.x, n.y) for n in read_truth(slide)])
        annotations = AnnotationCollection(job=job.id, includeAlgo=True, showWKT=True).fetch()
        found = np.array([from_cytomine(shapely.from_wkt(a.location), height).centroid.coords[0]
                          for a in annotations]).reshape(-1, 2)
        matched = int((cKDTree(found).query(truth)[0] < MATCH_DISTANCE_PX).sum()) if len(found) else 0
        print(f"known nuclei: {len(truth)}; annotations: {len(found)}; {matched} nuclei found within "
              f"{MATCH_DISTANCE_PX:g} px (recall {matched / max(len(truth), 1):.0%}, "
              f"precision {matched / max(len(found), 1):.0%})")


def _hide_key(command: list[str]) -> list[str]:
    return ["****" if previous == "--cytomine_private_key" else word
            for previous, word in zip([""] + command, command)]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""
