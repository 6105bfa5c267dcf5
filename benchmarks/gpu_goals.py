"""The GPU-cost goals, measured through main.py in one run, in priority order.

Every number comes from the ResNet-56 CIFAR-10 baseline recipe (``baseline_resnet56_cifar10``) built by main.py's
CLI as ``python main.py fit --config recipes/baseline_resnet56_cifar10.yaml`` builds it (logger, checkpoints,
progress bar and validation off; see ``benchmarks/throughput.py``), on its real datamodule reading full-size data
in the real on-disk format (the real set from ``--data-root``, else random images of the real size):

1. **loop**: the recipe at batch 128 through main.py vs the plain PyTorch loop on the same net, data pipeline and
   precision (``benchmarks.throughput.measure``), in fp32 and in bf16 + channels-last. Goal: fp32 ratio >= 0.9.
2. **pipeline**: the recipe at batch 128 through main.py with the device-resident CIFAR pipeline vs the DataLoader
   worker pipeline (PIL decoding and augmentation in ``--workers`` processes), alternating rounds; ratio = device
   images/s / worker images/s. Goal: >= 3.
3. **epoch**: the wall time of whole training epochs of the recipe at its batch 128 with its augmentation (random
   crop with 4-pixel padding and flip), in each of ``--epoch-modes``: ``--epochs`` epochs per mode, synchronised
   at each epoch's start and end. The first epoch includes cuDNN autotuning and compilation; the last one is the
   steady epoch the goal reads. Goal: the best mode's steady epoch of all 50,000 images in under 5 s.
4. **precision**: the recipe at batch 1024 through main.py, bf16 + channels-last vs fp32, alternating rounds.
   Goal: >= 1.5.

The goals are judged on CUDA only; on the CPU the same run is a rehearsal at whatever size it is given, and the
report says so. The report is rewritten after every measurement, so a run cut short by a time limit keeps what it
measured.

Usage::

    python -m benchmarks.gpu_goals --device cuda --workers 12                # results/gpu_goals_cuda.{json,md}
    python -m benchmarks.gpu_goals --batch-size 8 --epoch-batches 2 ...      # a CPU rehearsal at tiny sizes
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import throughput as tp
from benchmarks.harness import (
    REPO,
    command_line,
    epoch_timer,
    machine_info,
    prepare_torch,
    quiet_lightning,
    write_report,
)

RECIPE = "baseline_resnet56_cifar10"
EXPERIMENTS = ("loop", "pipeline", "epoch", "precision")
LOOP_BATCH, LOOP_MODES, LOOP_GOAL = 128, ("fp32", "bf16_cl"), 0.9
PIPELINE_BATCH, PIPELINE_GOAL = 128, 3.0
EPOCH_BATCH, EPOCH_GOAL_S, TRAIN_IMAGES = 128, 5.0, 50_000
PRECISION_BATCH, PRECISION_MODES, PRECISION_GOAL = 1024, ("bf16_cl", "fp32"), 1.5


class GoalsError(ValueError):
    """A bad argument of the benchmark (one paragraph naming it)."""


# ------------------------------------------------------------------------------------------------- measuring
def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, Any]:
    """Runs each of the two ``sides`` (name -> images/s) once untimed, then ``rounds`` alternating rounds (the first
    side alternates too); ratio = first side / second side per round, summarised (median, min, max)."""
    (a, b) = sides
    for side in (a, b):
        sides[side]()  # warm-up: cuDNN autotuning, the first loader, compilation caches
    per_round = []
    for r in range(rounds):
        order = (a, b) if r % 2 == 0 else (b, a)
        speed = {side: sides[side]() for side in order}
        per_round.append({"first": order[0], a: speed[a], b: speed[b], "ratio": speed[a] / speed[b]})
    return {"sides": [a, b], "per_round": per_round, "ratio": tp._summary([r["ratio"] for r in per_round]),
            a: tp._summary([r[a] for r in per_round]), b: tp._summary([r[b] for r in per_round])}


def recipe_speed(mode: str, device: str, batch: int | None, args: argparse.Namespace, data_dir: Path,
                 extra: Sequence[str] = ()) -> float:
    """Images/s of the recipe through main.py (``--warmup`` untimed steps, then ``--steps`` timed)."""
    with tempfile.TemporaryDirectory() as runs:
        cli = tp.build(RECIPE, mode, device, args.warmup + args.steps, batch, data_dir, Path(runs), args.workers,
                       [*args.extra, *extra])
        return tp.run_recipe(cli, args.warmup)["images_per_s"]


def epoch_times(mode: str, device: str, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """``--epochs`` training epochs of the recipe through main.py in ``mode``; each epoch's seconds and batches."""
    extra = ["--trainer.max_steps=-1", f"--trainer.max_epochs={args.epochs}"]
    if args.epoch_batches:
        extra.append(f"--trainer.limit_train_batches={args.epoch_batches}")
    timer = epoch_timer()
    with tempfile.TemporaryDirectory() as runs:
        cli = tp.build(RECIPE, mode, device, -1, args.batch_size or EPOCH_BATCH, data_dir, Path(runs),
                       args.workers, [*args.extra, *extra])
        cli.trainer.callbacks.append(timer)
        with quiet_lightning():
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        batch = cli.datamodule.batch_size
        resident = bool(getattr(cli.datamodule, "device_resident", False))
        train_size = len(cli.datamodule.train_set) if getattr(cli.datamodule, "train_set", None) is not None else None
    if not timer.epochs:
        raise RuntimeError("no training epoch ended")
    last = timer.epochs[-1]
    return {"mode": mode, "batch": batch, "device_resident": resident, "train_images": train_size,
            "epochs": timer.epochs, "steady_s": last["seconds"],
            "full": args.epoch_batches is None and last["batches"] == math.ceil((train_size or 0) / batch)}


