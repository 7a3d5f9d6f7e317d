"""`model=auto` in the job: each slide gets the shipped model of its modality, at its pixel size, and the
choice is in the log, the status comment and the CSV summary."""
from __future__ import annotations

from pathlib import Path

import pytest

from cyseg.demo_slide import DemoSlide
from cyseg.errors import CysegError
from cyseg.pipeline.config import JobConfig
from cyseg.pipeline.models import load_models, pick_for_slide
from cyseg.pipeline.source import OpenSlideSource
from cyseg.pipeline.tissue import THUMBNAIL_SIZE, detect_tissue
from tests.job.helpers import RunJob
from tests.job.test_end_to_end import summary


def pick(path: Path, zoom_level: int = 0):
    with OpenSlideSource(path, zoom_level) as source:
        thumbnail = source.thumbnail(THUMBNAIL_SIZE)
        return pick_for_slide(load_models(JobConfig(model="auto")), source, detect_tissue(thumbnail, source.width),
                              thumbnail)


def test_auto_is_the_default_model():
    assert JobConfig().model == "auto"


def test_auto_picks_the_fluorescence_model_for_the_demo_slide(slide: DemoSlide):
    picked = pick(slide.path)
    assert (picked.name, picked.choice.modality) == ("default", "fluorescence")


def test_auto_picks_the_brightfield_model_at_the_files_pixel_size_for_an_he_slide(shared_data: Path):
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    picked = pick(path)
    assert (picked.name, picked.choice.modality) == ("he", "brightfield")
    assert picked.pixel_size_um == pytest.approx(0.499)
    assert pick(path, zoom_level=1).pixel_size_um == pytest.approx(0.998)


def test_an_auto_job_reports_its_choice(run_job: RunJob, tmp_path: Path):
    outcome = run_job(model="auto", tile_size=512)
    assert outcome.exit_code == 0
    rows = summary(tmp_path / "results")
    assert [row["model"] for row in rows] == ["default"]
    assert "fluorescence" in rows[0]["model_choice"] and "dark background" in rows[0]["model_choice"]


def test_test_time_augmentation_reaches_the_model_or_fails_clearly():
    picker = load_models(JobConfig(model="he", test_time_augmentation=True))
    assert picker.load(picker.spec)[1].tta
    assert not load_models(JobConfig(model="he")).load(picker.spec)[1].tta
    with pytest.raises(CysegError, match="cannot load model 'detection'.*no test-time augmentation"):
        load_models(JobConfig(model="detection", test_time_augmentation=True))


def test_a_job_warns_when_the_named_model_does_not_suit_the_slide(run_job: RunJob, tmp_path: Path):
    outcome = run_job(model="he", tile_size=512)
    assert outcome.exit_code == 0
    rows = summary(tmp_path / "results")
    assert "WARNING: unet-he.pt is a brightfield model, but the image looks fluorescence" in rows[0]["model_choice"]
