"""Markdown tables the fluorescence model cards share: the defocus sweep side by side and the real z = 00 counts."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: `cyseg evaluate --model default,runs/previous-default.pt,unet,default-v1,combined,focus-gated,otsu ...
#: --out runs/defocus-sweep` (previous-default: the default before it, from git), its comparison.json kept here.
SWEEP = ROOT / "benchmarks" / "results" / "defocus_sweep.json"
SWEEP_COMMAND = ("cyseg evaluate --model default,runs/previous-default.pt,unet,default-v1,combined,focus-gated,otsu --images "
                 "../shared/data/bbbc039/val/images --labels ../shared/data/bbbc039/val/labels "
                 "--defocus 0,2,4,8,12,16,20,28 --out runs/defocus-sweep")
#: `benchmarks/real_defocus.py`.
REAL = ROOT / "benchmarks" / "results" / "real_defocus.json"


def f1_by_level(compared: dict) -> str:
    """F1 per blur level and NHM, one row per model of a side-by-side evaluation."""
    levels = sorted(next(iter(compared.values()))["per_level"], key=float)
    header = "| model | " + " | ".join(f"{lv} px" for lv in levels) + " | NHM |"
    rule = "|---" * (len(levels) + 2) + "|"
    rows = [f"| {name} | " + " | ".join(f"{m['per_level'][lv]['f1']:.3f}" for lv in levels)
            + f" | {m.get('nhm', float('nan')):.3f} |" for name, m in compared.items()]
    return "\n".join([header, rule, *rows])


def real_defocus_counts(real: dict) -> str:
    """Nuclei found per real z = 00 plane by each model, with the totals."""
    models = real["models"]
    planes = next(iter(real["counts"].values()))
    rows = [f"| {plane} | " + " | ".join(str(real["counts"][m][plane]) for m in models) + " |" for plane in planes]
    total = "| **total** | " + " | ".join(str(real["summary"][m]["total"]) for m in models) + " |"
    return "\n".join(["| plane | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|", *rows, total])


def shared_sections() -> str:
    """The sweep and the real-defocus sections, from the kept results (empty parts where absent)."""
    parts = []
    if SWEEP.is_file():
        parts += ["## The fluorescence models side by side (one `cyseg evaluate` run)", "",
                  f"`{SWEEP_COMMAND}` (`default` is `bns`; `previous-default` the `bns` weights it replaced, "
                  "`git show b6b71d0:segmenter/weights/bns-bbbc039.pt`; F1 at IoU ≥ 0.5 per blur radius, optical PSF):", "",
                  f1_by_level(json.loads(SWEEP.read_text())), "", "![F1 per blur level](../../docs/defocus_sweep.png)", ""]
    if REAL.is_file():
        parts += ["## Real defocus: the 21 BBBC006 z = 00 planes (no labels)", "",
                  "Nuclei found per plane (`python benchmarks/real_defocus.py --models "
                  "default-v1,runs/previous-default.pt,unet,default,otsu`); "
                  "the planes sit at a blur radius of 20–32 px (`scripts/calibrate_defocus.py`). Two planes, outlines "
                  "per model:", "", "![a01_s1](../../docs/real_defocus/a01_s1.png)",
                  "![a19_s2](../../docs/real_defocus/a19_s2.png)", "", real_defocus_counts(json.loads(REAL.read_text())), ""]
    return "\n".join(parts)
