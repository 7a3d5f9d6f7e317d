"""Focus maps: window grid, blurry-region polygons (top-left origin), heat maps, slides, the CLI."""
import json

import numpy as np
import pytest
from PIL import Image

from cyseg.cli import main
from cyseg.focus_map import focus_map, image_focus_map, prefetched, write_focus_outputs
from segmenter.focus import grid_shape, load_focus_classifier
from transforms import defocus

from .test_focus import FOCUS_MODEL, nuclei_image


@pytest.fixture(scope="module")
def classifier():
    return load_focus_classifier(FOCUS_MODEL, device="cpu")


@pytest.fixture(scope="module")
def quadrant_image() -> np.ndarray:
    """3×4 windows of nuclei; the bottom-right 1×2 windows (from x = y = 500) out of focus; the
    top-left window empty background."""
    image = nuclei_image((752, 1002), seed=1)
    image[500:, 500:] = defocus(image[500:, 500:], 8, seed=0)
    image[:252, :252] = np.median(image)
    return image


def test_blurry_region_is_where_the_image_is_blurred(classifier, quadrant_image):
    focus = image_focus_map(quadrant_image, classifier, name="quadrant.png")
    assert focus.grid.scores.shape == (3, 4)
    expected = np.zeros((3, 4), dtype=bool)
    expected[2, 2:] = True
    np.testing.assert_array_equal(focus.grid.blurry_windows, expected)
    (polygon, properties), = focus.blurry_regions()
    assert polygon.bounds == pytest.approx((501, 501, 1002, 752))
    assert properties["windows"] == 2 and properties["score"] > classifier.threshold


def test_json_has_score_decision_and_grid_with_null_for_empty_windows(classifier, quadrant_image):
    entry = image_focus_map(quadrant_image, classifier).to_json()
    grid = entry["grid"]
    assert entry["blurry"] is False and entry["score"] < entry["threshold"]
    assert (grid["rows"], grid["cols"], grid["window"], grid["stride"]) == (3, 4, 252, 250)
    assert grid["scores"][0][0] is None and all(v is not None for v in grid["scores"][2])
    assert grid["blurry_fraction"] == pytest.approx(2 / 11, abs=1e-3)
    json.dumps(entry, allow_nan=False)


def test_heat_map_and_regions_are_written(tmp_path, classifier, quadrant_image):
    written = write_focus_outputs(image_focus_map(quadrant_image, classifier, name="quadrant.tif"), tmp_path)
    assert written["heatmap"].name == "quadrant.focus.png"
    with Image.open(written["heatmap"]) as png:
        assert min(png.size) > 200
    features = json.loads(written["regions"].read_text())["features"]
    assert len(features) == 1 and features[0]["properties"]["windows"] == 2


def test_prefetched_reads_ahead_in_order():
    assert list(prefetched(lambda x: x * x, range(7), depth=2)) == [(i, i * i) for i in range(7)]


def test_slide_map_covers_the_slide(classifier, shared_data):
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    focus = focus_map(path, classifier, progress=False)
    assert focus.kind == "slide"
    assert (focus.grid.width, focus.grid.height) == (2220, 2967)
    assert focus.grid.scores.shape == grid_shape(2967, 2220, 252, 250)
    assert focus.grid.content.mean() > 0.5
    assert np.isfinite(focus.grid.scores[focus.grid.content]).all()
    assert max(focus.thumbnail.shape[:2]) <= 1024
    for polygon, _ in focus.blurry_regions():
        assert 0 <= polygon.bounds[0] and polygon.bounds[2] <= 2220
        assert 0 <= polygon.bounds[1] and polygon.bounds[3] <= 2967


def test_cli_writes_scores_heat_maps_and_regions(tmp_path, capsys):
    sharp = nuclei_image((400, 500), seed=2)
    Image.fromarray(sharp).save(tmp_path / "sharp.png")
    Image.fromarray(defocus(sharp, 8, seed=0)).save(tmp_path / "blurry.png")
    out = tmp_path / "out"
    code = main(["focus", "--model", str(FOCUS_MODEL), str(tmp_path / "sharp.png"),
                 str(tmp_path / "blurry.png"), "--out", str(out)])
    assert code == 0
    scores = json.loads((out / "scores.json").read_text())
    assert {name: entry["blurry"] for name, entry in scores.items()} == {"sharp.png": False, "blurry.png": True}
    assert scores["blurry.png"]["score"] > scores["sharp.png"]["score"]
    for stem in ("sharp", "blurry"):
        assert (out / f"{stem}.focus.png").is_file() and (out / f"{stem}.blurry.geojson").is_file()
    assert "1 of 2 input(s) blurry" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--stride", "252"], "multiple of 5"),
    (["--model", "no-such-model"], "model not found"),
])
def test_cli_reports_bad_arguments(tmp_path, capsys, extra, message):
    Image.fromarray(nuclei_image()).save(tmp_path / "a.png")
    args = ["focus", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", str(FOCUS_MODEL)]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_inputs_with_the_same_stem_and_missing_inputs(tmp_path, capsys):
    Image.fromarray(nuclei_image()).save(tmp_path / "a.png")
    Image.fromarray(nuclei_image()).save(tmp_path / "a.jpg")
    base = ["focus", "--model", str(FOCUS_MODEL), "--out", str(tmp_path / "out")]
    assert main(base + [str(tmp_path / "a.png"), str(tmp_path / "a.jpg")]) == 2
    assert main(base + [str(tmp_path / "missing.png")]) == 2
    assert "input not found" in capsys.readouterr().err
