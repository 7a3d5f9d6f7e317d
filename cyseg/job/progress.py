"""Job progress and status comment, as the Cytomine UI shows them while the job runs.

Each image gets an equal share of the segmentation range; within an image, progress follows the
tiles segmented, then the objects uploaded (`uploading`, which runs in the upload thread, so
updates are serialised). Updates are sent at most once per `interval_s` (plus the ones asked with
force), and progress never goes back.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cyseg.cytomine.connection import call

log = logging.getLogger(__name__)

SEGMENTATION_END = 95  # the rest is for the uploads' last stretch and the result files
UPLOAD_SHARE = 4  # points of the last image's upload (after its segmentation)
COMMENT_LENGTH = 255  # Cytomine's limit


class JobProgress:
    """Reports a job's progress (0-100) and status comment."""

    def __init__(self, job: Any, images: int, interval_s: float = 1.0) -> None:
        self.job = job
        self.images = max(images, 1)
        self.interval_s = interval_s
        self.last_sent = 0.0
        self.percent = 0
        self.lock = threading.Lock()

    def send(self, percent: float, comment: str, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            percent = int(min(max(percent, self.percent), 100))
            if not force and now - self.last_sent < self.interval_s:
                return
            self.last_sent, self.percent = now, percent
            comment = comment[:COMMENT_LENGTH]
            log.info("progress %d%%: %s", percent, comment)
            call(f"updating the progress of job {self.job.id}",
                 lambda: self.job.update(progress=percent, statusComment=comment))

    def image(self, index: int, fraction: float, comment: str, force: bool = False) -> None:
        """Progress within image `index` (0-based): `fraction` of its work is done."""
        self.send(SEGMENTATION_END * (index + min(fraction, 1.0)) / self.images, comment, force)

    def uploading(self, index: int, name: str, done: int, total: int) -> None:
        """Image `index` (0-based, named `name`) segmented, its upload `done` of `total` steps along (see
        `ImageUploader`'s `on_progress`)."""
        fraction = done / max(total, 1)
        self.send((SEGMENTATION_END * (index + 1) + UPLOAD_SHARE * fraction) / self.images,
                  f"image {index + 1}/{self.images} ({name}): uploading, {fraction:.0%} done", force=done >= total)
