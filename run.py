"""Cytomine entry point: `python run.py --cytomine_host ... --cytomine_id_project ... [parameters]`.

The Cytomine software router runs this with the command line built from descriptor.json. The job
body is `cyseg.job.modes.run` (segment, or learn from the annotations, as the `mode` parameter says),
run inside cyseg's guard (`cyseg.job.lifecycle`): any error, start-up included, ends the job FAILED
with the error's message, printed here too in one line.
"""
from __future__ import annotations

import sys

from cyseg.job import failure_message
from cyseg.job.lifecycle import run_guarded
from cyseg.job.modes import run


def main(argv: list[str]) -> int:
    return run_guarded(argv, run, failure_message)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
