"""Several models' evaluations side by side: comparison.json, comparison.md and per-level plots."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .report import format_value, jsonable, save_figure

_PLOTTED = (("f1", "F1"), ("ap50", "AP@0.5"), ("count_mape", "Count MAPE (%)"))


def _markdown(results: Mapping[str, Mapping[str, Any]], title: str, plot: Path) -> str:
    levels = sorted({lv for m in results.values() for lv in m["per_level"]}, key=float)
    lines = [f"# {title}", "", "Per blur level (pixels of synthetic optical defocus): F1 / AP@0.5 / count MAPE (%)"
             " / focus-classifier error (focus-gated models only).", "",
             "| Model | " + " | ".join(f"blur {lv}" for lv in levels) + " | NHM |",
             "|---" * (len(levels) + 2) + "|"]
    for name, metrics in results.items():
        cells = []
        for lv in levels:
            m = metrics["per_level"].get(lv)
            error = metrics.get("classifier_error", {}).get(lv)
            cell = "n/a" if m is None else " / ".join(format_value(k, m[k]) for k, _ in _PLOTTED)
            cells.append(cell + ("" if error is None else f" / {error:.0%}"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {format_value('nhm', metrics.get('nhm'))} |")
    lines += ["", f"![per level]({plot.name})", ""]
    return "\n".join(lines)


def _plot(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(4 * len(_PLOTTED), 3.6))
    for index, (key, label) in enumerate(_PLOTTED):
        ax = fig.add_subplot(1, len(_PLOTTED), index + 1)
        for name, metrics in results.items():
            levels = sorted(metrics["per_level"], key=float)
            ax.plot([float(lv) for lv in levels], [metrics["per_level"][lv][key] for lv in levels],
                    marker="o", label=name)
        ax.set_xlabel("blur (px)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_comparison(results: Mapping[str, Mapping[str, Any]], out_dir: str | Path,
                     title: str = "Model comparison") -> Path:
    """Write the side-by-side files for `results` (model name -> `summarize_by_level` metrics);
    returns the markdown file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(jsonable(results), indent=2))
    plot = _plot(results, out / "comparison.png")
    markdown = out / "comparison.md"
    markdown.write_text(_markdown(results, title, plot))
    return markdown
