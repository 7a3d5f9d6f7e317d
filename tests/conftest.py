"""Fixtures shared by every test folder: where the shared data lives, skipping cleanly without it."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

SHARED_DATA = Path(os.environ.get("CYSEG_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only `../shared/data` folder; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CYSEG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def run_module() -> ModuleType:
    """run.py (the Cytomine job's entry point), imported from the repository root."""
    spec = importlib.util.spec_from_file_location("cyseg_run", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
