"""`cyseg demo`: the job and the App Engine task end to end on this machine, against the embedded server.

Starts the embedded server on a slide (a synthetic slide of nuclei with known positions unless
--slide is given), runs `run.py` with the command line Cytomine builds from descriptor.json,
shows the job's progress, prints what was found and where the result files are, then runs the App
Engine task once on the same slide through the server's local App Engine, prints both results
side by side (checked against the known nuclei), runs the job once more on a real brightfield (H&E)
slide when one is at hand (../shared/data/slides, or --brightfield), and stops the server. With --image and
--task-image, the job and the task run in containers of the built images, as Cytomine runs them.
"""
from __future__ import annotations

import argparse
import csv
import json
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
BRIGHTFIELD_SLIDE = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
SUCCESS = 3
MATCH_DISTANCE_PX = 4.0


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the Cytomine job on a demo slide against the embedded server",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None,
                        help="slide to segment (default: a generated synthetic slide with known nuclei)")
    parser.add_argument("--width", type=int, default=3072, help="size of the generated slide")
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--model", default="auto",
                        help="auto (default: chosen per image), a shipped model name or a checkpoint path")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--brightfield", default=str(BRIGHTFIELD_SLIDE), metavar="SLIDE",
                        help="a brightfield slide the job also runs on, after the demo slide (default: the shared "
                             "H&E slide when present; 'none' to skip; not used with --slide)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="folder for the slide, the server's state, the job's log and results")
    parser.add_argument("--image", default=None,
                        help="run the job in a container of this Docker image (docker run --network host)")
    parser.add_argument("--task-image", default=None,
                        help="the local App Engine runs the task in a container of this task image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cyseg.demo_slide import truth_path_for, write_demo_slide
    from cyseg.errors import CysegError
    from cyseg.server.runner import LocalServer
    from cyseg.server.task_runner import TASK_IMAGE_VARIABLE

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
    brightfield = _brightfield_slide(args, slide.parent)
    shutil.rmtree(out / "server", ignore_errors=True)  # a fresh server each time: the demo starts empty
    if args.task_image:
        os.environ[TASK_IMAGE_VARIABLE] = args.task_image  # read by the server's local App Engine
    server = LocalServer(slide.parent, out / "server", ROOT / "descriptor.json")
    with server.in_thread() as endpoint:
        print(f"embedded Cytomine server at {endpoint.host}, project {endpoint.project_id}")
        job_code, job_found = _run_job(endpoint, slide, args, out)
        task_code, task_found = _run_task(endpoint, slide, args)
        if truth_path_for(slide).is_file():
            _against_truth(slide, {"legacy job (run.py)": job_found, "App Engine task": task_found})
        brightfield_code = 0
        if brightfield is not None:
            print(f"brightfield slide {brightfield.name}: the same job, model {args.model}")
            brightfield_code, _ = _run_job(endpoint, brightfield, args, out / "brightfield")
    return max(job_code, task_code, brightfield_code)


def _brightfield_slide(args: argparse.Namespace, slides: Path) -> Path | None:
    """The brightfield slide linked into the served folder (None when skipped or absent, and said so)."""
    if args.slide is not None or args.brightfield.lower() == "none":
        return None
    source = Path(args.brightfield)
    if not source.is_file():
        print(f"no brightfield slide at {source}: the demo shows the generated fluorescence slide only")
        return None
    link = slides / source.name
    link.unlink(missing_ok=True)
    link.symlink_to(source.resolve())
    return link


def _run_job(endpoint, slide: Path, args: argparse.Namespace, out: Path):
    """The legacy job (run.py) on the slide: its exit code (0 on success) and the centres of its
    annotations in image coordinates (None unless it succeeded)."""
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
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    if args.image:
        print(f"  in a container of {args.image} (docker run --network host)")
        argv = _container(args.image, command, results, slide.parent)
    else:
        argv = [sys.executable, *command[1:]]
    environment = os.environ | {"CYSEG_OUTPUT_DIR": str(results), "CYSEG_SLIDE_ROOTS": str(slide.parent)}
    log_path = out / "job.log"
    Cytomine(endpoint.host, endpoint.public_key, endpoint.private_key, configure_logging=False,
             verbose=logging.WARNING)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
        job = _follow(process, endpoint.project_id, JobCollection)
    job = Job().fetch(job.id) if job else None
    print(f"job {job.id if job else '?'}: {'SUCCESS' if job and job.status == SUCCESS else 'FAILED'}"
          f" - {job.statusComment if job else 'the job did not start'} (log: {log_path})")
    if not job or job.status != SUCCESS:
        print(_last_line(log_path))
        return 1, None
    return 0, _report(results, job, slide)


def _container(image: str, command: list[str], results: Path, slides: Path) -> list[str]:
    """`docker run` of the job's image as the router runs it (the command line after the entry point), on
    the host's network, the slides and the results folder mounted at their own paths."""
    return ["docker", "run", "--rm", "--network", "host", "--user", f"{os.getuid()}:{os.getgid()}",
            "-v", f"{slides}:{slides}:ro", "-v", f"{results}:{results}",
            "-e", f"CYSEG_OUTPUT_DIR={results}", "-e", f"CYSEG_SLIDE_ROOTS={slides}", image, *command]


def _run_task(endpoint, slide: Path, args: argparse.Namespace):
    """The App Engine task once on the slide through the server's local App Engine: its code (0 when
    FINISHED) and the centres of its nuclei (None unless it finished)."""
    import numpy as np
    import shapely

    from cyseg.task.client import APP_ENGINE_PATH, run_once
    from cyseg.task.descriptor import load_descriptor, type_spec

    task = load_descriptor()
    models = type_spec(task["inputs"]["model"])["values"]
    if args.model not in models:
        print(f"App Engine task: skipped, model {args.model} is not one of its models ({', '.join(models)})")
        return 0, None
    where = f"in a container of {args.task_image}" if args.task_image else "from this checkout"
    for name in ("cyseg.task.client", "cyseg.server.task_runner"):  # the run's states: the result line says enough
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"App Engine task {task['namespace']} {task['version']} through {endpoint.host}{APP_ENGINE_PATH} ({where})")
    run, outputs = run_once(endpoint.host, endpoint.private_key, endpoint.images[slide.name],
                            model=args.model, device=args.device)
    if run["state"] != "FINISHED":
        print(f"task run {run['id']}: {run['state']} - {run.get('message', '')}")
        return 1, None
    summary = json.loads(outputs["summary"])
    print(f"task run {run['id']}: FINISHED - {outputs['count']} nuclei, {summary['tiles_with_tissue']}/"
          f"{summary['tiles']} tiles with tissue, {summary['seconds']} s on {summary['device']}")
    return 0, np.array([shapely.geometry.shape(n["geometry"]).centroid.coords[0]
                        for n in outputs["nuclei"]]).reshape(-1, 2)