# ----------------------------------------------------------------------------------------------------- goals
def judge(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal met, not met or not judged (with the reason), from what the report measured so far."""
    cuda = report["device"] == "cuda"
    out: dict[str, dict[str, Any]] = {}

    def verdict(name: str, value: float | None, target: str, met: bool | None, why: str = "") -> None:
        if not cuda:
            met, why = None, "a CPU rehearsal: the goal is for CUDA"
        out[name] = {"value": value, "target": target, "met": met, "why": why}

    def ratio(name: str, entry: dict[str, Any] | None, batch: int, goal: float, target: str) -> None:
        ok = entry is not None and "error" not in entry
        verdict(name, entry["ratio"]["median"] if ok else None, target,
                ok and entry["batch"] == batch and entry["ratio"]["median"] >= goal, "" if ok else "not measured")

    ratio("loop", next((r for r in report["loop"] if r.get("mode") == "fp32" and "error" not in r), None), LOOP_BATCH,
          LOOP_GOAL, f">= {LOOP_GOAL}x the plain loop (fp32, batch {LOOP_BATCH})")
    ratio("pipeline", report.get("pipeline"), PIPELINE_BATCH, PIPELINE_GOAL,
          f">= {PIPELINE_GOAL}x the worker pipeline (batch {PIPELINE_BATCH})")
    full = [e for e in report["epoch"] if "error" not in e and e["full"] and e["batch"] == EPOCH_BATCH]
    best = min(full, key=lambda e: e["steady_s"], default=None)
    verdict("epoch", best and best["steady_s"], f"< {EPOCH_GOAL_S} s for one epoch of {TRAIN_IMAGES:,} images "
            f"at batch {EPOCH_BATCH}", best is not None and best["steady_s"] < EPOCH_GOAL_S,
            (f"best mode {best['mode']}" if best else f"no full epoch at batch {EPOCH_BATCH} measured"))
    if best is not None:
        out["epoch"]["mode"] = best["mode"]
    ratio("precision", report.get("precision"), PRECISION_BATCH, PRECISION_GOAL,
          f">= {PRECISION_GOAL}x fp32 (bf16 + channels-last, batch {PRECISION_BATCH})")
    return out


def _fmt(s: dict[str, float], digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def to_markdown(report: dict[str, Any]) -> str:
    dev = report["device"]
    lines = [f"# GPU-cost goals through main.py ({dev})", "",
             f"Recipe {RECIPE} built by main.py's CLI on its real datamodule ({report.get('data', '?')} full-size "
             f"CIFAR-10 files in the real format). Speeds: {report['steps']} timed steps after {report['warmup']} "
             f"warm-up steps, one untimed run of each side, then {report['rounds']} alternating rounds; "
             "median [min, max] over rounds.", ""]
    if dev != "cuda":
        lines += ["**A CPU rehearsal:** the goals are judged on CUDA only.", ""]
    lines += ["## Goals", "", "| goal | measured | target | verdict |", "|---|---|---|---|"]
    for name, g in report["goals"].items():
        value = "not measured" if g["value"] is None else (f"{g['value']:.2f} s" if name == "epoch"
                                                            else f"{g['value']:.3f}x")
        v = {True: "met", False: "NOT met", None: "not judged"}[g["met"]]
        lines.append(f"| {name} | {value} | {g['target']} | {v}{': ' + g['why'] if g['why'] else ''} |")
    lines += ["", "## 1. Recipe through main.py vs the plain loop", "",
              "| mode | batch | recipe images/s | plain images/s | ratio |", "|---|---|---|---|---|"]
    for r in report["loop"]:
        if "error" in r:
            lines.append(f"| {r['mode']} | | failed: {r['error']} | | |")
        else:
            lines.append(f"| {r['mode']} | {r['batch']} | {r['recipe_images_per_s']:.1f} | "
                         f"{r['plain_images_per_s']:.1f} | {tp._fmt(r['ratio'])} |")

    def pair(title: str, key: str) -> None:
        p = report.get(key)
        lines.extend(["", title, ""])
        if p is None:
            lines.append("Not measured.")
        elif "error" in p:
            lines.append(f"Failed: {p['error']}")
        else:
            a, b = p["sides"]
            lines.extend([f"| batch | {a} images/s | {b} images/s | ratio {a} / {b} |", "|---|---|---|---|",
                          f"| {p['batch']} | {_fmt(p[a], 1)} | {_fmt(p[b], 1)} | {_fmt(p['ratio'])} |"])

    pair(f"## 2. Device-resident CIFAR pipeline vs DataLoader workers ({report['workers']} workers), fp32",
         "pipeline")
    lines += ["", "## 3. Training epochs (the recipe's augmentation; validation off)", "",
              "| mode | batch | device-resident | epochs: seconds (batches) | steady epoch s | full epoch |",
              "|---|---|---|---|---|---|"]
    for e in report["epoch"]:
        if "error" in e:
            lines.append(f"| {e['mode']} | | | failed: {e['error']} | | |")
        else:
            each = ", ".join(f"{x['seconds']:.2f} ({x['batches']})" for x in e["epochs"])
            lines.append(f"| {e['mode']} | {e['batch']} | {'yes' if e['device_resident'] else 'no'} | {each} | "
                         f"{e['steady_s']:.2f} | {'yes' if e['full'] else 'no'} |")
    full = [e for e in report["epoch"] if "error" not in e and e["full"]]
    if full:
        best = min(full, key=lambda e: e["steady_s"])
        epochs = int(tp.recipe_config(RECIPE)["trainer"]["max_epochs"])
        lines += ["", f"At the best steady epoch ({best['mode']}, {best['steady_s']:.2f} s), the recipe's "
                  f"{epochs} epochs take {epochs * best['steady_s'] / 3600:.2f} h of this device (training only)."]
    pair("## 4. bf16 + channels-last vs fp32 (the goal's batch: 1024)", "precision")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ main
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_goals", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS), help="experiments to run")
    p.add_argument("--steps", type=int, default=20, help="timed steps per side and round (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers of the worker pipeline (default 8)")
    p.add_argument("--epoch-modes", nargs="+", default=None, choices=sorted(tp.MODES),
                   help="modes of the epoch timing (default: fp32 bf16_cl bf16_cl_compile on CUDA, fp32 on the CPU)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per mode; the last is the steady one (default 2)")
    p.add_argument("--epoch-batches", type=int, default=None,
                   help="limit each epoch to this many batches (a rehearsal: the goal needs the full epoch)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="one batch size for every experiment (a rehearsal: the goals fix theirs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    p.add_argument("--data-root", type=Path, default=REPO / "data", help="the real set, if present: cifar10/")
    p.add_argument("--random-root", type=Path, default=Path(tempfile.gettempdir()) / "throughput_random",
                   help="where random full-size CIFAR-10 files are written when the real set is absent")
    p.add_argument("--extra", nargs="*", default=[], help="more main.py arguments for every run")
    p.add_argument("--name", default=None, help="report name (default gpu_goals_<device>)")
    p.add_argument("--out-dir", type=Path, default=None, help="default results/")
    a = p.parse_args(argv)
    for flag in ("steps", "warmup", "rounds", "epochs", "workers"):
        if getattr(a, flag) < (0 if flag == "workers" else 1):
            raise GoalsError(f"--{flag} must be >= {0 if flag == 'workers' else 1}, got {getattr(a, flag)}.")
    if a.epoch_batches is not None and a.epoch_batches < 1:
        raise GoalsError(f"--epoch-batches must be >= 1 (or left out for whole epochs), got {a.epoch_batches}.")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise GoalsError("--device cuda: no CUDA device is visible; run on a GPU machine or use --device cpu "
                         "for a rehearsal.")
    a.imagenet_per_class = 1  # throughput.measure's data writer needs it; CIFAR only here
    return a


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    prepare_torch(args.threads, args.device)
    data_dir, kind = tp.ensure_data("CIFAR10DataModule", args.data_root, args.random_root, args.imagenet_per_class)
    report: dict[str, Any] = {"command": command_line("benchmarks.gpu_goals", argv), "device": args.device,
                              "machine": machine_info(device=args.device), "data": kind, "data_dir": str(data_dir),
                              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
                              "workers": args.workers, "loop": [], "pipeline": None, "epoch": [],
                              "precision": None}
    name = args.name or f"gpu_goals_{args.device}"

    def save() -> None:
        report["goals"] = judge(report)
        write_report(name, report, to_markdown(report), args.out_dir)

    def attempt(what: str, fn: Callable[[], dict[str, Any]], **keys: Any) -> dict[str, Any]:
        try:
            out = fn()
        except GoalsError:
            raise
        except (Exception, SystemExit) as err:  # noqa: BLE001 - one failure is a result, not a crash
            out = {**keys, "error": f"{type(err).__name__}: {err}"[:300]}
        print(f"{what}: {out.get('error') or 'done'}", flush=True)
        return out

    if "loop" in args.only:
        for mode in LOOP_MODES:
            report["loop"].append(attempt(f"loop {mode}", lambda mode=mode: tp.measure(
                RECIPE, mode, _measure_args(args, LOOP_BATCH), args.data_root, args.device), mode=mode))
            save()
    if "pipeline" in args.only:
        batch = args.batch_size or PIPELINE_BATCH
        report["pipeline"] = attempt("pipeline", lambda: {"batch": batch, **alternate({
            "device_resident": lambda: recipe_speed("fp32", args.device, batch, args, data_dir,
                                                    ["--data.init_args.device_resident=true"]),
            "workers": lambda: recipe_speed("fp32", args.device, batch, args, data_dir,
                                            ["--data.init_args.device_resident=false"])}, args.rounds)})
        save()
    if "epoch" in args.only:
        modes = args.epoch_modes or (["fp32", "bf16_cl", "bf16_cl_compile"] if args.device == "cuda" else ["fp32"])
        for mode in modes:
            report["epoch"].append(attempt(f"epoch {mode}", lambda mode=mode: epoch_times(
                mode, args.device, args, data_dir), mode=mode))
            save()
    if "precision" in args.only:
        batch = args.batch_size or PRECISION_BATCH
        report["precision"] = attempt("precision", lambda: {"batch": batch, **alternate({
            mode: (lambda mode=mode: recipe_speed(mode, args.device, batch, args, data_dir))
            for mode in PRECISION_MODES}, args.rounds)})
        save()
    save()
    for goal_name, g in report["goals"].items():
        print(f"goal {goal_name}: {g['value']} {g['target']} -> {g['met']} {g['why']}".rstrip(), flush=True)
    return report


def _measure_args(args: argparse.Namespace, batch: int) -> argparse.Namespace:
    """``throughput.measure``'s arguments: this run's, at ``batch`` unless a rehearsal batch was given."""
    return argparse.Namespace(**{**vars(args), "batch_size": args.batch_size or batch})


if __name__ == "__main__":
    main()
