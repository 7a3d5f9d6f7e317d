"""`cyseg demo` runs the legacy job and the App Engine task on the same slide and prints both results, then
the job on the shared brightfield slide when it is present."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cyseg.cli.demo import BRIGHTFIELD_SLIDE

from .conftest import ROOT

ROW = re.compile(r"^  (legacy job \(run\.py\)|App Engine task) +(\d+) objects, recall (\d+)%", re.M)
BRIGHTFIELD = re.compile(r"^CMU-1-Small-Region\.svs \(whole image\): (\d+) objects.*\n  model (\S+) \(brightfield", re.M)


def test_the_demo_runs_the_job_and_the_task_and_both_find_the_nuclei(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cyseg", "demo", "--width", "768", "--height", "512",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"^task run [0-9a-f-]{36}: FINISHED - \d+ nuclei", done.stdout, re.M), done.stdout
    rows = {name: (int(count), int(recall)) for name, count, recall in ROW.findall(done.stdout)}
    assert set(rows) == {"legacy job (run.py)", "App Engine task"}, done.stdout
    assert rows["legacy job (run.py)"][0] == rows["App Engine task"][0] > 0
    assert min(recall for _, recall in rows.values()) >= 95, done.stdout
    if BRIGHTFIELD_SLIDE.is_file():
        found = BRIGHTFIELD.search(done.stdout)
        assert found, done.stdout[-3000:]
        assert found.group(2) == "he" and int(found.group(1)) > 1000   # an H&E region: thousands of nuclei
    else:
        assert "no brightfield slide at" in done.stdout