def _follow(process: subprocess.Popen, project_id: int, jobs_of):
    """Show the job's progress until the process ends; the job (None if it never appeared)."""
    job = None
    with tqdm(total=100, desc="job", unit="%", disable=None) as bar:  # a bar on a terminal only
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


def _report(results: Path, job, slide: Path):
    """Print the job's summary and result files; the centres of its annotations in image coordinates."""
    import numpy as np
    import openslide
    import shapely
    from cytomine.models import AnnotationCollection

    from cyseg.coordinates import from_cytomine
    from cyseg.pipeline.results import GEOJSON_NAME, SUMMARY_NAME, overlay_name

    with (results / SUMMARY_NAME).open() as stream:
        for row in csv.DictReader(stream):
            print(f"{row['image_name']} ({row['region']}): {row['objects']} objects, median area "
                  f"{row['area_median'] or '-'} px², {row['tiles_with_tissue']}/{row['tiles']} tiles with tissue, "
                  f"{row['seconds']} s; {row['uploaded']} uploaded, {row['duplicates']} already there")
            print(f"  {row['model_choice']}")
            print(f"  overlay: {results / overlay_name(int(row['image_id']))}")
    print(f"all objects (GeoJSON): {results / GEOJSON_NAME}")
    with openslide.OpenSlide(slide) as opened:
        height = opened.dimensions[1]
    annotations = AnnotationCollection(job=job.id, includeAlgo=True, showWKT=True).fetch()
    return np.array([from_cytomine(shapely.from_wkt(a.location), height).centroid.coords[0]
                     for a in annotations]).reshape(-1, 2)


def _against_truth(slide: Path, found: dict) -> None:
    """Each result (name -> object centres, None when it failed) against the slide's known nuclei."""
    import numpy as np
    from scipy.spatial import cKDTree

    from cyseg.demo_slide import read_truth

    truth = np.array([(n.x, n.y) for n in read_truth(slide)])
    print(f"against the {len(truth)} known nuclei (found within {MATCH_DISTANCE_PX:g} px):")
    for name, centres in found.items():
        if centres is None:
            print(f"  {name:<20} failed")
            continue
        matched = int((cKDTree(centres).query(truth)[0] < MATCH_DISTANCE_PX).sum()) if len(centres) else 0
        print(f"  {name:<20} {len(centres):5d} objects, recall {matched / max(len(truth), 1):.0%}, "
              f"precision {matched / max(len(centres), 1):.0%}")


def _hide_key(command: list[str]) -> list[str]:
    return ["****" if previous == "--cytomine_private_key" else word
            for previous, word in zip([""] + command, command)]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""
