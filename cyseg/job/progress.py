"""Job progress and status comment, as the Cytomine UI shows them while the job runs.

Each image gets an equal share of the segmentation range; within an image, progress follows the
tiles segmented. Updates are sent at most once per `interval_s` (plus the ones asked with force).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from cyseg.job.connection import call

log = logging.getLogger(__name__)

SEGMENTATION_END = 95  # the rest is for the result files
COMMENT_LENGTH = 255  # Cytomine's limit


class JobProgress:
    """Reports a job's progress (0-100) and status comment."""

    def __init__(self, job: Any, images: int, interval_s: float = 1.0) -> None:
        self.job = job
        self.images = max(images, 1)
        self.interval_s = interval_s
        self.last_sent = 0.0
        self.percent = 0

    def send(self, percent: float, comment: str, force: bool = False) -> None:
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
