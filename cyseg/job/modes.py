"""The job's modes (the `mode` parameter): `segment` finds the nuclei and uploads them (the default);
`dataset`, `improve` and `train` learn from the project's annotations and attach what they made to the
job. `run.py` calls `run` inside cyseg's guard (`cyseg.job.lifecycle`), which marks the job FAILED with
the message of any exception that escapes."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from cyseg.idi import SUMMARY_NAME, IDIConfig, improve
from cyseg.job.learning import (HISTORY_NAME, MANIFEST_NAME, MODEL_NAME, LearningRun, build, recipe, stage,
                                training_folders, zip_folder)
from cyseg.job.progress import JobProgress
from cyseg.job.runner import output_dir, run_job
from cyseg.pipeline.config import JobConfig
from segmenter.training import train

DATASET_ZIP = "cyseg-dataset.zip"
MASKS_ZIP = "cyseg-improved-masks.zip"
IDI_SUMMARY = "cyseg-idi.json"
IDI_ROUNDS = "cyseg-idi-rounds.csv"
ROUND_COLUMNS = ("round", "objects", "pixels", "added_objects", "added_pixels", "change", "val_f1", "seconds")
DATASET_END = 20  # percent of a training mode spent on the dataset
TRAINING_END = 95  # the rest is for attaching


def run(cytomine_job: Any) -> None:
    """Run the job in the mode its parameters ask for."""
    config = JobConfig.from_parameters(cytomine_job.parameters)
    if config.mode == "segment":
        run_job(cytomine_job)
        return
    job = cytomine_job.job
    out = output_dir(job.id) / f"job-{job.id}"
    out.mkdir(exist_ok=True)
    learning = LearningRun(job, cytomine_job.project.id, config, JobProgress(job, 1), out)
    {"dataset": dataset_mode, "improve": improve_mode, "train": train_mode}[config.mode](learning)


def dataset_mode(run: LearningRun) -> None:
    """The crops and masks of the annotations, attached as a zip (with the manifest)."""
    folder, manifest = build(run, 0, 90)
    run.report(90, f"attaching {DATASET_ZIP}", force=True)
    run.attach(zip_folder(folder, run.out / DATASET_ZIP), run.out / MANIFEST_NAME)
    counts = manifest["counts"]
    run.report(100, f"dataset of {counts['crops']} crops ({counts['objects']} objects) attached as {DATASET_ZIP}",
               force=True)


def train_mode(run: LearningRun) -> None:
    """A U-Net trained on the dataset, attached (with its training history) for later segmentation jobs."""
    folder, _ = build(run, 0, DATASET_END)
    train_dir, val_data = training_folders(folder)
    config = run.config
    run.report(DATASET_END, f"training a U-Net: {config.epochs} epochs of {config.steps_per_epoch} steps",
               force=True)
    model = run.out / MODEL_NAME
    with stage("training the U-Net"):
        checkpoint = train(recipe(config, [str(train_dir)], val_data, str(model)), progress=False)
    model.with_name(model.stem + ".state.pt").unlink(missing_ok=True)  # only needed to resume
    run.report(TRAINING_END, f"attaching {MODEL_NAME}", force=True)
    run.attach(model, run.out / HISTORY_NAME, run.out / MANIFEST_NAME)
    run.report(100, f"model attached (validation F1 {checkpoint.metrics.get('val_f1_mean', 0):.3f}); "
                    f"segment with model=job:{run.job.id}", force=True)


def improve_mode(run: LearningRun) -> None:
    """Iterative data improvement of the dataset: the final masks (zip), per-round metrics and final model."""
    folder, _ = build(run, 0, DATASET_END)
    training_folders(folder)
    config = run.config

    def progress(done: int, total: int, message: str) -> None:
        round_starts = done % max(total // config.idi_rounds, 1) == 0  # a training starts: say so at once
        run.report(DATASET_END + (TRAINING_END - DATASET_END) * done / max(total, 1), f"IDI {message}",
                   force=round_starts)

    with stage("iterative data improvement"):
        result = improve(folder, run.out / "idi", IDIConfig(rounds=config.idi_rounds),
                         recipe(config, [], [], ""), progress)
    run.report(TRAINING_END, "attaching the improved masks, metrics and model", force=True)
    files = [zip_folder(result.final_data, run.out / MASKS_ZIP),
             shutil.copy2(run.out / "idi" / SUMMARY_NAME, run.out / IDI_SUMMARY),
             write_rounds(run.out / IDI_ROUNDS, result.rounds),
             shutil.copy2(result.final_model, run.out / MODEL_NAME),
             shutil.copy2(result.final_model.with_name(result.final_model.stem + ".history.json"),
                          run.out / HISTORY_NAME),
             run.out / MANIFEST_NAME]
    run.attach(*map(Path, files))
    first, last = result.rounds[0]["masks"], result.rounds[-1]["masks"]
    run.report(100, f"IDI: {len(result.rounds) - 1} round(s), {first['objects']} -> {last['objects']} objects "
                    f"({result.stopped}); segment with model=job:{run.job.id}", force=True)


def write_rounds(path: Path, rounds: list[dict[str, Any]]) -> Path:
    """One CSV row per IDI round: its masks and the validation F1 of the model it trained."""
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=ROUND_COLUMNS)
        writer.writeheader()
        for metrics in rounds:
            masks = metrics["masks"]
            writer.writerow(dict(round=metrics["round"], objects=masks["objects"], pixels=masks["pixels"],
                                 added_objects=masks.get("added_objects", ""),
                                 added_pixels=masks.get("added_pixels", ""),
                                 change=f"{masks['change']:.4f}" if "change" in masks else "",
                                 val_f1=f"{metrics['model']['val_f1_mean']:.4f}" if "model" in metrics else "",
                                 seconds=metrics.get("seconds", "")))
    return path
