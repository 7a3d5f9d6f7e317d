"""metrics: overlap, soft overlap, matching, detection AP, counting, summaries and the report."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metrics import (ImageResult, average_precision, count_mape, dice, evaluate_image, jaccard, level_key,
                     match_instances, nhm, precision_recall_curve, precision_recall_f1, soft_dice, soft_dice_loss,
                     soft_jaccard, summarize, summarize_by_level, write_report)

# --- overlap ---------------------------------------------------------------------------------


def test_dice_and_jaccard_hand_cases():
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[1, 0, 1, 0]], dtype=bool)
    assert dice(a, b) == pytest.approx(0.5)        # 2*1 / (2+2)
    assert jaccard(a, b) == pytest.approx(1 / 3)   # 1 / 3
    empty = np.zeros((2, 2), bool)
    assert dice(empty, empty) == 1.0 and jaccard(empty, empty) == 1.0
    assert dice(empty, ~empty) == 0.0 and jaccard(~empty, empty) == 0.0


def test_overlap_rejects_bad_input():
    with pytest.raises(ValueError, match=r"one shape, got \(1, 4\) and \(4,\)"):
        dice(np.zeros((1, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="labels > 0"):
        jaccard(np.array([0, 2]), np.array([0, 1]))


# --- soft overlap ----------------------------------------------------------------------------


def test_soft_dice_and_jaccard_hand_values():
    probs = torch.tensor([0.5, 0.5]).reshape(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    assert soft_dice(probs, target, eps=0).item() == pytest.approx(0.5)           # 2*0.5 / (1+1)
    assert soft_jaccard(probs, target, eps=0).item() == pytest.approx(1 / 3)      # 0.5 / (1+1-0.5)
    assert soft_dice(probs, target).shape == (1, 1)
    with pytest.raises(ValueError, match="one-hot"):
        soft_dice(probs, target[..., :1])


def _one_hot(n: int = 2, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, c, (n, size, size), generator=g)
    return torch.nn.functional.one_hot(classes, c).permute(0, 3, 1, 2).float()


def test_soft_dice_loss_orders_predictions_and_has_gradients():
    target = _one_hot()
    assert soft_dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full_like(target, 1 / 3)
    wrong = target.roll(1, dims=1)
    assert soft_dice_loss(uniform, target) > 0.2
    assert soft_dice_loss(wrong, target) > soft_dice_loss(uniform, target)
    logits = torch.zeros_like(target, requires_grad=True)
    soft_dice_loss(torch.softmax(logits, dim=1), target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # A gradient step on the logits lowers the loss.
    with torch.no_grad():
        stepped = logits - 50 * logits.grad
    assert soft_dice_loss(torch.softmax(stepped, 1), target) < soft_dice_loss(torch.softmax(logits, 1), target)


def test_soft_dice_loss_class_weights_select_classes():
    target = _one_hot()
    probs = target.clone()
    probs[:, 1] = 1 - probs[:, 1]                      # only class 1 is wrong
    per_class = soft_dice(probs, target).mean(0)
    assert soft_dice_loss(probs, target, class_weights=[1, 0, 0]).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(probs, target, class_weights=[0, 2, 0]).item() == pytest.approx(1 - per_class[1].item())
    with pytest.raises(ValueError, match="class weights"):
        soft_dice_loss(probs, target, class_weights=[1, 1])


# --- matching --------------------------------------------------------------------------------


def _squares() -> tuple[np.ndarray, np.ndarray]:
    true = np.zeros((50, 50), np.int32)
    pred = np.zeros((50, 50), np.int32)
    true[0:10, 0:10] = 1
    pred[0:10, 2:12] = 1      # IoU 80 / 120 = 2/3
    true[20:30, 0:10] = 2
    pred[20:30, 6:16] = 2     # IoU 40 / 160 = 1/4
    pred[40:45, 40:45] = 3    # overlaps nothing
    return pred, true


def test_match_instances_hand_case():
    pred, true = _squares()
    m = match_instances(pred, true, 0.5)
    assert (m.tp, m.fp, m.fn, m.n_pred, m.n_true) == (1, 2, 1, 3, 2)
    assert m.pairs == [(1, 1, pytest.approx(2 / 3))]
    assert m.pred_matched.tolist() == [True, False, False]
    assert (m.precision, m.recall, m.f1) == (pytest.approx(1 / 3), 0.5, pytest.approx(0.4))
    low = match_instances(pred, true, 0.25)   # IoU >= threshold counts
    assert (low.tp, low.fp, low.fn) == (2, 1, 0)


def test_match_instances_low_threshold_maximises_total_iou():
    # One row of pixels. T1 = [0, 6), T2 = [6, 10); A = [2, 9), B = [0, 2).
    # IoU(A, T1) = 4/9, IoU(A, T2) = 3/8, IoU(B, T1) = 2/6. Greedy takes A-T1 and leaves B alone;
    # the maximum-weight assignment takes A-T2 and B-T1 (3/8 + 1/3 > 4/9).
    true = np.array([[1] * 6 + [2] * 4 + [0, 0]])
    pred = np.array([[2, 2] + [1] * 7 + [0, 0, 0]])
    m = match_instances(pred, true, 0.3)
    assert [(p, t) for p, t, _ in m.pairs] == [(1, 2), (2, 1)]
    assert [iou for _, _, iou in m.pairs] == [pytest.approx(3 / 8), pytest.approx(1 / 3)]
    assert m.tp == 2 and m.fp == 0 and m.fn == 0
    assert match_instances(pred, true, 0.5).tp == 0


def test_match_instances_empty_and_gaps():
    empty = np.zeros((4, 4), np.uint16)
    m = match_instances(empty, empty)
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0) and m.pred_matched.size == 0
    true = empty.copy()
    true[0, 0] = 1
    missed = match_instances(empty, true)
    assert (missed.precision, missed.recall, missed.f1) == (0.0, 0.0, 0.0)
    pred = np.zeros((4, 4), np.uint16)
    pred[0, 0], pred[3, 3] = 3, 1                # id 2 is absent
    gaps = match_instances(pred, true)
    assert gaps.n_pred == 2 and gaps.fp == 1
    assert gaps.pred_matched.tolist() == [False, False, True]


def test_match_instances_many_instances():
    # 20 x 25 = 500 squares of 30x30 in a 1024x1024 image; predictions shifted by 3 px.
    true = np.zeros((1024, 1024), np.int32)
    ids = np.arange(1, 501).reshape(20, 25)
    for (r, c), i in np.ndenumerate(ids):
        true[r * 40 + 5:r * 40 + 35, c * 40 + 5:c * 40 + 35] = i
    pred = np.roll(true, 3, axis=1)
    m = match_instances(pred, true)
    assert (m.tp, m.fp, m.fn) == (500, 0, 0)
    assert all(p == t and iou == pytest.approx(27 * 30 / (33 * 30)) for p, t, iou in m.pairs)


def test_match_instances_rejects_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        match_instances(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="integer label image"):
        match_instances(np.zeros((3, 3)), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match=r"iou_threshold in \[0, 1\]"):
        match_instances(np.zeros((3, 3), int), np.zeros((3, 3), int), 1.5)


# --- detection -------------------------------------------------------------------------------


def test_average_precision_hand_cases():
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1], 3) == pytest.approx(1 / 3 + (2 / 3) * (1 / 3))
    assert average_precision([0.7, 0.9, 0.8], [1, 1, 0], 3) == pytest.approx(1 / 3 + (2 / 3) * (1 / 3))
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0], 2) == pytest.approx(1.0)
    assert average_precision([0.9, 0.8], [0, 1], 1) == pytest.approx(0.5)
    assert average_precision([], [], 4) == 0.0
    assert average_precision([], [], 0) == 1.0 and average_precision([0.5], [0], 0) == 0.0


def test_precision_recall_curve_points():
    precision, recall = precision_recall_curve([0.8, 0.9, 0.7], [0, 1, 1], 3)
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="more true positives"):
        precision_recall_curve([0.9, 0.8], [1, 1], 1)
    with pytest.raises(ValueError, match="one is_tp flag per score"):
        average_precision([0.9], [1, 0], 2)


# --- counting and summaries ------------------------------------------------------------------


def test_count_mape():
    assert count_mape([9, 12, 5], [10, 10, 0]) == pytest.approx(15.0)   # (10% + 20%) / 2, t = 0 skipped
    assert math.isnan(count_mape([3], [0]))
    with pytest.raises(ValueError, match="as many"):
        count_mape([1, 2], [1])


def test_nhm_and_precision_recall_f1():
    assert nhm(0.8, 0.4) == pytest.approx(2 * 0.32 / 1.2)
    assert nhm(0.0, 0.9) == 0.0
    with pytest.raises(ValueError, match="f1_blurry"):
        nhm(0.5, 1.5)
    assert precision_recall_f1(3, 1, 2) == (0.75, 0.6, pytest.approx(6 / 9))


def _results() -> list[ImageResult]:
    return [
        ImageResult(level=0, tp=3, fp=1, fn=1, n_pred=4, n_true=4, dice=0.8, jaccard=0.6,
                    scores=[0.9, 0.8, 0.7, 0.6], is_tp=[True, True, False, True]),
        ImageResult(level=4, tp=1, fp=1, fn=2, n_pred=2, n_true=3, dice=0.6, jaccard=0.4,
                    scores=[0.95, 0.5], is_tp=[False, True]),
    ]


def test_summarize_pools_images():
    s = summarize(_results())
    assert s["precision"] == pytest.approx(4 / 6) and s["recall"] == pytest.approx(4 / 7)
    assert s["f1"] == pytest.approx(8 / 13)
    # Ranked: .95 F, .9 T, .8 T, .7 F, .6 T, .5 T over 7 true; the envelope is 2/3 at every step.
    assert s["ap50"] == pytest.approx(4 / 7 * 2 / 3)
    assert s["dice"] == pytest.approx(0.7) and s["jaccard"] == pytest.approx(0.5)
    assert s["count_mape"] == pytest.approx(100 / 6)    # (0% + 33.3%) / 2
    assert s["n_images"] == 2 and (s["tp"], s["fp"], s["fn"]) == (4, 2, 3)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_summarize_by_level_and_nhm():
    out = summarize_by_level(_results())
    assert list(out["per_level"]) == ["0", "4"]
    assert out["per_level"]["0"]["f1"] == pytest.approx(0.75)
    assert out["per_level"]["4"]["f1"] == pytest.approx(0.4)
    assert out["nhm"] == pytest.approx(2 * 0.75 * 0.4 / 1.15)
    assert out["overall"]["n_images"] == 2
    only_sharp = summarize_by_level(_results()[:1])
    assert "nhm" not in only_sharp and "f1_blurry" not in only_sharp
    all_sharp = summarize_by_level(_results(), sharp_levels=(4,))
    assert "nhm" not in all_sharp
    assert level_key(4.0) == level_key(4) == "4" and level_key(1.5) == "1.5"


def test_image_result_checks_consistency():
    with pytest.raises(ValueError, match="inconsistent counts"):
        ImageResult(level=0, tp=1, fp=1, fn=0, n_pred=3, n_true=1, dice=1, jaccard=1, scores=[1, 1, 1],
                    is_tp=[True, False, False])
    with pytest.raises(ValueError, match="one per prediction"):
        ImageResult(level=0, tp=1, fp=0, fn=0, n_pred=1, n_true=1, dice=1, jaccard=1, scores=[], is_tp=[True])


def test_evaluate_image_from_labels():
    pred, true = _squares()
    r = evaluate_image(pred, true, scores=[0.9, 0.2, 0.4], level=2)
    assert (r.level, r.tp, r.fp, r.fn) == (2, 1, 2, 1)
    assert r.scores == pytest.approx([0.9, 0.2, 0.4]) and r.is_tp == [True, False, False]
    assert r.dice == pytest.approx(2 * 120 / (225 + 200))    # foreground: 80 + 40 shared px, 225 + 200
    gap = np.where(pred == 2, 0, pred)                       # id 2 absent: its score is skipped
    assert evaluate_image(gap, true, scores=[0.9, 0.2, 0.4]).scores == pytest.approx([0.9, 0.4])


# --- report ----------------------------------------------------------------------------------


def test_write_report(tmp_path):
    metrics = summarize_by_level(_results())
    results = _results()
    curves = {level_key(r.level): precision_recall_curve(r.scores, r.is_tp, r.n_true) for r in results}
    image = np.random.default_rng(0).random((40, 40))
    pred, true = np.zeros((40, 40), np.uint16), np.zeros((40, 40), np.uint16)
    pred[5:15, 5:15], true[6:16, 6:16] = 1, 1
    paths = write_report(metrics, tmp_path / "out", "Blur test", pr_curves=curves, overlay=(image, pred, true))
    names = sorted(p.name for p in paths)
    assert names == ["f1_per_level.png", "metrics.json", "overlay.png", "pr_curve.png", "report.md"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# Blur test")
    assert "| 0 | 1 | 0.750 | 0.750 | 0.750 |" in md          # level 0: P = R = F1 = 3/4
    assert "| 4 | 1 | 0.500 | 0.333 | 0.400 |" in md
    assert "**overall**" in md and "0.615" in md                # overall F1 = 8/13
    assert "**NHM**" in md and "0.522" in md                    # 2 * .75 * .4 / 1.15
    assert "![pr_curve](pr_curve.png)" in md and "![overlay](overlay.png)" in md


def test_write_report_adds_nested_summaries(tmp_path):
    metrics = summarize_by_level(_results())
    metrics["baseline"] = summarize_by_level(_results()[1:])
    metrics["setup"] = {"levels": [0, 4], "seed": 0}
    write_report(metrics, tmp_path, "With baseline")
    md = (tmp_path / "report.md").read_text()
    assert "## baseline" in md and "## setup" not in md
    assert md.count("| 4 | 1 | 0.500 | 0.333 | 0.400 |") == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["setup"] == {"levels": [0, 4], "seed": 0}


def test_write_report_flat_summary_with_nan(tmp_path):
    metrics = summarize([ImageResult(level=0, tp=0, fp=1, fn=0, n_pred=1, n_true=0, dice=0.0, jaccard=0.0,
                                     scores=[0.5], is_tp=[False])])
    assert math.isnan(metrics["count_mape"])
    paths = write_report(metrics, tmp_path, "Flat")
    assert sorted(p.name for p in paths) == ["metrics.json", "report.md"]
    assert json.loads((tmp_path / "metrics.json").read_text())["count_mape"] is None
    assert "| all | 1 |" in (tmp_path / "report.md").read_text() and "n/a" in (tmp_path / "report.md").read_text()
