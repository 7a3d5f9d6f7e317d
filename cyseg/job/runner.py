"""The body of a Cytomine job: parameters -> model -> for each image and region: segment, upload ->
result files attached to the job. `run.py` calls `run_job` inside `with CytomineJob...`, which marks
the job FAILED with the message of any exception that escapes (so messages say what went wrong)."""
from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
from cytomine.models import AnnotationCollection, ImageInstance, TermCollection
from shapely import wkt
from shapely.geometry.base import BaseGeometry

import segmenter
from cyseg.coordinates import from_cytomine
from cyseg.cytomine.connection import call, describe, host
from cyseg.cytomine.images import cytomine_pixel_size_um, image_name, max_zoom_level, project_images
from cyseg.cytomine.source import open_source
from cyseg.errors import CysegError
from cyseg.job.models import resolve_model
from cyseg.job.progress import JobProgress
from cyseg.job.upload import ImageUploader, UploadError, attach
from cyseg.pipeline import results
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.models import load_models, model_digest, pick_for_slide
from cyseg.pipeline.results import RegionRecord
from cyseg.pipeline.source import TileSource
from cyseg.pipeline.tissue import THUMBNAIL_SIZE, TissueMask, detect_tissue, everywhere
from cyseg.pipeline.workflow import Workflow, blurry_regions
from segmenter.picker import ModelPicker, Picked

log = logging.getLogger(__name__)

OUTPUT_VARIABLE = "CYSEG_OUTPUT_DIR"  # where result files are written before being attached


@dataclass
class JobContext:
    """What the job body needs from the CytomineJob."""

    job: Any  # cytomine.models.Job
    project: Any  # cytomine.models.Project
    user_id: int
    config: JobConfig


def project_terms(project: Any) -> dict[int, str]:
    """Term id -> name of the terms of the project's ontology."""
    terms = call(f"listing the terms of project {project.id}",
                 lambda: TermCollection().fetch_with_filter("project", project.id))
    return {term.id: term.name for term in terms}


def check_terms(project: Any, config: JobConfig, names: dict[int, str]) -> None:
    """The term parameters must name terms of the project's ontology (`names`: term id -> name)."""
    wanted = {"cytomine_id_roi_term": config.cytomine_id_roi_term,
              "cytomine_id_result_term": config.cytomine_id_result_term,
              "cytomine_id_blurry_term": config.cytomine_id_blurry_term}
    for parameter, term in wanted.items():
        if term is not None and term not in names:
            known = ", ".join(f"{i} ({n})" for i, n in sorted(names.items())) or "none"
            raise CysegError(f"{parameter}={term} is not a term of project {project.id} (its terms: {known})")


def class_terms(class_names: list[str], names: dict[int, str]) -> dict[int, int]:
    """Class label -> term, for the model's classes named like a term of the project (case-insensitive;
    the lowest term id when several match). Objects of other classes get the job's result term."""
    by_name: dict[str, int] = {}
    for term, name in sorted(names.items()):
        by_name.setdefault(name.casefold(), term)
    return {label: by_name[name.casefold()] for label, name in enumerate(class_names) if name.casefold() in by_name}


def regions_of_interest(image: ImageInstance, term_id: int) -> list[tuple[int, BaseGeometry]]:
    """(annotation id, geometry in Cytomine coordinates) of the annotations with the ROI term in an image."""
    annotations = call(f"listing the regions of interest of image {image.id}",
                       lambda: AnnotationCollection(image=image.id, term=term_id, showWKT=True,
                                                    showMeta=True).fetch())
    return [(a.id, wkt.loads(a.location)) for a in annotations]


def output_dir(job_id: int) -> Path:
    folder = os.environ.get(OUTPUT_VARIABLE)
    path = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"cyseg-job-{job_id}-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ImageModel:
    """The model an image is segmented with, and what depends on it."""

    picked: Picked
    workflow: Workflow
    result_key: str
    focus_key: str
    terms: dict[int, int]  # class label -> term (see `class_terms`)
    blurry_term: int | None

    @property
    def class_names(self) -> list[str]:
        return self.picked.model.class_names


