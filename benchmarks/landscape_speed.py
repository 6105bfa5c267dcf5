"""Speed of the LossLandscape callback: a 51x51 surface of a small net on 1 and 2 CPU ranks.

Two numbers (issue 5, item 6):

* **Per-point cost**: wall time per grid point of the 51x51 surface on one rank, divided by the median wall time
  of one plain evaluation pass (``eval()``, no grad, cross-entropy + accuracy) over the same data in the same
  process, measured just before and just after the surface. Goal: at most 1.1x.
* **Two ranks**: wall time of the same surface with 2 DDP ranks (gloo, one thread each) divided by the time with
  1 rank of one thread. Goal: at most 0.6x. Timed inside the callback, from the first grid point to the moment
  the results of all ranks are combined (``seconds_gathered``), so process start-up and DDP set-up are left out;
  they are reported separately as the whole process wall time.

Both run the real path: ``trainer.validate`` with the ``LossLandscape`` callback (``run_on=validate_end``), the
2-rank run under Lightning's DDP strategy. Net: the narrow VGG-9 of ``studies/landscape_glyphs.yaml`` (widths
16/32/64, hidden 64, 1.3e5 parameters) on 16x16 glyphs, ``--samples`` training images (batch = all of them).
1-rank and 2-rank runs alternate for ``--rounds`` rounds (the side that goes first alternates too); the machine
load average is recorded around every run because the machine may be shared with other jobs.

Usage::

    python -m benchmarks.landscape_speed --rounds 2 --out results/landscape_speed.json   # also writes .md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO,
    command_line,
    machine_info,
    quiet_lightning,
    quiet_trainer,
    write_report,
)

GOAL_POINT_RATIO = 1.1
GOAL_RANK_RATIO = 0.6


# ================================================================================================ worker
# the narrow VGG-9 of the landscape glyph study (VGG-9's layout at a quarter of its widths), at 16x16
NARROW_VGG9 = {"cfg": [16, 16, "M", 32, 32, "M", 64, 64, 64, "M"], "hidden": 64, "input_size": 16}


def worker(args: argparse.Namespace) -> None:
    """One run (this process is rank 0; under DDP Lightning re-launches it as rank 1)."""
    import warnings

    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    from callbacks.loss_landscape import LossLandscape, evaluate, make_eval_data
    from modules.image_classifier import ImageClassifier
    from studies.glyphs import PooledGlyphsDataModule as PooledGlyphs

    dm = PooledGlyphs(train_size=max(args.samples, 500), test_size=200, difficulty=1.0, pool=2, batch_size=args.samples)
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(net="vgg9", num_classes=10, input_shape=dm.input_shape, net_kwargs=NARROW_VGG9,
                            log_images=False)
    grid = f"-1:1:{args.points}"
    cb = LossLandscape(x_grid=grid, y_grid=grid, surface_1d=False, max_samples=args.samples,
                       batch_size=args.samples, plot=False, run_on="validate_end", progress=False,
                       out_dir=args.work)
    strategy = "ddp" if args.devices > 1 else "auto"
    trainer = quiet_trainer(accelerator="cpu", devices=args.devices, strategy=strategy, callbacks=[cb],
                            limit_val_batches=1)
    plain_before = plain_after = []
    data = None
    if args.devices == 1:
        dm.setup()
        data = make_eval_data(dm.train_set, args.samples, "cpu", max_samples=args.samples)
        model.eval()
        evaluate(model, data)  # warm-up
        plain_before = _time_passes(model, data, args.plain_passes)
    with quiet_lightning():
        trainer.validate(model, datamodule=dm, verbose=False)
    if args.devices == 1:
        model.eval()
        plain_after = _time_passes(model, data, args.plain_passes)
    if trainer.is_global_zero:
        s = cb.summary["surface_2d"]
        Path(args.result).write_text(json.dumps({
            "devices": args.devices, "points": s["points"], "points_per_rank": s["points_per_rank"],
            "surface_seconds": s["seconds_gathered"], "rank0_points_seconds": s["seconds"],
            "callback_seconds": cb.summary["seconds_total"], "plain_pass_before": plain_before,
            "plain_pass_after": plain_after, "samples": cb.summary["num_samples"],
            "threads": torch.get_num_threads(),
        }))


def _time_passes(model: Any, data: Any, n: int) -> list[float]:
    from callbacks.loss_landscape import evaluate

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        evaluate(model, data)
        times.append(time.perf_counter() - t0)
    return times


# ================================================================================================ parent
def _run(devices: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    result = tmp / f"result_{devices}.json"
    cmd = [sys.executable, "-m", "benchmarks.landscape_speed", "--worker", "--devices", str(devices),
           "--samples", str(args.samples), "--points", str(args.points), "--plain-passes", str(args.plain_passes),
           "--result", str(result), "--work", str(tmp / f"work_{devices}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "WANDB_MODE": "offline"}
    env.pop("LOCAL_RANK", None)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    out = json.loads(result.read_text())
    out.update({"process_seconds": wall, "load_before": load_before, "load_after": os.getloadavg()[0]})
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--points", type=int, default=51, help="grid points per axis")
    p.add_argument("--samples", type=int, default=256, help="training images evaluated per grid point")
    p.add_argument("--plain-passes", type=int, default=10)
    p.add_argument("--no-ddp", action="store_true", help="1-rank runs only (no 2-rank ratio)")
    p.add_argument("--out", default="results/landscape_speed.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    p.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    machine = machine_info(1)  # the workers run one thread per rank
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (1,) if args.no_ddp else (1, 2) if r % 2 == 0 else (2, 1)
            runs = {d: _run(d, args, Path(tmp)) for d in order}
            one, two = runs[1], runs.get(2)
            plain = statistics.median(one["plain_pass_before"] + one["plain_pass_after"])
            per_point = one["surface_seconds"] / one["points"]
            rounds.append({
                "first": order[0], "one_rank": one, "two_ranks": two, "plain_pass_s": plain,
                "per_point_s": per_point, "point_ratio": per_point / plain,
                "rank_ratio": two["surface_seconds"] / one["surface_seconds"] if two else None,
                "process_ratio": two["process_seconds"] / one["process_seconds"] if two else None,
            })
            ranks = (f"; 2 ranks / 1 rank {rounds[-1]['rank_ratio']:.3f}x (surface {one['surface_seconds']:.1f} s -> "
                     f"{two['surface_seconds']:.1f} s; load {one['load_before']:.1f}/{two['load_before']:.1f})"
                     if two else "")
            print(f"round {r}: per point {per_point * 1e3:.2f} ms vs plain pass {plain * 1e3:.2f} ms "
                  f"({per_point / plain:.3f}x){ranks}", flush=True)
    report = {
        "command": command_line("benchmarks.landscape_speed", argv), "machine": machine,
        "net": "vgg9 narrow (16/32/64, hidden 64) on 16x16 glyphs", "grid": f"{args.points}x{args.points}",
        "samples": args.samples, "rounds": rounds,
        "point_ratio": _summary([r["point_ratio"] for r in rounds]),
        "rank_ratio": None if args.no_ddp else _summary([r["rank_ratio"] for r in rounds]),
        "process_ratio": None if args.no_ddp else _summary([r["process_ratio"] for r in rounds]),
        "goals": {"point_ratio": GOAL_POINT_RATIO, "rank_ratio": GOAL_RANK_RATIO},
    }
    out = Path(args.out)
    write_report(out.stem, report, markdown(report), out.parent)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def _cell(v: dict[str, float] | None) -> str:
    return "not run" if v is None else f"{v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    pr, rr, qr = report["point_ratio"], report["rank_ratio"], report["process_ratio"]
    lines = [
        "# LossLandscape speed: 51x51 surface of a small net on CPU", "",
        f"Net: {report['net']}; {report['samples']} training images per grid point (one batch); grid "
        f"{report['grid']}.", "",
        "| measure | median [min, max] over rounds | goal |", "|---|---|---|",
        f"| time per grid point / one plain evaluation pass (1 rank, 1 thread) | {_cell(pr)} | "
        f"<= {report['goals']['point_ratio']} |",
        f"| surface wall time, 2 DDP ranks x 1 thread / 1 rank x 1 thread | {_cell(rr)} | "
        f"<= {report['goals']['rank_ratio']} |",
        f"| whole process wall time (start-up, DDP set-up included), 2 ranks / 1 rank | {_cell(qr)} | -- |", "",
        "| round | first | plain pass (ms) | per point (ms) | surface 1 rank (s) | surface 2 ranks (s) | process 1 / 2 "
        "(s) | load avg before 1 / 2 |", "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(report["rounds"]):
        one, two = r["one_rank"], r["two_ranks"] or {}
        s2, p2, l2 = (f"{two[k]:.1f}" if two else "--" for k in ("surface_seconds", "process_seconds", "load_before"))
        lines.append(f"| {i} | {r['first']} rank(s) | {r['plain_pass_s'] * 1e3:.2f} | {r['per_point_s'] * 1e3:.2f} | "
                     f"{one['surface_seconds']:.1f} | {s2} | {one['process_seconds']:.0f} / {p2} | "
                     f"{one['load_before']:.1f} / {l2} |")
    lines += ["", f"The machine ({report['machine']['logical_cpus']} logical CPUs) may have been shared with other "
              "jobs during the measurement (load averages above); the 2-rank ratio is only meaningful when 2 cores "
              "are free, so read it with the load column."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
