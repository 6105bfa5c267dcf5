"""Report hook of studies/quant_convex.yaml: the per-phase table of the excess loss (mean over seeds, every method
and grid step) and the excess-loss curves, from the ``excess_trace.json`` the probe (studies/probes_quant.py)
writes into every run directory. Called by ``python -m studies report`` (``report_hook`` in the study file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studies.spec import Study, run_name

ROWS = [("fp", "excess", "FP SGD"), ("bc", "excess", "BC buffer (stochastic Q)"),
        ("bc_det", "excess", "BC buffer (deterministic Q)"), ("bc", "excess_q", "BC deployed Q_d(buffer)"),
        ("sr", "excess", "SR"), ("r", "excess", "R")]
COLORS = {"FP SGD": "0.4", "BC buffer (stochastic Q)": "C0", "BC buffer (deterministic Q)": "C9",
          "BC deployed Q_d(buffer)": "C2", "SR": "C1", "R": "C3"}


def _traces(study: Study, root: Path, stage: str, step: str | None) -> list[dict[str, Any]]:
    axes = (("step", step),) if stage in study.stages and study.stages[stage].axes else ()
    out = []
    for seed in study.stages[stage].seeds if stage in study.stages else ():
        path = root / run_name(stage, axes, seed) / "excess_trace.json"
        if path.is_file() and (path.parent / "metrics" / "fit.json").is_file():
            out.append(json.loads(path.read_text()))
    return out


def _phase_means(trace: dict[str, Any], column: str) -> list[float]:
    steps = int(trace["steps_per_epoch"])
    values = dict(zip(trace["step"], trace[column]))
    phases = (max(trace["step"]) + 1 + steps - 1) // steps if trace["step"] else 0
    means = []
    for k in range(phases):
        half = [v for t, v in values.items() if k * steps + steps // 2 <= t < (k + 1) * steps]
        means.append(sum(half) / len(half) if half else float("nan"))
    return means


def report(study: Study, r: dict[str, Any], root: Path, results_dir: Path) -> str:
    grid_steps = list(study.axes["step"]["values"]) if "step" in study.axes else [None]
    lines = ["## Excess loss per learning-rate phase (mean over the finished seeds)", "",
             "F(w) - F(w*) of the stored weights (BC: the float buffer, and Q_d of it as deployed), mean of the "
             "records of each phase's second half, then over seeds (the script's table). From the runs' "
             "excess_trace.json.", ""]
    curves: dict[str, dict[str, list[float]]] = {}
    for step in grid_steps:
        table: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        curves[str(step)] = {}
        for stage, column, label in ROWS:
            traces = _traces(study, root, stage, step)
            if not traces:
                continue
            per_seed = [_phase_means(t, column) for t in traces]
            n = min(len(p) for p in per_seed)
            table[label] = [sum(p[k] for p in per_seed) / len(per_seed) for k in range(n)]
            counts[label] = len(traces)
            length = min(len(t["step"]) for t in traces)
            curves[str(step)][label] = [sum(t[column][i] for t in traces) / len(traces) for i in range(length)]
            curves[str(step)]["_x"] = traces[0]["step"][:length]
        if not table:
            continue
        phases = max(len(v) for v in table.values())
        lines += [f"### Grid step {step}", "", "| phase | " + " | ".join(f"{k} (n={counts[k]})" for k in table) + " |",
                  "|---|" + "---|" * len(table)]
        for k in range(phases):
            cells = " | ".join(f"{v[k]:.2e}" if k < len(v) else "-" for v in table.values())
            lines.append(f"| {k + 1} | {cells} |")
        lines.append("")
    r.setdefault("extra", {})["phase_tables_from"] = "excess_trace.json of each finished run"
    if any(curves.values()):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        points = [s for s in curves if curves[s]]
        fig, axes = plt.subplots(1, len(points), figsize=(6 * len(points), 4.2), squeeze=False)
        for ax, step in zip(axes[0], points):
            x = curves[step].pop("_x")
            for label, ys in curves[step].items():
                ax.plot(x[: len(ys)], ys, color=COLORS[label], label=label, lw=1.2)
            ax.set_yscale("log")
            ax.set_xlabel("SGD step (lr halved every epoch)")
            ax.set_ylabel("F(w) - F(w*), mean over seeds")
            ax.set_title(f"grid step {step}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        file = f"{study.name}_curves.png"
        fig.savefig(results_dir / file, dpi=110)
        plt.close(fig)
        lines += [f"![excess loss against the SGD step]({file})", ""]
    return "\n".join(lines)