class JobRun:
    """One run of the job over its images, keeping a record of every region for the result files."""

    def __init__(self, context: JobContext, models: ModelPicker, images: list[ImageInstance],
                 term_names: dict[int, str] | None = None) -> None:
        """`term_names`: term id -> name of the project's terms (see `class_terms`)."""
        self.context = context
        self.config = context.config
        self.models = models
        self.images = images
        self.term_names = term_names or {}
        self.digests: dict[str, str] = {}
        self.progress = JobProgress(context.job, len(images))
        self.records: list[RegionRecord] = []
        self.overlays: list[Path] = []
        self.out = output_dir(context.job.id)

    def run(self) -> None:
        """Segment and upload every image; write and attach the result files even when this fails."""
        with ThreadPoolExecutor(1, thread_name_prefix="cyseg-upload") as uploads:
            pending: list[Future] = []
            try:
                for index, image in enumerate(self.images):
                    self._image(index, image, uploads, pending)
                for future in pending:
                    future.result()
            finally:
                for future in pending:
                    future.cancel()
                wait(pending)  # an upload in flight settles, so the result files show what it did
                self._finish()

    def _image(self, index: int, image: ImageInstance, uploads: ThreadPoolExecutor, pending: list[Future]) -> None:
        name = image_name(image)
        if self.config.zoom_level > max_zoom_level(image):
            raise CysegError(f"zoom_level={self.config.zoom_level} is beyond image {image.id} ({name}), "
                             f"whose lowest resolution is zoom level {max_zoom_level(image)}")
        rois: list[tuple[int | None, BaseGeometry | None]] = [(None, None)]
        if self.config.cytomine_id_roi_term is not None:
            rois = regions_of_interest(image, self.config.cytomine_id_roi_term)
            if not rois:
                log.info("image %s (%s): no region of interest with term %s", image.id, name,
                         self.config.cytomine_id_roi_term)
                self.records.append(RegionRecord(image.id, name, image.height, "no region of interest",
                                                 status="skipped"))
                return
        with open_source(image, self.config.zoom_level) as source:
            thumbnail = source.thumbnail(THUMBNAIL_SIZE)
            tissue = (detect_tissue(thumbnail, source.width) if self.config.tissue_detection
                      else everywhere(source.width, source.height))
            model = self._model(image, source, tissue, thumbnail)
            self.progress.image(index, 0, f"image {index + 1}/{len(self.images)} ({name}): model {model.picked.name}"
                                + (f" ({model.picked.choice.modality})" if model.picked.choice else "")
                                + (f"; WARNING: {model.picked.warning}" if model.picked.warning else ""), force=True)
            uploader = ImageUploader(image, self.context.project.id, self.context.user_id, model.result_key,
                                     self.config.cytomine_id_result_term, class_terms=model.terms,
                                     class_names=model.class_names,
                                     on_progress=lambda done, total: self.progress.uploading(index, name, done, total))
            focus_uploader = None
            if model.blurry_term is not None:
                focus_uploader = ImageUploader(image, self.context.project.id, self.context.user_id,
                                               model.focus_key, model.blurry_term)
                # both list the image's annotations before either uploads, so neither takes the other's for its own
                pending.extend([uploads.submit(uploader.prepare), uploads.submit(focus_uploader.prepare)])
            image_records: list[RegionRecord] = []
            try:
                for number, (roi_id, roi) in enumerate(rois, start=1):
                    record = RegionRecord(image.id, name, image.height,
                                          "whole image" if roi_id is None else f"roi {roi_id}", roi=roi,
                                          model=model.picked.name, model_choice=model.picked.describe(),
                                          class_names=model.class_names)
                    self.records.append(record)
                    image_records.append(record)
                    where = f"image {index + 1}/{len(self.images)} ({name})" + (
                        f", region {number}/{len(rois)}" if roi_id is not None else "")
                    self._region(index, number, len(rois), where, source, tissue, record, model.workflow)
                    pending.append(uploads.submit(self._upload, uploader, record))
                    if focus_uploader is not None:
                        pending.append(uploads.submit(self._upload_blurry, focus_uploader, record))
                    self._raise_upload_errors(pending)
            finally:
                self._overlay(image, source, image_records)

    def _model(self, image: ImageInstance, source: TileSource, tissue: TissueMask,
               thumbnail: np.ndarray) -> ImageModel:
        """The model of one image (for `auto`, from its thumbnail), at the image's pixel size (Cytomine's,
        else estimated on a window of tissue), and its result keys and terms."""
        picked = pick_for_slide(self.models, source, tissue, thumbnail, cytomine_pixel_size_um(image))
        log.info("image %s (%s): %s", image.id, image_name(image), picked.describe())
        if picked.name not in self.digests:
            self.digests[picked.name] = model_digest(picked.name)
        digest = self.digests[picked.name]
        blurry_term = self.config.cytomine_id_blurry_term
        if blurry_term is not None and not isinstance(picked.model, segmenter.FocusGated):
            log.warning("cytomine_id_blurry_term=%s ignored for image %s: model %s is not focus-gated",
                        blurry_term, image.id, picked.name)
            blurry_term = None
        return ImageModel(picked, Workflow(picked.model, self.config), self.config.result_key(digest),
                          self.config.focus_key(digest), class_terms(picked.model.class_names, self.term_names),
                          blurry_term)

    def _overlay(self, image: ImageInstance, source: TileSource, records: list[RegionRecord]) -> None:
        """Draw what was found in the image so far on its thumbnail (a failure here is only logged)."""
        path = self.out / results.overlay_name(image.id)
        try:
            self.overlays.append(results.write_overlay(path, source.thumbnail(results.OVERLAY_SIZE), image.width,
                                                       records))
        except (CysegError, OSError) as error:
            log.error("cannot draw the overlay of image %s: %s", image.id, error)

    def _region(self, index: int, number: int, regions: int, where: str, source: TileSource, tissue: TissueMask,
                record: RegionRecord, workflow: Workflow) -> None:
        def progress(done: int, total: int) -> None:
            self.progress.image(index, (number - 1 + done / max(total, 1)) / regions,
                                f"{where}: {done}/{total} tiles segmented")

        self.progress.image(index, (number - 1) / regions, f"{where}: starting", force=True)
        roi = None if record.roi is None else from_cytomine(record.roi, record.image_height)
        try:
            result = workflow.run(source, tissue, roi, progress)
        except CysegError:
            record.status = "failed"
            raise
        except Exception as error:
            record.status = "failed"
            raise CysegError(f"segmenting {where} failed: {type(error).__name__}: {error}") from error
        record.set_objects(result.objects)
        record.tiles, record.tiles_with_tissue = result.tiles, result.tiles_with_tissue
        record.seconds, record.times, record.status = result.seconds, result.times, "segmented"
        record.focus = result.focus
        self.progress.image(index, number / regions, f"{where}: {len(result.objects)} objects found, uploading",
                            force=True)

    def _upload(self, uploader: ImageUploader, record: RegionRecord) -> None:
        try:
            report = uploader.upload(record.objects)
        except UploadError as error:
            record.statuses, record.status = error.report.statuses, "upload failed"
            raise
        record.statuses, record.status = report.statuses, "done"

    def _upload_blurry(self, uploader: ImageUploader, record: RegionRecord) -> None:
        """Upload the union of the region's tiles the blurry model segmented, with the blurry term."""
        regions = blurry_regions(record.focus, record.image_height, record.roi, self.config.simplify_tolerance)
        if regions:
            uploader.upload(regions)

    @staticmethod
    def _raise_upload_errors(pending: list[Future]) -> None:
        for future in pending:
            if future.done() and future.exception() is not None:
                future.result()

    def _finish(self) -> None:
        """Write the result files and attach them to the job (each failure is logged, not raised, so
        the error that stopped the run stays the job's message)."""
        files = list(self.overlays)
        try:
            if any(r.focus for r in self.records):
                files.insert(0, results.write_focus_tiles(self.out / results.FOCUS_NAME, self.records))
            files.insert(0, results.write_summary(self.out / results.SUMMARY_NAME, self.records))
            files.insert(0, results.write_geojson_file(self.out / results.GEOJSON_NAME, self.records))
        except OSError as error:
            log.error("cannot write the result files in %s: %s", self.out, error)
        for path in files:
            try:
                attach(self.context.job, path)
            except CysegError as error:
                log.error("%s", error)
        log.info("result files in %s", self.out)


