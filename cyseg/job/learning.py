"""What the learning modes (dataset, improve, train) share: the run's folder, progress and attachments,
the dataset cut from the project's annotations, and the training recipe."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyseg.dataset import MANIFEST_NAME as DATASET_MANIFEST
from cyseg.dataset import DatasetConfig, Selection, build_dataset, split_folders
from cyseg.errors import CysegError
from cyseg.job.progress import JobProgress
from cyseg.job.upload import attach
from cyseg.pipeline.config import JobConfig
from segmenter.training import TrainConfig

MANIFEST_NAME = "cyseg-dataset-manifest.json"
MODEL_NAME = "cyseg-model.pt"
HISTORY_NAME = "cyseg-model.history.json"  # what `train` writes next to MODEL_NAME
DEFOCUS_LEVELS = [1, 2, 3, 4, 6, 8]  # defocus augmentation (px), as the shipped default model's recipe
VAL_DEFOCUS_LEVELS = [4]
IN_CHANNELS = 3  # Cytomine slides are colour (stains)


@dataclass
class LearningRun:
    """One run of a learning mode: its job, parameters, progress and working folder."""

    job: Any  # cytomine.models.Job
    project_id: int
    config: JobConfig
    progress: JobProgress
    out: Path

    def report(self, percent: float, comment: str, force: bool = False) -> None:
        self.progress.send(percent, comment, force)

    def attach(self, *paths: Path) -> None:
        """Attach files to the job (a failure fails the job: these files are what it is for)."""
        for path in paths:
            attach(self.job, path)


def build(run: LearningRun, start: float, end: float) -> tuple[Path, dict[str, Any]]:
    """Cut the dataset of the run's images and term into `out/dataset` (its manifest also as
    `out/MANIFEST_NAME`, to attach), reporting progress from `start` to `end` percent; the folder and the
    manifest."""
    config = run.config
    selection = Selection(run.project_id, terms=() if config.cytomine_id_result_term is None
                          else (config.cytomine_id_result_term,), images=config.cytomine_id_images)
    dataset = DatasetConfig(zoom=config.zoom_level, crop_size=config.crop_size,
                            split=(1 - config.validation_share, config.validation_share, 0.0))
    run.report(start, "building the dataset from the annotations", force=True)

    def progress(done: int, total: int, message: str) -> None:
        run.report(start + (end - start) * done / max(total, 1), f"dataset: {done}/{total} crops, {message}")

    folder = run.out / "dataset"
    manifest = build_dataset(selection, dataset, folder, progress)
    shutil.copy2(folder / DATASET_MANIFEST, run.out / MANIFEST_NAME)
    counts = manifest["counts"]
    run.report(end, f"dataset: {counts['crops']} crops, {counts['objects']} objects from {counts['annotations']} "
                    f"annotations in {counts['slides']} image(s)", force=True)
    return folder, manifest


def zip_folder(folder: Path, archive: Path) -> Path:
    """`folder`'s content as the zip file `archive` (its name ends in .zip)."""
    return Path(shutil.make_archive(str(archive.with_suffix("")), "zip", root_dir=folder))


def recipe(config: JobConfig, data: list[str], val_data: list[str], out: str) -> TrainConfig:
    """The U-Net training recipe of the job (the shipped model's, with the job's sizes and lengths)."""
    return TrainConfig(data=data, out=out, val_data=val_data, val_fraction=config.validation_share,
                       in_channels=IN_CHANNELS, crop=config.crop_size, batch_size=config.batch_size,
                       epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                       defocus_levels=DEFOCUS_LEVELS, val_defocus_levels=VAL_DEFOCUS_LEVELS,
                       device=None if config.device == "auto" else config.device)


def training_folders(dataset: Path) -> tuple[Path, list[str]]:
    """The dataset's train folder and validation folders; CysegError when too few crops to train on."""
    folders = split_folders(dataset)
    crops = len(list((folders["train"] / "images").iterdir()))
    if "val" not in folders and crops < 2:
        raise CysegError(f"only {crops} training crop: training needs at least 2 (one validates); annotate "
                         f"more, choose more images, or a smaller crop_size or zoom_level")
    return folders["train"], [str(folders["val"])] if "val" in folders else []


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Name the stage in the message of an unexpected error (a CysegError already says what went wrong)."""
    try:
        yield
    except CysegError:
        raise
    except Exception as error:
        raise CysegError(f"{what} failed: {type(error).__name__}: {error}") from error
