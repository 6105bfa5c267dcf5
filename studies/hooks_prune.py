"""Report hook of studies/prune_sensitivity.yaml: the per-layer sensitivity curves (accuracy against the share of
a layer's filters pruned away, each layer alone, no retraining; Li et al., ICLR 2017, Figure 2(b)) that the generic
per-seed plots cannot draw.

``sensitivity_report(study, report, study_dir, results_dir)`` reads what ``studies.probes_prune.
PruneSensitivitySweep`` wrote into each finished run of the sweep stage (``prune_sensitivity.json``), averages the
curves over the seeds, and writes ``<study>_curves.png`` beside the report (one line per layer, the mean over seeds,
the unpruned accuracy as a dashed line). It returns a markdown table (layers x ratios, mean over seeds) with the
figure's link, and puts the means under ``report["extra"]["sensitivity"]``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SWEEP_FILE = "prune_sensitivity.json"


def sweep_stage(study: Any) -> str:
    """The study's sweep stage: the one stage that trains nothing (``fit: false``)."""
    names = [name for name, stage in study.stages.items() if not stage.fit]
    if len(names) != 1:
        raise ValueError(f"{study.path}: the prune-sensitivity report hook needs exactly one stage with fit: false "
                         f"(the sweep); found {names or 'none'}.")
    return names[0]


def collect(study: Any, study_dir: Path) -> dict[int, dict[str, Any]]:
    """seed -> the sweep's result (``prune_sensitivity.json``) of every finished sweep run."""
    stage = sweep_stage(study)
    out = {}
    for seed in study.stages[stage].seeds:
        path = Path(study_dir) / stage / f"seed{seed}" / SWEEP_FILE
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


def mean_curves(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per layer and ratio the mean over seeds (``None`` where a ratio keeps no filter), and the unpruned mean."""
    first = next(iter(results.values()))
    ratios, layers = first["ratios"], first["layers"]
    for seed, r in results.items():
        if r["ratios"] != ratios or r["layers"] != layers:
            raise ValueError(f"prune sensitivity: the sweep of seed {seed} used other ratios or layers than seed "
                             f"{next(iter(results))}; rerun the sweep stage with one configuration.")
    curves = {}
    for layer in layers:
        row = []
        for i in range(len(ratios)):
            vals = [r["curves"][layer][i] for r in results.values()]
            row.append(None if any(v is None for v in vals) else sum(vals) / len(vals))
        curves[layer] = row
    unpruned = sum(r["unpruned_acc"] for r in results.values()) / len(results)
    return {"seeds": sorted(results), "ratios": ratios, "layers": layers, "curves": curves, "unpruned_acc": unpruned,
            "widths": first["widths"], "paper_numbers": first["paper_numbers"]}


def plot(mean: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [100 * r for r in mean["ratios"]]
    layers = mean["layers"]
    cmap = plt.get_cmap("viridis" if len(layers) > 10 else "tab10")
    for i, name in enumerate(layers):
        ys = [math.nan if a is None else a for a in mean["curves"][name]]
        k = mean["paper_numbers"].get(name)
        label = f"conv {k} ({name}, {mean['widths'][name]})" if k else name
        color = cmap(i / max(1, len(layers) - 1)) if len(layers) > 10 else cmap(i % 10)
        ax.plot(xs, ys, marker="o", ms=3, label=label, color=color)
    ax.axhline(mean["unpruned_acc"], color="grey", lw=0.8, ls="--", label="unpruned")
    ax.set_xlabel("Filters pruned away (%)")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(layers) > 8 else 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sensitivity_report(study: Any, report: dict[str, Any], study_dir: Path, results_dir: Path) -> str:
    results = collect(study, Path(study_dir))
    if not results:
        return "## Sensitivity curves\n\nNo sweep run has finished yet.\n"
    mean = mean_curves(results)
    n = len(mean["seeds"])
    png = plot(mean, Path(results_dir) / f"{study.name}_curves.png",
               f"{study.name}: each layer pruned alone by L1 norm, no retraining (mean of {n} seed(s))")
    report.setdefault("extra", {})["sensitivity"] = mean
    head = "| layer (paper number, filters) | " + " | ".join(f"{100 * r:g}%" for r in mean["ratios"]) + " |"
    lines = ["## Sensitivity curves", "",
             f"Test accuracy % with one layer pruned at each ratio (the smallest-L1 filters removed, no retraining), "
             f"mean over seed(s) {', '.join(map(str, mean['seeds']))}; unpruned: {mean['unpruned_acc']:.2f}. "
             "A dash: the ratio keeps no filter.", "", f"![sensitivity curves]({png.name})", "", head,
             "|---|" + "---|" * len(mean["ratios"])]
    for name in mean["layers"]:
        k = mean["paper_numbers"].get(name)
        cells = ["-" if a is None else f"{a:.1f}" for a in mean["curves"][name]]
        lines.append(f"| {name} ({k}, {mean['widths'][name]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
