"""Job parameters: conversion from the parsed command line, checks with messages naming the parameter."""
from __future__ import annotations

from argparse import Namespace

import pytest

from cyseg.errors import CysegError
from cyseg.pipeline.config import JobConfig


def test_values_are_converted_to_the_field_types() -> None:
    config = JobConfig.from_parameters(Namespace(
        cytomine_id_images="12,34", cytomine_id_roi_term=7, cytomine_id_result_term=None, tile_size=256.0,
        threshold=0.3, tissue_detection="false", model="unet", cytomine_host="ignored", cytomine_id_blurry_term="9"))
    assert config.cytomine_id_images == (12, 34)
    assert config.cytomine_id_roi_term == 7 and config.cytomine_id_result_term is None
    assert config.cytomine_id_blurry_term == 9 and JobConfig().cytomine_id_blurry_term is None
    assert config.tile_size == 256 and isinstance(config.tile_size, int)
    assert config.threshold == 0.3 and config.tissue_detection is False and config.model == "unet"


def test_learning_parameters_are_converted() -> None:
    config = JobConfig.from_parameters(Namespace(mode="train", crop_size=128.0, epochs=2.0, steps_per_epoch=5.0,
                                                 idi_rounds=3.0, validation_share=0.25, model="job:42"))
    assert (config.mode, config.crop_size, config.epochs, config.steps_per_epoch, config.idi_rounds) == (
        "train", 128, 2, 5, 3)
    assert config.validation_share == 0.25 and config.model == "job:42"
    assert JobConfig().mode == "segment"


def test_empty_values_take_the_defaults() -> None:
    assert JobConfig.from_parameters({"cytomine_id_images": "", "device": None}) == JobConfig()


@pytest.mark.parametrize(("values", "message"), [
    ({"tile_size": 100.5}, "tile_size=100.5: expected a whole number"),
    ({"cytomine_id_images": "1,x"}, "cytomine_id_images='1,x': expected comma-separated ids"),
    ({"tissue_detection": "maybe"}, "tissue_detection='maybe': expected true or false"),
    ({"cytomine_id_blurry_term": "blur"}, "cytomine_id_blurry_term='blur': expected an id"),
    ({"threshold": 1.5}, "threshold must be between 0 and 1"),
    ({"min_area": 100, "max_area": 50}, "max_area must be greater than min_area"),
    ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ({"tile_size": 256, "tile_overlap": 200}, "tile_overlap must be between 0 and half the tile size"),
    ({"mode": "learn"}, "mode must be one of segment, dataset, improve, train, got 'learn'"),
    ({"model": "job:twelve"}, "model=job:twelve must be job:<job id>"),
    ({"crop_size": 100}, "crop_size must be a multiple of 16 between 32 and 2048 pixels"),
    ({"epochs": 0}, "epochs must be between 1 and 10000"),
    ({"steps_per_epoch": 0}, "steps_per_epoch must be between 1 and 100000"),
    ({"idi_rounds": 0}, "idi_rounds must be between 1 and 100"),
    ({"validation_share": 1}, "validation_share must be between 0 and 1"),
])
def test_bad_values_name_the_parameter(values: dict, message: str) -> None:
    with pytest.raises(CysegError, match=message.replace("(", r"\(").replace(".", r"\.")):
        JobConfig.from_parameters(values)


def test_result_key_depends_on_what_decides_the_objects_only() -> None:
    base = JobConfig()
    assert base.result_key("m1") == JobConfig(batch_size=32, device="cpu", cytomine_id_images=(5,)).result_key("m1")
    assert base.result_key("m1") != JobConfig(threshold=0.6).result_key("m1")
    assert base.result_key("m1") != base.result_key("m2")
    learning = JobConfig(mode="train", crop_size=128, epochs=2, steps_per_epoch=5, idi_rounds=2, validation_share=0.5)
    assert base.result_key("m1") == learning.result_key("m1")
    assert base.result_key("m1") != JobConfig(test_time_augmentation=True).result_key("m1")


def test_blurry_term_changes_the_focus_key_only() -> None:
    base = JobConfig()
    blurry = JobConfig(cytomine_id_blurry_term=9)
    assert base.result_key("m1") == blurry.result_key("m1")
    assert base.focus_key("m1") != blurry.focus_key("m1") and blurry.focus_key("m1").endswith(".focus")
    assert blurry.focus_key("m1") == JobConfig(cytomine_id_blurry_term=9, threshold=0.6).focus_key("m1")
    assert blurry.focus_key("m1") != JobConfig(cytomine_id_blurry_term=9, tile_size=256).focus_key("m1")
    assert blurry.focus_key("m1") != blurry.focus_key("m2")
