"""Time spent per stage of a run (fetch, inference, polygons, merge, upload)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

STAGES = ("fetch", "fetch_wait", "inference", "locate", "merge", "upload")


@dataclass
class StageTimes:
    """Seconds spent per stage (summed over threads, so stages that overlap can add up to more
    than the wall time) and the wall time spent waiting for tiles."""

    fetch: float = 0.0
    fetch_wait: float = 0.0
    inference: float = 0.0
    locate: float = 0.0
    merge: float = 0.0
    upload: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            setattr(self, stage, getattr(self, stage) + seconds)

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in STAGES}
