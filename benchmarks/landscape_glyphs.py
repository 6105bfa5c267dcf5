"""CPU-scale reproductions of "Visualizing the Loss Landscape of Neural Nets" (Li et al., NeurIPS 2018) on glyphs.

Two studies, each training real ``modules.ImageClassifier`` models with ``lightning.Trainer`` and measuring the
landscape with the project's ``callbacks.loss_landscape.LossLandscape`` callback at fit end (the same code path
as the full-scale recipes):

* ``skip``: ResNet-20 with option-A shortcuts vs the same net without skip connections (``shortcut: none``),
  same data, seeds and schedule. Paper (Fig. 5): without skips the surface is sharper and more chaotic, with
  skips it stays smooth and nearly convex (the effect grows with depth; ResNet-56-noshort did not train at this
  budget, see ``_setup``).
* ``batch``: a narrow VGG-9 trained with small (32) vs large (512) batches, 5 seeds each (same seed = same
  initial weights and data order, so the comparison is paired). Paper (Fig. 3): under filter normalisation the
  large-batch minimum is sharper, and it generalises worse. The seed-0 pair is also linearly interpolated
  (``states``, -0.5..1.5), and the small-batch seed-0 run's per-epoch checkpoints give the PCA trajectory.

"Sharper" is one number: the mean loss increase ``L(theta +- 0.5 d_k) - L(theta)`` over 8 random
filter-normalised directions d_k (biases and BN ignored) and both signs, on the first ``--*-samples``
training images. Chaos is summarised by the 2-D surface's number of grid-local minima and the fraction of grid
points whose finite-difference 2x2 Hessian has a negative eigenvalue.

Claims are decided with ``benchmarks.seeds.compare`` (paired over seeds, 95% t interval) against margins fixed
before running: accuracy gap small-batch - large-batch > 0 points, sharpness gap large - small > 0 (and, for the
skip study, no-skip - skip > 0, reported as descriptive with fewer than 5 seeds).

CPU-scale deviations from the paper (to fit ~20 min on 2 shared cores): glyphs (10 classes, difficulty 0.5)
instead of CIFAR-10, average-pooled from 32x32 to 8x8; 2000 training images; ResNet-20 instead of ResNet-56; a
narrow VGG-9 (widths 16/32/64, hidden 64); 40 (batch) and 20 (skip) epochs instead of 300; batch 512 instead of
8192 (ratio 16 instead of 64); landscapes on 1000 training images and coarser grids.

Usage::

    python -m benchmarks.landscape_glyphs --out results/landscape_glyphs.json   # both studies, ~20 min

Writes the JSON, ``<out stem>.md`` (tables) and the side-by-side figures ``<out stem>_skip.png``,
``<out stem>_batch.png`` and ``<out stem>_trajectory.png``; the per-run landscape outputs (npz, PNGs,
summary.json) stay under ``--work`` (default ``runs/landscape_glyphs``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl

NARROW_VGG9 = {"cfg": [16, 16, "M", 32, 32, "M", 64, 64, 64, "M"], "hidden": 64, "input_size": 16}


def narrow_vgg9(input_size: int) -> dict[str, Any]:
    """net_kwargs of the narrow VGG-9 (VGG-9's layout at a quarter of the widths) for square inputs of this size."""
    return {**NARROW_VGG9, "input_size": int(input_size)}
ACC_MARGIN = 0.0  # points: small-batch test accuracy - large-batch, fixed before running
SHARPNESS_MARGIN = 0.0  # loss units: large-batch sharpness - small-batch, fixed before running


# ================================================================================================ data
class PooledGlyphs(pl.LightningDataModule):
    """Glyphs (``datamodules.glyphs``) average-pooled by ``pool`` as in-memory TensorDatasets; val = test split."""

    def __init__(self, train_size: int = 2000, test_size: int = 2000, difficulty: float = 1.0,
                 num_classes: int = 10, pool: int = 2, data_seed: int = 0, batch_size: int = 32,
                 shuffle_seed: int = 0) -> None:
        super().__init__()
        self.train_size, self.test_size, self.difficulty = train_size, test_size, difficulty
        self.num_classes, self.pool, self.data_seed = num_classes, pool, data_seed
        self.batch_size, self.shuffle_seed = batch_size, shuffle_seed
        self.input_shape = (1, 32 // pool, 32 // pool)
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.test_set = _glyph_tensors(self.train_size, self.test_size, self.difficulty,
                                                       self.num_classes, self.pool, self.data_seed)
        self.val_set = self.test_set

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=500)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=500)


