"""IDI: the merge and the normalisation on hand-made masks, and the loop end to end from the embedded server."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from cyseg.cli import main
from cyseg.dataset import DatasetConfig, Selection, build_dataset
from cyseg.errors import CysegError
from cyseg.idi import IDIConfig, foreground, improve, merge
from segmenter.training import TrainConfig
from transforms import PostProcess
from .conftest import Project

TINY = ["--depth", "2", "--filters", "4", "--crop", "64", "--batch-size", "2", "--epochs", "1",
        "--steps-per-epoch", "2"]


def blob(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def test_merge_is_the_or_and_keeps_the_annotated_objects() -> None:
    shape = (60, 90)
    weak = np.zeros(shape, dtype=np.uint16)
    weak[blob(shape, (15, 15), 7)] = 1
    weak[blob(shape, (15, 50), 7)] = 2
    predicted = np.zeros(shape, dtype=np.uint16)
    predicted[blob(shape, (15, 16), 8)] = 1  # annotated nucleus 1, seen a little larger
    predicted[blob(shape, (15, 64), 7)] = 2  # a new nucleus touching annotated nucleus 2
    predicted[blob(shape, (45, 30), 6)] = 3  # a new nucleus on its own
    merged = merge(weak, predicted)

    assert merged.dtype == np.uint16
    assert np.array_equal(merged > 0, (weak > 0) | (predicted > 0))  # exactly the OR
    assert int(merged.max()) == 4
    first, second = np.unique(merged[weak == 1]), np.unique(merged[weak == 2])
    assert len(first) == len(second) == 1 and first[0] != second[0]  # annotated nuclei kept whole, apart
    assert set(np.unique(merged[(predicted == 1) & (weak == 0)])) == {first[0]}  # the extension joins nucleus 1
    touching = np.unique(merged[(predicted == 2) & (weak == 0)])
    assert len(touching) == 1 and touching[0] not in (first[0], second[0])  # the touching one stays apart
    assert len(np.unique(merged[predicted == 3])) == 1


def test_merge_keeps_touching_predicted_nuclei_apart() -> None:
    shape = (40, 60)
    predicted = np.zeros(shape, dtype=np.uint16)
    predicted[blob(shape, (20, 20), 9)] = 1
    predicted[blob(shape, (20, 36), 9) & (predicted == 0)] = 2
    merged = merge(np.zeros(shape, dtype=np.uint16), predicted)
    assert int(merged.max()) == 2 and np.array_equal(merged, predicted)


def test_merge_adds_nothing_for_an_empty_prediction() -> None:
    weak = np.zeros((30, 30), dtype=np.uint16)
    weak[blob(weak.shape, (10, 10), 5)] = 7
    merged = merge(weak, np.zeros_like(weak))
    assert np.array_equal(merged > 0, weak > 0) and int(merged.max()) == 1


def probabilities(peak: float, noise: float = 0.0) -> np.ndarray:
    """A binary model's 2×H×W map: a nucleus of foreground `peak` on a background of small noise."""
    rng = np.random.default_rng(0)
    nucleus = rng.uniform(0, noise, (48, 48)) if noise else np.full((48, 48), 0.02)
    nucleus[blob(nucleus.shape, (24, 24), 8)] = peak
    return np.stack([1 - nucleus, nucleus]).astype(np.float32)


@pytest.mark.parametrize("normalize, objects", [(True, 1), (False, 0)])
def test_normalisation_lifts_a_timid_prediction(normalize: bool, objects: int) -> None:
    """A model trained on incomplete masks is timid: 0.35 on a nucleus. Normalised, it crosses 0.5."""
    labels = PostProcess(min_size=10)(foreground(probabilities(0.35), IDIConfig(normalize=normalize)))
    assert int(labels.max()) == objects


def test_normalisation_leaves_an_empty_prediction_empty() -> None:
    proba = probabilities(0.0, noise=0.08)  # no nucleus, only noise: its range is under min_span
    assert not (foreground(proba, IDIConfig(normalize=True)) > 0.5).any()


