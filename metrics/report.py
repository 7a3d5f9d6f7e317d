"""The evaluation report: metrics.json, a markdown summary and PNG plots in one folder.

Plots are drawn on `matplotlib.figure.Figure` objects (Agg canvas), leaving pyplot's global
state and backend alone.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from skimage.segmentation import find_boundaries

logger = logging.getLogger(__name__)

PRED_COLOUR = (1.0, 0.85, 0.0)  # yellow
TRUE_COLOUR = (0.0, 0.85, 1.0)  # cyan
_COLUMNS = (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"), ("ap50", "AP@0.5"),
            ("dice", "Dice"), ("jaccard", "Jaccard"), ("count_mape", "Count MAPE (%)"))


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays converted, NaN and infinities as null."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_value(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.1f}" if key == "count_mape" else f"{value:.3f}"


def _rows(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(row label, summary) pairs: one per blur level then "overall", or "all" for a flat summary."""
    if "per_level" not in metrics:
        return [("all", metrics)]
    per_level = metrics["per_level"]
    levels = sorted(per_level, key=float)
    return [(lv, per_level[lv]) for lv in levels] + [("overall", metrics["overall"])]


def _table(metrics: Mapping[str, Any]) -> list[str]:
    """The markdown table of one summary, and its NHM line when present."""
    lines = ["| Blur level | Images | " + " | ".join(h for _, h in _COLUMNS) + " |",
             "|---" * (len(_COLUMNS) + 2) + "|"]
    for label, summary in _rows(metrics):
        name = f"**{label}**" if label == "overall" else label
        cells = [name, str(summary.get("n_images", "n/a"))] + [format_value(k, summary.get(k)) for k, _ in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if "nhm" in metrics:
        lines += ["", f"**NHM** (harmonic mean of sharp and blurry F1): {format_value('nhm', metrics['nhm'])} "
                      f"(sharp F1 {format_value('f1', metrics.get('f1_sharp'))}, "
                      f"blurry F1 {format_value('f1', metrics.get('f1_blurry'))})"]
    return lines


def _markdown(metrics: Mapping[str, Any], title: str, plots: list[Path]) -> str:
    """The main table, then one section per extra by-level summary nested in `metrics` (e.g. a
    baseline's), then the plots."""
    lines = [f"# {title}", ""] + _table(metrics)
    for key, value in metrics.items():
        if key not in ("overall", "per_level") and isinstance(value, Mapping) and "per_level" in value:
            lines += ["", f"## {key}", ""] + _table(value)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def save_figure(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _plot_pr(pr_curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for label, (precision, recall) in pr_curves.items():
        precision, recall = np.asarray(precision, dtype=float), np.asarray(recall, dtype=float)
        if precision.size:  # start flat from recall 0 at the first detection's precision
            ax.plot(np.r_[0.0, recall], np.r_[precision[0], precision], label=str(label))
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    if ax.lines:
        ax.legend(title="Blur level")
    else:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center")
    return save_figure(fig, path)


def _plot_per_level(per_level: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    levels = sorted(per_level, key=float)
    x = [float(lv) for lv in levels]
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for key, label in (("f1", "F1"), ("ap50", "AP@0.5")):
        ax.plot(x, [per_level[lv][key] for lv in levels], marker="o", label=label)
    ax.set(xlabel="Blur level (px)", ylabel="Score", ylim=(0, 1.02), title="Detection vs blur level")
    ax.legend()
    return save_figure(fig, path)


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """The image as float RGB in [0, 1], stretched between its 1st and 99th percentiles."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    elif x.ndim == 3 and x.shape[2] in (1, 3, 4):
        x = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[..., :3]
    else:
        raise ValueError(f"expected an overlay image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {x.shape}")
    lo, hi = np.percentile(x, (1, 99))
    return np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)


def _plot_overlay(image: np.ndarray, pred_labels: np.ndarray, true_labels: np.ndarray, path: Path) -> Path:
    rgb = _display_rgb(image)
    for labels, colour in ((true_labels, TRUE_COLOUR), (pred_labels, PRED_COLOUR)):
        labels = np.asarray(labels)
        if labels.shape != rgb.shape[:2]:
            raise ValueError(f"expected overlay labels of shape {rgb.shape[:2]}, got {labels.shape}")
        rgb[find_boundaries(labels, mode="inner")] = colour
    h, w = rgb.shape[:2]
    fig = Figure(figsize=(6, 6 * h / w))
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    ax.legend(handles=[Patch(color=PRED_COLOUR, label="predicted"), Patch(color=TRUE_COLOUR, label="ground truth")],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    return save_figure(fig, path)


def write_report(metrics: Mapping[str, Any], out_dir: str | Path, title: str = "Segmentation report",
                 pr_curves: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 overlay: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[Path]:
    """Write metrics.json, report.md and the plots into `out_dir`; return the written paths.

    `metrics` is a `summarize` or `summarize_by_level` dictionary, optionally with more entries
    (written to metrics.json with NaN as null; nested by-level summaries get their own table). Plots: pr_curve.png when `pr_curves` ({label: (precision, recall)}) is given,
    f1_per_level.png when `metrics` has per-level results, overlay.png when `overlay`
    (image, pred_labels, true_labels) is given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    if pr_curves:
        plots.append(_plot_pr(pr_curves, out_dir / "pr_curve.png"))
    if "per_level" in metrics:
        plots.append(_plot_per_level(metrics["per_level"], out_dir / "f1_per_level.png"))
    if overlay is not None:
        plots.append(_plot_overlay(*overlay, out_dir / "overlay.png"))
    json_path = out_dir / "metrics.json"
    json_path.write_text(json.dumps(jsonable(metrics), indent=2) + "\n")
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(metrics, title, plots))
    logger.info("wrote report to %s", out_dir)
    return [json_path, md_path, *plots]
