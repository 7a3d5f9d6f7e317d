"""Training: targets, determinism, best-checkpoint metadata, resuming."""
import json

import numpy as np
import pytest
import torch

from segmenter import Checkpoint
from metrics import match_instances
from segmenter import training
from segmenter.base import native_bf16
from segmenter.training import TrainConfig, seam_target, train


def tiny_config(data, out, **changes) -> TrainConfig:
    settings = dict(data=[str(data)], out=str(out), depth=2, n_filters=4, crop=64, batch_size=2,
                    epochs=2, steps_per_epoch=2, val_fraction=0.25, seed=7)
    return TrainConfig(**(settings | changes))


def test_seam_between_touching_nuclei_is_removed_from_the_target():
    labels = np.zeros((6, 8), np.int32)
    labels[1:5, 1:4] = 1
    labels[1:5, 4:7] = 2
    target, seams = seam_target(labels)
    assert seams[1:5, 3].all() and seams[1:5, 4].all()
    assert not seams[:, :3].any() and not seams[:, 5:].any()
    assert target.sum() == (labels > 0).sum() - seams.sum()


def test_training_writes_best_checkpoint_with_provenance(tmp_path, synthetic_dataset):
    out = tmp_path / "model.pt"
    checkpoint = train(tiny_config(synthetic_dataset, out), progress=False)
    loaded = Checkpoint.load(out)
    assert loaded.family == "unet" and loaded.class_names == ["background", "nucleus"]
    assert loaded.training["config"]["seed"] == 7
    assert loaded.training["data"]["n_train"] == 3 and loaded.training["data"]["n_val"] == 1
    assert set(loaded.metrics["val_f1"]) == {"0"}
    assert len(loaded.training["history"]) == 2 == len(checkpoint.training["history"])
    history = json.loads(out.with_name("model.history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]


def test_same_seed_gives_identical_weights(tmp_path, synthetic_dataset):
    first = train(tiny_config(synthetic_dataset, tmp_path / "a.pt", epochs=1), progress=False)
    second = train(tiny_config(synthetic_dataset, tmp_path / "b.pt", epochs=1), progress=False)
    for key, tensor in first.state_dict.items():
        assert torch.equal(tensor, second.state_dict[key]), key


def test_resume_continues_where_training_stopped(tmp_path, synthetic_dataset):
    out = tmp_path / "model.pt"
    train(tiny_config(synthetic_dataset, out, epochs=1), progress=False)
    resumed = train(tiny_config(synthetic_dataset, out, epochs=2, resume=True), progress=False)
    assert [entry["epoch"] for entry in resumed.training["history"]] == [1, 2]


def test_defocus_levels_add_blurred_validation_sets(tmp_path, synthetic_dataset):
    checkpoint = train(tiny_config(synthetic_dataset, tmp_path / "m.pt", epochs=1,
                                   defocus_levels=[2.0], val_defocus_levels=[3.0]), progress=False)
    assert set(checkpoint.training["history"][0]["val_f1"]) == {"0", "3"}


def test_tuning_picks_the_best_setting_of_the_grid(synthetic_dataset):
    import segmenter
    from segmenter.datasets import load_labelled
    from segmenter.tuning import tune_postprocess

    samples = load_labelled(synthetic_dataset)[:2]
    model = segmenter.load("unet")  # a plain U-Net: its post-processing is what the grid tunes
    grid = {"min_distance": (1, 7)}
    chosen, f1 = tune_postprocess(model, samples, grid)
    scores = {}
    for distance in grid["min_distance"]:
        model.postprocess.min_distance = distance
        found = [model.instances(s.image).labels for s in samples]
        matchings = [match_instances(f, s.labels) for f, s in zip(found, samples)]
        tp, fp, fn = (sum(getattr(m, k) for m in matchings) for k in ("tp", "fp", "fn"))
        scores[distance] = 2 * tp / (2 * tp + fp + fn)
    assert chosen.min_distance == max(scores, key=scores.get)
    assert f1 == max(scores.values())


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_is_native_only_on_cpus_with_bf16_dot_products(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16(torch.device("cpu")) is native


def test_bf16_asked_for_without_native_bf16_trains_in_fp32(tmp_path, synthetic_dataset, monkeypatch):
    monkeypatch.setattr(training, "native_bf16", lambda device: False)
    autocasts = []
    original = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: autocasts.append(k.get("enabled")) or original(*a, **k))
    checkpoint = train(tiny_config(synthetic_dataset, tmp_path / "model.pt", bf16=True, epochs=1), progress=False)
    assert autocasts and not any(autocasts)
    assert checkpoint.training["precision"] == "fp32"  # what the card reports, not what was asked