@pytest.mark.parametrize("values", [dict(rounds=0), dict(threshold=1.0), dict(min_span=0.0), dict(tolerance=-1)])
def test_bad_parameters_are_refused(values: dict) -> None:
    with pytest.raises(CysegError, match="invalid IDI parameter"):
        IDIConfig(**values)


@pytest.fixture(scope="module")
def dataset(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Slide a's partial annotations as 64-pixel crops, and the complete labels of those crops."""
    project.connect()
    folder = tmp_path_factory.mktemp("idi-dataset")
    manifest = build_dataset(Selection(project.endpoint.project_id, images=("a.tif",)), DatasetConfig(crop_size=64),
                             folder / "data")
    (folder / "reference").mkdir()
    labels = project.slides["a.tif"].labels
    for crop in manifest["crops"]:
        tifffile.imwrite(folder / "reference" / f"{crop['name']}.tif",
                         labels[crop["y"]:crop["y"] + 64, crop["x"]:crop["x"] + 64])
    return folder


def test_idi_on_a_dataset_from_the_server(dataset: Path, tmp_path: Path) -> None:
    config = IDIConfig(rounds=2, tolerance=0.0, reference=str(dataset / "reference"),
                       eval_data=[str(dataset / "data" / "train")])
    training = TrainConfig(data=[], out="", depth=2, n_filters=4, crop=64, batch_size=2, epochs=1, steps_per_epoch=2)
    calls = []
    result = improve(dataset / "data", tmp_path / "idi", config, training, lambda *a: calls.append(a))

    assert [m["round"] for m in result.rounds] == [0, 1, 2] and result.stopped == "2 rounds done"
    assert result.final_data == tmp_path / "idi" / "round-02" and result.final_model.is_file()
    weak = {p.stem: tifffile.imread(p) for p in (dataset / "data" / "train" / "labels").iterdir()}
    previous = weak
    for number in (1, 2):
        folder = tmp_path / "idi" / f"round-{number:02d}"
        assert (folder / "model.pt").is_file() and not (folder / "model.state.pt").exists()
        assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(
            p.name for p in (dataset / "data" / "train" / "images").iterdir())
        masks = {p.stem: tifffile.imread(p) for p in (folder / "labels").iterdir()}
        assert masks.keys() == weak.keys()
        for name, mask in masks.items():  # masks only grow, and annotated nuclei stay whole
            assert mask.dtype == np.uint16 and not ((previous[name] > 0) & (mask == 0)).any()
            assert all(len(np.unique(mask[weak[name] == i])) == 1 for i in np.unique(weak[name])[1:])
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics == result.rounds[number]
        assert {"recall", "precision", "pixel_recall"} <= set(metrics["masks"]["reference"])
        assert "val_f1" in metrics["model"] and set(metrics["eval"]) == {str(dataset / "data" / "train")}
        previous = masks
    start = result.rounds[0]["masks"]["reference"]
    assert start["precision"] == 1.0 and 0.4 < start["recall"] < 0.8  # the weak masks: right, but incomplete
    summary = json.loads((tmp_path / "idi" / "idi.json").read_text())
    assert summary["final_round"] == 2 and summary["rounds"] == json.loads(json.dumps(result.rounds))
    assert summary["training"]["val_data"] == []  # one slide, so no val split: a share of train validates
    assert calls[-1][0] == calls[-1][1] and "round 2/2" in calls[-1][2]


def test_cli_stops_when_the_masks_stop_changing(dataset: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "idi"
    assert main(["improve", "--data", str(dataset / "data"), "--out", str(out), "--rounds", "3",
                 "--tolerance", "1e9", "--no-normalize"] + TINY) == 0
    summary = json.loads((out / "idi.json").read_text())
    assert summary["stopped"].startswith("converged: round 1") and summary["final_round"] == 1
    assert summary["config"]["normalize"] is False and not (out / "round-02").exists()
    assert "improved dataset" in capsys.readouterr().out
    assert main(["improve", "--data", str(dataset / "data"), "--out", str(out)] + TINY) == 2
    assert "is not empty" in capsys.readouterr().err
