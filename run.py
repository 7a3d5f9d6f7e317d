"""Cytomine entry point: `python run.py --cytomine_host ... --cytomine_id_project ... [parameters]`.

The Cytomine software router runs this with the command line built from descriptor.json. The job
body is `cyseg.job.modes.run` (segment, or learn from the annotations, as the `mode` parameter says);
any error ends the job FAILED with the error's message.
"""
from __future__ import annotations

import sys

from cytomine import CytomineJob

from cyseg.job import failure_message
from cyseg.job.modes import run


def main(argv: list[str]) -> int:
    try:
        with CytomineJob.from_cli(argv) as job:
            run(job)
    except Exception as error:  # the job is FAILED with this message; say it here too, in one line
        print(f"cyseg job failed: {failure_message(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
