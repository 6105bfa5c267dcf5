"""Report hook of studies/landscape_glyphs.yaml: the loss-landscape figures that per-seed plots cannot show.

``landscape_report(study, report, runs_root, results_dir)`` reads the files LossLandscape wrote into the study's run
directories (``<run>/landscape/<fit_end | validate_last>/*.npz``, ``trajectory.png``) and writes, beside the report:

* ``<study>_batch.png``: the 2-D contours of the small- and the large-batch minimum (seed 0), the 1-D curves of every
  seed of both, and the linear interpolation between the two minima of seed 0;
* ``<study>_skip.png``: the 2-D contours with and without skip connections (seed 0) and their 1-D curves;
* ``<study>_trajectory.png``: the PCA trajectory of the small-batch run (seed 0), as the callback drew it.

It returns the markdown that goes under the report's tables (the figures, and whether the rerun of the small-batch
seed 0 that kept its checkpoints measured the same landscape as the small stage's seed 0). Stages that have not
run are skipped with a line saying so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

CONTOUR_LEVELS = np.arange(0.1, 10.01, 0.5)  # the reference code's (vmin, vmax, step) = (0.1, 10, 0.5)


def _landscape_file(runs_root: Path, stage: str, seed: int, name: str) -> Path | None:
    """``<runs_root>/<stage>/seed<seed>/landscape/<tag>/<name>`` (fit_end or validate_<ckpt>), or None."""
    found = sorted((runs_root / stage / f"seed{seed}" / "landscape").glob(f"*/{name}"))
    return found[0] if found else None


def _load(runs_root: Path, stage: str, seed: int, name: str) -> dict[str, np.ndarray] | None:
    path = _landscape_file(runs_root, stage, seed, name)
    if path is None:
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _per_seed(report: dict[str, Any], metric: str) -> dict[int, float]:
    """The per-seed values of a metric in the report (its only grid point), seeds as ints."""
    m = report.get("metrics", {}).get(metric)
    if not m:
        return {}
    point = next(iter(m["points"].values()), {})
    return {int(k): v for k, v in (point.get("per_seed") or {}).items() if v is not None}


def _contour(ax: Any, s: dict[str, np.ndarray], title: str) -> None:
    gx, gy = np.meshgrid(s["x"], s["y"])
    cs = ax.contour(gx, gy, s["loss"], levels=CONTOUR_LEVELS, cmap="summer")
    ax.clabel(cs, inline=True, fontsize=6)
    ax.plot([0], [0], "k+")
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")


def _batch_figure(study: Any, report: dict[str, Any], runs_root: Path, path: Path) -> list[str]:
    import matplotlib.pyplot as plt

    notes = []
    sharp = {s: _per_seed(report, f"{s}_sharpness") for s in ("small", "large")}
    acc = {s: _per_seed(report, f"{s}_acc") for s in ("small", "large")}
    batch = {s: study.stages[s].recipe for s in ("small", "large")}
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, which, label in ((axes[0], "small", "batch 32"), (axes[1], "large", "batch 512")):
        s = _load(runs_root, f"surface_{which}", 0, "surface_2d.npz")
        if s is None:
            notes.append(f"surface_{which} (seed 0) has not run: no 2-D contour")
            ax.set_axis_off()
            continue
        extra = ""
        if 0 in sharp[which] and 0 in acc[which]:
            extra = f"\nsharpness {sharp[which][0]:.3f}, test acc {acc[which][0]:.1f}%"
        _contour(ax, s, f"{label} ({Path(batch[which]).stem}), seed 0{extra}")
    for which, colour, label in (("small", "b", "batch 32"), ("large", "r", "batch 512")):
        first = True
        for seed in study.stages[which].seeds:
            c = _load(runs_root, which, seed, "surface_1d.npz")
            if c is None:
                continue
            axes[2].plot(c["x"], c["loss"], colour + "-", alpha=0.7, label=label if first else None)
            first = False
    axes[2].set_ylim(0, 5)
    axes[2].set_xlabel("alpha (filter-normalised direction)")
    axes[2].set_ylabel("train loss")
    axes[2].legend(fontsize=8)
    axes[2].set_title("1-D curves, every seed", fontsize=8)
    interp = _load(runs_root, "interpolate", 0, "interpolation.npz")
    if interp is None:
        notes.append("interpolate (seed 0) has not run: no interpolation curve")
        axes[3].set_axis_off()
    else:
        ax = axes[3]
        ax.plot(interp["alpha"], interp["loss"], "b-")
        ax.set_ylabel("train loss", color="b")
        ax.set_xlabel("alpha: 0 = batch 32, 1 = batch 512 (seed 0)")
        ax2 = ax.twinx()
        ax2.plot(interp["alpha"], interp["acc"], "r--")
        ax2.set_ylabel("train accuracy (%)", color="r")
        ax.set_title("linear interpolation (states)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return notes


def _skip_figure(report: dict[str, Any], runs_root: Path, path: Path) -> list[str]:
    import matplotlib.pyplot as plt

    notes = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, stage, label in ((axes[0], "skip", "ResNet-20 (skip connections)"),
                             (axes[1], "noskip", "ResNet-20, no skips")):
        s = _load(runs_root, stage, 0, "surface_2d.npz")
        if s is None:
            notes.append(f"{stage} (seed 0) has not run: no 2-D contour")
            ax.set_axis_off()
            continue
        sharp, minima = _per_seed(report, f"{stage}_sharpness"), _per_seed(report, f"{stage}_local_minima")
        extra = f"\nsharpness {sharp[0]:.3f}, {int(minima[0])} local minima" if 0 in sharp and 0 in minima else ""
        _contour(ax, s, label + extra)
    for stage, colour, label in (("skip", "b", "ResNet-20"), ("noskip", "r", "no skips")):
        c = _load(runs_root, stage, 0, "surface_1d.npz")
        if c is not None:
            axes[2].plot(c["x"], c["loss"], colour + "-", label=label)
    axes[2].set_ylim(0, 10)
    axes[2].set_xlabel("alpha (filter-normalised direction)")
    axes[2].set_ylabel("train loss")
    axes[2].legend(fontsize=8)
    axes[2].set_title("1-D curves (seed 0, same direction seed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return notes


def landscape_report(study: Any, report: dict[str, Any], runs_root: Path, results_dir: Path) -> str:
    """The figures and checks of the loss-landscape study (see the module docstring); returns markdown."""
    import matplotlib

    matplotlib.use("Agg")
    runs_root, results_dir = Path(runs_root), Path(results_dir)
    name = study.name
    lines = ["## Loss-landscape figures", ""]
    extra = report.setdefault("extra", {})
    figures = extra.setdefault("figures", {})

    batch_png = results_dir / f"{name}_batch.png"
    notes = _batch_figure(study, report, runs_root, batch_png)
    figures["batch"] = batch_png.name
    lines += [("Small vs large batch (narrow VGG-9): 2-D contours of seed 0 (validate-time, on each run's "
               "last.ckpt), the 1-D curves of every seed, and the linear interpolation from the batch-32 minimum "
               "(a = 0) to the batch-512 minimum (a = 1) of seed 0."), "", f"![batch]({batch_png.name})", ""]
    lines += [f"* {n}" for n in notes] + ([""] if notes else [])

    skip_png = results_dir / f"{name}_skip.png"
    notes = _skip_figure(report, runs_root, skip_png)
    figures["skip"] = skip_png.name
    lines += [("Skip connections (ResNet-20 vs the same net without shortcuts): 2-D contours and 1-D curves of "
               "seed 0."),
              "", f"![skip]({skip_png.name})", ""]
    lines += [f"* {n}" for n in notes] + ([""] if notes else [])

    traj = _landscape_file(runs_root, "trajectory", 0, "trajectory.png")
    if traj is not None:
        target = results_dir / f"{name}_trajectory.png"
        shutil.copyfile(traj, target)
        figures["trajectory"] = target.name
        lines += [("PCA trajectory of the batch-32 training path (seed 0; initial weights and every epoch), on "
                   "the loss surface along the two principal axes."), "", f"![trajectory]({target.name})", ""]
    else:
        lines += ["* trajectory (seed 0) has not run: no PCA trajectory", ""]

    # the trajectory stage reruns small's seed 0 with checkpoints kept: same seed, so the same trained net
    rerun, small = _per_seed(report, "trajectory_sharpness"), _per_seed(report, "small_sharpness")
    if 0 in rerun and 0 in small:
        same = rerun[0] == small[0]
        extra["trajectory_rerun_identical"] = same
        verdict = "identical" if same else "DIFFERENT: the rerun did not reproduce the run, so the trajectory " \
            "belongs to another net"
        check = (f"Check: the trajectory stage's rerun of batch 32, seed 0 measured sharpness {rerun[0]:.6f}; the "
                 f"small stage's seed 0 measured {small[0]:.6f} ({verdict}).")
        lines += [check, ""]
    return "\n".join(lines)
