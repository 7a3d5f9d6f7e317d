"""The command line: segment, evaluate, train; clear errors for bad input."""
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from cyseg.cli import main
from segmenter.datasets import read_image


def test_segment_writes_uint16_labels_and_geojson_per_input(tmp_path, synthetic_dataset, capsys):
    images = sorted((synthetic_dataset / "images").iterdir())[:2]
    assert main(["segment", *map(str, images), "--out", str(tmp_path / "out")]) == 0
    for image in images:
        labels = tifffile.imread(tmp_path / "out" / f"{image.stem}.tif")
        truth = read_image(synthetic_dataset / "labels" / f"{image.stem}.tif")
        assert labels.dtype == np.uint16 and labels.shape == truth.shape
        assert abs(int(labels.max()) - int(truth.max())) <= 2
        features = json.loads((tmp_path / "out" / f"{image.stem}.geojson").read_text())["features"]
        assert len(features) == labels.max()
        assert {f["properties"]["class"] for f in features} == {"nucleus"}
    assert "objects in 2 image(s)" in capsys.readouterr().out


def test_evaluate_writes_metrics_report_and_plots(tmp_path, synthetic_dataset):
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", "unet", "--images", str(synthetic_dataset / "images"),
                 "--labels", str(synthetic_dataset / "labels"), "--defocus", "0,4", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for section in (metrics["overall"], *metrics["per_level"].values()):
        assert {"precision", "recall", "f1", "ap50", "dice", "jaccard", "count_mape"} <= set(section)
    assert set(metrics["per_level"]) == {"0", "4"}
    assert 0 < metrics["nhm"] <= 1
    assert metrics["per_level"]["0"]["f1"] > 0.8
    assert "connected_components" in metrics
    report = (out / "report.md").read_text()
    assert f"{metrics['per_level']['0']['f1']:.3f}" in report
    for plot in ("pr_curve.png", "f1_per_level.png", "overlay.png"):
        assert Image.open(out / plot).size[0] > 100


def test_corrupt_image_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    assert main(["segment", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_missing_model_is_a_one_line_error(tmp_path, synthetic_dataset, capsys):
    image = next((synthetic_dataset / "images").iterdir())
    assert main(["segment", str(image), "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    assert "model not found" in capsys.readouterr().err


def test_segment_with_tta_writes_the_same_outputs_and_detection_refuses_it(tmp_path, synthetic_dataset, capsys):
    image = sorted((synthetic_dataset / "images").iterdir())[0]
    assert main(["segment", str(image), "--tta", "--out", str(tmp_path / "tta")]) == 0
    labels = tifffile.imread(tmp_path / "tta" / f"{image.stem}.tif")
    assert labels.max() > 0 and (tmp_path / "tta" / f"{image.stem}.geojson").exists()
    assert main(["segment", str(image), "--model", "detection", "--tta", "--out", str(tmp_path / "det")]) == 2
    assert "no test-time augmentation" in capsys.readouterr().err


def test_train_without_labels_names_the_folder(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.png")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt")]) == 2
    assert "no image/label pairs" in capsys.readouterr().err


def test_bad_defocus_list_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["evaluate", "--images", "x", "--labels", "y", "--defocus", "a,b", "--out", str(tmp_path)])


def test_default_model_on_bbbc039_val(shared_data, tmp_path):
    """A regression guard on two real images (the full numbers are in the model card)."""
    val = shared_data / "bbbc039" / "val"
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((val / "images").iterdir())[:2]:
        (images / path.name).symlink_to(path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--images", str(images), "--labels", str(val / "labels"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["f1"] > 0.85


def test_evaluate_compares_several_models_side_by_side(tmp_path, synthetic_dataset, checkpoint):
    tiny = tmp_path / "tiny.pt"
    checkpoint.save(tiny)
    out = tmp_path / "compare"
    code = main(["evaluate", "--model", f"default,{tiny}", "--images", str(synthetic_dataset / "images"),
                 "--labels", str(synthetic_dataset / "labels"), "--defocus", "0,4", "--out", str(out)])
    assert code == 0
    compared = json.loads((out / "comparison.json").read_text())
    assert set(compared) == {"default", "tiny"}
    assert compared["default"]["per_level"]["0"]["f1"] > compared["tiny"]["per_level"]["0"]["f1"]
    table = (out / "comparison.md").read_text()
    assert "| default |" in table and "| tiny |" in table and "blur 4" in table
    assert (out / "default" / "report.md").is_file() and (out / "tiny" / "metrics.json").is_file()
    assert Image.open(out / "comparison.png").size[0] > 300


def test_evaluate_runs_the_otsu_baseline_beside_a_model_under_another_psf(tmp_path, synthetic_dataset):
    out = tmp_path / "compare"
    code = main(["evaluate", "--model", "default,otsu", "--images", str(synthetic_dataset / "images"),
                 "--labels", str(synthetic_dataset / "labels"), "--defocus", "0,6", "--psf", "pupil",
                 "--out", str(out)])
    assert code == 0
    compared = json.loads((out / "comparison.json").read_text())
    assert set(compared) == {"default", "otsu"}
    assert compared["otsu"]["setup"]["psf"] == "pupil"
    assert compared["otsu"]["per_level"]["0"]["f1"] > 0.5 and compared["default"]["per_level"]["0"]["f1"] > 0.5
    with pytest.raises(SystemExit):
        main(["evaluate", "--images", "x", "--labels", "y", "--psf", "bokeh", "--out", str(tmp_path)])


def test_classifier_error_counts_wrong_calls_per_level():
    from cyseg.evaluation import classifier_errors

    calls = [(0.0, False), (0.0, True), (4.0, True), (4.0, True), (1.0, False)]
    assert classifier_errors(calls, (0.0, 1.0)) == {"0": 0.5, "4": 0.0, "1": 0.0}