def run_job(cytomine_job: Any) -> None:
    """Run the job whose parameters `cytomine_job` (a started `CytomineJob`, hardened) carries."""
    config = JobConfig.from_parameters(cytomine_job.parameters)
    context = JobContext(cytomine_job.job, cytomine_job.project, cytomine_job.current_user.id, config)
    progress = JobProgress(context.job, 1)
    progress.send(0, "loading the model", force=True)
    models = load_models(config, resolve_model)
    terms = project_terms(context.project)
    check_terms(context.project, config, terms)
    images = project_images(context.project, config.cytomine_id_images)
    run = JobRun(context, models, images, terms)
    run.run()
    total = sum(len(r.objects) for r in run.records)
    uploaded = sum(r.summary()["uploaded"] for r in run.records)
    progress.send(100, f"{total} objects found in {len(images)} image(s), {uploaded} new annotations", force=True)


def failure_message(error: BaseException) -> str:
    """The message of the error that stopped a job: the first CysegError in the chain of errors (a
    network error raised while reporting the failure to a dead server hides the real cause), or the
    server that could not be reached. Anything else is a bug: its traceback is logged."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, CysegError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, KeyboardInterrupt):
        return "the job was interrupted"
    if isinstance(error, requests.RequestException):
        return f"Cytomine server {host()}: {describe(error)}"
    log.error("unexpected error", exc_info=error)
    return f"{type(error).__name__}: {error}"