@functools.lru_cache(maxsize=4)
def _glyph_tensors(train_size: int, test_size: int, difficulty: float, num_classes: int, pool: int,
                   data_seed: int) -> tuple[TensorDataset, TensorDataset]:
    from datamodules.glyphs import GlyphsDataModule

    dm = GlyphsDataModule(num_classes=num_classes, difficulty=difficulty, train_size=train_size,
                          test_size=test_size, seed=data_seed)
    dm.setup()

    def prep(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, pool) if pool > 1 else x

    return (TensorDataset(prep(dm.train_images), dm.train_labels),
            TensorDataset(prep(dm.test_images), dm.test_labels))


# ================================================================================================ one run
@dataclass
class RunSpec:
    name: str
    net: str
    net_kwargs: dict[str, Any]
    batch_size: int
    epochs: int
    seed: int
    lr: float = 0.1
    weight_decay: float = 5e-4
    landscape: dict[str, Any] = field(default_factory=dict)
    keep_checkpoints: bool = False


def train_and_measure(spec: RunSpec, data: dict[str, Any], work: Path) -> dict[str, Any]:
    """Train ``spec`` and run the LossLandscape callback at fit end; returns accuracies, losses and the summary."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks.loss_landscape import LossLandscape
    from modules.image_classifier import ImageClassifier

    run_dir = work / spec.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    dm = PooledGlyphs(batch_size=spec.batch_size, shuffle_seed=spec.seed, **data)
    pl.seed_everything(spec.seed, verbose=False)
    milestones = [int(spec.epochs * 0.5), int(spec.epochs * 0.75)]
    model = ImageClassifier(
        net=spec.net, num_classes=dm.num_classes, input_shape=dm.input_shape, net_kwargs=spec.net_kwargs,
        optimizer=functools.partial(torch.optim.SGD, lr=spec.lr, momentum=0.9, nesterov=True,
                                    weight_decay=spec.weight_decay),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.MultiStepLR, milestones=milestones, gamma=0.1),
        log_images=False,
    )
    landscape = LossLandscape(out_dir=str(run_dir / "landscape"), run_on="fit_end", progress=False,
                              **spec.landscape)
    callbacks: list[pl.Callback] = [landscape]
    if spec.keep_checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_top_k=-1, every_n_epochs=1,
                                         save_on_train_epoch_end=True))
    trainer = pl.Trainer(
        max_epochs=spec.epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=spec.keep_checkpoints, num_sanity_val_steps=0,
        check_val_every_n_epoch=spec.epochs, callbacks=callbacks, default_root_dir=str(run_dir),
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    summary = landscape.summary or {}
    out = {
        "name": spec.name, "net": spec.net, "net_kwargs": spec.net_kwargs, "batch_size": spec.batch_size,
        "epochs": spec.epochs, "seed": spec.seed, "steps": trainer.global_step, "seconds": seconds,
        "test_acc": 100.0 * metrics.get("val/acc1", float("nan")), "test_loss": metrics.get("val/loss"),
        "train_loss_subset": summary.get("center_loss"), "train_acc_subset": summary.get("center_acc"),
        "sharpness": summary.get("sharpness", {}).get("mean_increase"),
        "sharpness_std_over_directions": summary.get("sharpness", {}).get("std_increase"),
        "landscape_dir": str(run_dir / "landscape"), "summary": summary,
        "weight_norm": float(torch.sqrt(sum((p.detach().double() ** 2).sum() for n, p in model.named_parameters()
                                            if p.dim() > 1))),
    }
    if spec.keep_checkpoints:
        files = list((run_dir / "checkpoints").glob("epoch=*.ckpt"))
        out["checkpoint"] = str(max(files, key=lambda f: int(re.search(r"epoch=(\d+)", f.name).group(1))))
    print(f"  {spec.name}: test acc {out['test_acc']:.2f}%, train loss {out['train_loss_subset']:.4f}, "
          f"sharpness {out['sharpness']:.4f}, {seconds:.0f} s", flush=True)
    return out


# ================================================================================================ studies
def skip_study(args: argparse.Namespace, data: dict[str, Any], work: Path) -> dict[str, Any]:
    runs = []
    for seed in range(args.skip_seeds):
        for shortcut in ("A", "none"):
            spec = RunSpec(
                name=f"skip_{args.skip_net}_{shortcut}_s{seed}", net=args.skip_net, net_kwargs={"shortcut": shortcut},
                batch_size=64, epochs=args.skip_epochs, seed=seed,
                landscape={"x_grid": "-1:1:21", "y_grid": args.skip_grid, "max_samples": args.skip_samples,
                           "sharpness_directions": 8, "sharpness_radius": 0.5, "batch_size": 500,
                           "plot": seed == 0},
            )
            runs.append(train_and_measure(spec, data, work))
    out: dict[str, Any] = {"net": args.skip_net, "runs": runs}
    if args.skip_seeds >= 2:
        from benchmarks.seeds import compare

        sh_a = [r["sharpness"] for r in runs if r["net_kwargs"]["shortcut"] == "A"]
        sh_n = [r["sharpness"] for r in runs if r["net_kwargs"]["shortcut"] == "none"]
        c = compare(sh_n, sh_a, margin=SHARPNESS_MARGIN, min_seeds=2, names=("no-skip", "skip"))
        out["comparisons"] = {"sharpness_noskip_minus_skip": {**asdict(c), "text": str(c) + (
            f" [only {args.skip_seeds} seeds: below the project's 5-seed bar, descriptive only]"
            if args.skip_seeds < 5 else "")}}
    return out


def batch_study(args: argparse.Namespace, data: dict[str, Any], work: Path) -> dict[str, Any]:
    from benchmarks.seeds import compare, mean_ci

    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    for seed in range(args.seeds):
        for which, bs in (("small", args.small_batch), ("large", args.large_batch)):
            landscape = {"x_grid": "-1:1:21", "max_samples": args.batch_samples, "sharpness_directions": 8,
                         "sharpness_radius": 0.5, "batch_size": 500, "plot": seed == 0}
            if seed == 0:
                landscape["y_grid"] = args.batch_grid
            if seed == 0 and which == "small":
                landscape.update({"trajectory": "auto", "save_initial": True, "trajectory_points": 15})
            if seed == 0 and which == "large" and runs["small"]:
                landscape.update({"interpolate_to": runs["small"][0]["checkpoint"],
                                  "interpolate_grid": "-0.5:1.5:41", "interpolate_dir_type": "states"})
            spec = RunSpec(name=f"batch_vgg9n_bs{bs}_s{seed}", net="vgg9",
                           net_kwargs=narrow_vgg9(32 // args.pool), batch_size=bs,
                           epochs=args.batch_epochs, seed=seed, landscape=landscape,
                           keep_checkpoints=(seed == 0 and which == "small"))
            runs[which].append(train_and_measure(spec, data, work))
    out: dict[str, Any] = {"runs": runs}
    if args.seeds >= 2:
        acc_s, acc_l = [r["test_acc"] for r in runs["small"]], [r["test_acc"] for r in runs["large"]]
        sh_s, sh_l = [r["sharpness"] for r in runs["small"]], [r["sharpness"] for r in runs["large"]]
        out["intervals"] = {
            "test_acc_small": asdict(mean_ci(acc_s)), "test_acc_large": asdict(mean_ci(acc_l)),
            "sharpness_small": asdict(mean_ci(sh_s)), "sharpness_large": asdict(mean_ci(sh_l)),
        }
        min_seeds = min(5, args.seeds)
        acc_cmp = compare(acc_s, acc_l, margin=ACC_MARGIN, min_seeds=min_seeds, names=("small-batch", "large-batch"))
        sh_cmp = compare(sh_l, sh_s, margin=SHARPNESS_MARGIN, min_seeds=min_seeds,
                         names=("large-batch", "small-batch"))
        out["comparisons"] = {"accuracy_small_minus_large": {**asdict(acc_cmp), "text": str(acc_cmp)},
                              "sharpness_large_minus_small": {**asdict(sh_cmp), "text": str(sh_cmp)}}
    return out


# ================================================================================================ figures
def _load(run: dict[str, Any], name: str) -> dict[str, np.ndarray] | None:
    path = Path(run["landscape_dir"]) / f"{name}.npz"
    return dict(np.load(path)) if path.is_file() else None


def _contour(ax: Any, s: dict[str, np.ndarray], title: str) -> None:
    gx, gy = np.meshgrid(s["x"], s["y"])
    cs = ax.contour(gx, gy, s["loss"], levels=np.arange(0.1, 10.01, 0.5), cmap="summer")
    ax.clabel(cs, inline=True, fontsize=6)
    ax.plot([0], [0], "k+")
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")


def skip_figure(study: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {r["net_kwargs"]["shortcut"]: r for r in study["runs"] if r["seed"] == 0}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    net = study["net"].replace("resnet", "ResNet-")
    for ax, key, label in ((axes[0], "A", f"{net} (skip connections)"), (axes[1], "none", f"{net}, no skips")):
        s = _load(first[key], "surface_2d")
        if s is not None:
            _contour(ax, s, f"{label}\nsharpness {first[key]['sharpness']:.3f}, "
                            f"{first[key]['summary']['surface_2d']['local_minima']} local minima")
    for key, colour, label in (("A", "b", net), ("none", "r", "no skips")):
        c = _load(first[key], "surface_1d")
        if c is not None:
            axes[2].plot(c["x"], c["loss"], colour + "-", label=label)
    axes[2].set_ylim(0, 10)
    axes[2].set_xlabel("alpha (filter-normalised direction)")
    axes[2].set_ylabel("train loss")
    axes[2].legend(fontsize=8)
    axes[2].set_title("1-D curves (same seed, same direction seed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_figure(study: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    small, large = study["runs"]["small"], study["runs"]["large"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, run, label in ((axes[0], small[0], "small batch"), (axes[1], large[0], "large batch")):
        s = _load(run, "surface_2d")
        if s is not None:
            _contour(ax, s, f"{label} ({run['batch_size']}), seed 0\nsharpness {run['sharpness']:.3f}, "
                            f"test acc {run['test_acc']:.1f}%")
    for runs, colour, label in ((small, "b", "small batch"), (large, "r", "large batch")):
        for i, run in enumerate(runs):
            c = _load(run, "surface_1d")
            if c is not None:
                axes[2].plot(c["x"], c["loss"], colour + "-", alpha=0.7, label=label if i == 0 else None)
    axes[2].set_ylim(0, 5)
    axes[2].set_xlabel("alpha (filter-normalised direction)")
    axes[2].set_ylabel("train loss")
    axes[2].legend(fontsize=8)
    axes[2].set_title(f"1-D curves, {len(small)} seeds each", fontsize=8)
    interp = _load(large[0], "interpolation")
    if interp is not None:
        ax = axes[3]
        ax.plot(interp["alpha"], interp["loss"], "b-")
        ax.set_ylabel("train loss", color="b")
        ax.set_xlabel("alpha: 0 = large batch, 1 = small batch (seed 0)")
        ax2 = ax.twinx()
        ax2.plot(interp["alpha"], interp["acc"], "r--")
        ax2.set_ylabel("train accuracy (%)", color="r")
        ax.set_title("linear interpolation (states)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ================================================================================================ report
def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Loss landscapes on glyphs (CPU scale)", "",
             f"Command: `{report['command']}`  ", f"Commit: {report['commit']}; machine: {report['machine']}; "
             f"{report['seconds'] / 60:.1f} min wall.", "",
             "Sharpness = mean loss increase at radius 0.5 along 8 random filter-normalised directions (both signs; "
             "biases and BN ignored) over the first training images; surfaces on a -1:1 grid along 2 more such "
             "directions (seed 123). Local minima: grid points below their 8 neighbours; non-convex fraction: "
             "interior grid points whose finite-difference 2x2 Hessian has a negative eigenvalue.", "",
             _setup(report["args"]), ""]
    if "skip" in report:
        net = report["skip"]["net"]
        lines += [f"## Skip connections: {net} vs {net} without shortcuts", "",
                  "| net | seed | test acc (%) | train loss | sharpness (± sd over directions) | local minima (2-D) | "
                  "non-convex fraction (2-D) | seconds |", "|---|---|---|---|---|---|---|---|"]
        for r in report["skip"]["runs"]:
            s2 = r["summary"].get("surface_2d", {})
            lines.append(f"| {net} shortcut={r['net_kwargs']['shortcut']} | {r['seed']} | {r['test_acc']:.2f} | "
                         f"{_fmt(r['train_loss_subset'], 4)} | {_fmt(r['sharpness'])} ± "
                         f"{_fmt(r['sharpness_std_over_directions'])} | {s2.get('local_minima', 'n/a')} | "
                         f"{_fmt(s2.get('nonconvex_fraction'), 2)} | {r['seconds']:.0f} |")
        for c in report["skip"].get("comparisons", {}).values():
            lines += ["", f"* {c['text']}"]
        lines += ["", f"![skip]({Path(report['figures']['skip']).name})", ""]
    if "batch" in report:
        b = report["batch"]
        lines += ["## Small vs large batch: narrow VGG-9", "",
                  "| batch | seed | steps | test acc (%) | train loss | sharpness | weight norm | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for which in ("small", "large"):
            for r in b["runs"][which]:
                lines.append(f"| {r['batch_size']} | {r['seed']} | {r['steps']} | {r['test_acc']:.2f} | "
                             f"{_fmt(r['train_loss_subset'], 4)} | {_fmt(r['sharpness'])} | {r['weight_norm']:.2f} | "
                             f"{r['seconds']:.0f} |")
        if "comparisons" in b:
            lines += ["", "Paired over seeds (95% Student-t), margins fixed before running:", ""]
            for key, c in b["comparisons"].items():
                lines.append(f"* {key}: {c['text']}")
        lines += ["", f"![batch]({Path(report['figures']['batch']).name})", ""]
        if report["figures"].get("trajectory"):
            lines += [f"![trajectory]({Path(report['figures']['trajectory']).name})", ""]
    return "\n".join(lines) + "\n"


def _setup(a: dict[str, Any]) -> str:
    size = 32 // a["pool"]
    return (
        f"Setup (CPU-scale deviations from the paper): glyphs, 10 classes, difficulty {a['difficulty']}, "
        f"average-pooled to {size}x{size}, {a['train_size']} training / {a['test_size']} test images; SGD + Nesterov "
        f"momentum 0.9, lr 0.1 (/10 at 50% and 75% of training), weight decay 5e-4. Skip study: {a['skip_net']} with "
        f"option-A shortcuts vs none, batch 64, {a['skip_epochs']} epochs, {a['skip_seeds']} seeds, landscapes on "
        f"{a['skip_samples']} training images, 2-D grid 21 x {a['skip_grid'].split(':')[-1]}. Batch study: narrow "
        f"VGG-9 (VGG-9 layout at widths 16/32/64, hidden 64), batch {a['small_batch']} vs {a['large_batch']} (the "
        f"paper: 128 vs 8192), {a['batch_epochs']} epochs (the paper: 300), {a['seeds']} seeds (same seed = same "
        f"initial weights and data order, so the comparison is paired), landscapes on {a['batch_samples']} training "
        f"images. The paper's deeper pair (ResNet-56 vs ResNet-56-noshort) did not fit this budget: in a pilot at "
        f"the same scale ResNet-56-noshort stayed near chance after 20 epochs (16% test accuracy at lr 0.1, 14% at 0.03, 13% at "
        f"0.01) while ResNet-56 reached 70%, so the 20-layer pair is compared here.")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", choices=["skip", "batch", "all"], default="all")
    p.add_argument("--out", default="results/landscape_glyphs.json")
    p.add_argument("--work", default="runs/landscape_glyphs")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--difficulty", type=float, default=0.5)
    p.add_argument("--pool", type=int, default=4, help="average-pool the 32x32 glyphs by this factor")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the batch study")
    p.add_argument("--small-batch", type=int, default=32)
    p.add_argument("--large-batch", type=int, default=512)
    p.add_argument("--batch-epochs", type=int, default=40)
    p.add_argument("--batch-samples", type=int, default=1000, help="training images the landscapes use")
    p.add_argument("--batch-grid", default="-1:1:17")
    p.add_argument("--skip-net", default="resnet20")
    p.add_argument("--skip-seeds", type=int, default=2)
    p.add_argument("--skip-epochs", type=int, default=20)
    p.add_argument("--skip-samples", type=int, default=1000)
    p.add_argument("--skip-grid", default="-1:1:17")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"train_size": args.train_size, "test_size": args.test_size, "difficulty": args.difficulty,
            "pool": args.pool}
    start = time.perf_counter()
    report: dict[str, Any] = {
        "command": "python -m benchmarks.landscape_glyphs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "commit": _commit(), "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{args.threads} thread(s)",
        "args": vars(args), "data": {**data, "num_classes": 10},
        "margins": {"accuracy_points": ACC_MARGIN, "sharpness": SHARPNESS_MARGIN}, "figures": {},
    }
    stem = out.with_suffix("")
    if args.study in ("skip", "all"):
        print(f"skip study ({args.skip_net} with / without shortcuts)", flush=True)
        report["skip"] = skip_study(args, data, work)
        report["figures"]["skip"] = str(stem) + "_skip.png"
        skip_figure(report["skip"], Path(report["figures"]["skip"]))
    if args.study in ("batch", "all"):
        print("batch study (narrow VGG-9, small vs large batch)", flush=True)
        report["batch"] = batch_study(args, data, work)
        report["figures"]["batch"] = str(stem) + "_batch.png"
        batch_figure(report["batch"], Path(report["figures"]["batch"]))
        traj = Path(report["batch"]["runs"]["small"][0]["landscape_dir"]) / "trajectory.png"
        if traj.is_file():
            report["figures"]["trajectory"] = str(stem) + "_trajectory.png"
            shutil.copyfile(traj, report["figures"]["trajectory"])
    report["seconds"] = time.perf_counter() - start
    out.write_text(json.dumps(_plain(report), indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out}, {out.with_suffix('.md')} ({report['seconds'] / 60:.1f} min)")
    if "batch" in report and "comparisons" in report["batch"]:
        for c in report["batch"]["comparisons"].values():
            print("  " + c["text"])
    return report


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


if __name__ == "__main__":
    main()
