"""Training throughput of ``modules.ImageClassifier`` under a real ``lightning.Trainer`` vs a minimal PyTorch loop.

Both sides train the same net (identical initial weights), with the same SGD optimizer, on the same
pre-generated in-memory batches, for the same number of steps, on the CPU with the same ``torch`` thread count.
The two are alternated for several rounds after a warm-up (the side that goes first alternates too), and the
ratio Lightning samples/s / plain samples/s is computed per round; its median and [min, max] are reported.

Two ratios are measured per round:

* ``ratio`` (end to end): plain = optimizer construction + the loop; Lightning = ``Trainer(...)`` construction
  + ``trainer.fit(...)``. This includes Lightning's fixed start-up/tear-down cost.
* ``loop_ratio`` (steady state): from the start of the first step to the end of the last step only (for
  Lightning: ``on_train_batch_start`` of batch 0 to ``on_train_batch_end`` of the last batch), i.e. the
  per-step overhead that matters for a long training run.

After the first round the final weights of both sides are compared (``max_param_diff``): they should agree to
float rounding, which shows that both sides did the same work.

Usage::

    python -m benchmarks.overhead --rounds 5 --out results/overhead.json   # also writes results/overhead.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.harness import machine_info, quiet_lightning, quiet_trainer

GOAL_NET = "resnet20"
GOAL_RATIO = 0.95

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Config:
    """One benchmarked setting: ``steps`` is the default, chosen so that one timing takes ~5-10 s on 1 core."""

    name: str
    net: str
    data: str  # "random" or "digits"
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    steps: int


CONFIGS: dict[str, Config] = {
    "resnet20": Config("resnet20", "resnet20", "random", (3, 32, 32), 10, batch_size=128, steps=12),
    "small_cnn": Config("small_cnn", "small_cnn", "digits", (1, 8, 8), 10, batch_size=64, steps=500),
}

SGD_KWARGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def sgd(params: Any) -> torch.optim.Optimizer:
    """The optimizer of both sides (module-level, so that it is the very same callable)."""
    return torch.optim.SGD(params, **SGD_KWARGS)


class InMemoryBatches:
    """A re-iterable, sized view of a list of ready batches: what both sides iterate (no DataLoader)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_batches(cfg: Config, steps: int, batch_size: int, seed: int) -> list[Batch]:
    """``steps`` contiguous (x, y) batches, generated once from ``seed`` and shared by both sides."""
    g = torch.Generator().manual_seed(seed)
    if cfg.data == "random":
        return [
            (
                torch.randn(batch_size, *cfg.input_shape, generator=g),
                torch.randint(0, cfg.num_classes, (batch_size,), generator=g),
            )
            for _ in range(steps)
        ]
    if cfg.data == "digits":
        from datamodules.digits import DigitsDataModule

        dm = DigitsDataModule(batch_size=batch_size, seed=seed)
        dm.setup("fit")
        x, y = dm.train_set.tensors
        if batch_size > len(x):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(x)} digits training images")
        batches: list[Batch] = []
        while len(batches) < steps:  # shuffled epochs, last incomplete batch dropped
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x) - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                batches.append((x[idx].contiguous(), y[idx].contiguous()))
                if len(batches) == steps:
                    break
        return batches
    raise ValueError(f"unknown data {cfg.data!r}")


def initial_state(cfg: Config, seed: int) -> dict[str, torch.Tensor]:
    from nets import create_net

    torch.manual_seed(seed)
    net = create_net(cfg.net, num_classes=cfg.num_classes, in_channels=cfg.input_shape[0])
    return {k: v.clone() for k, v in net.state_dict().items()}


@dataclass
class Timing:
    total_s: float  # end to end (see the module docstring)
    loop_s: float  # first step start -> last step end
    threads: int  # torch.get_num_threads() seen during training
    minflt: int  # minor page faults during the loop (fresh memory from the OS: allocator noise, not overhead)
    params: dict[str, torch.Tensor]  # final weights of the net


def run_plain(cfg: Config, batches: list[Batch], state: dict[str, torch.Tensor]) -> Timing:
    """forward, cross_entropy, backward, step, zero_grad: nothing else."""
    from nets import create_net

    net = create_net(cfg.net, num_classes=cfg.num_classes, in_channels=cfg.input_shape[0])
    net.load_state_dict(state)
    data = InMemoryBatches(batches)
    gc.collect()
    t0 = time.perf_counter()
    net.train()
    optimizer = sgd(net.parameters())
    threads = torch.get_num_threads()
    f_loop = _minflt()
    t_loop = time.perf_counter()
    for x, y in data:
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    t1 = time.perf_counter()
    f1 = _minflt()
    return Timing(t1 - t0, t1 - t_loop, threads, f1 - f_loop, {k: v.detach().clone() for k, v in net.state_dict().items()})


def _minflt() -> int:
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _loop_timer_callback(n_batches: int) -> Any:
    import lightning.pytorch as pl

    class LoopTimer(pl.Callback):
        start: float | None = None
        end: float | None = None
        threads: int = 0
        minflt: int = 0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 0:
                self.threads = torch.get_num_threads()
                self.minflt = _minflt()
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == n_batches - 1:
                self.end = time.perf_counter()
                self.minflt = _minflt() - self.minflt

    return LoopTimer()


_quiet_lightning = quiet_lightning  # moved to benchmarks/harness.py


def run_lightning(cfg: Config, batches: list[Batch], state: dict[str, torch.Tensor]) -> Timing:
    """``ImageClassifier`` + ``lightning.Trainer`` on the CPU: no logger, checkpointing, progress bar or summary."""
    from modules.image_classifier import ImageClassifier

    module = ImageClassifier(
        net=cfg.net, num_classes=cfg.num_classes, input_shape=cfg.input_shape, optimizer=sgd
    )
    module.net.load_state_dict(state)
    data = InMemoryBatches(batches)
    timer = _loop_timer_callback(len(batches))
    with _quiet_lightning():
        gc.collect()
        t0 = time.perf_counter()
        trainer = quiet_trainer(  # no logger, checkpointing, progress bar, summary or sanity check
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            max_steps=len(batches),
            callbacks=[timer],
        )
        trainer.fit(module, train_dataloaders=data)
        t1 = time.perf_counter()
    if trainer.global_step != len(batches) or timer.start is None or timer.end is None:
        raise RuntimeError(f"Lightning ran {trainer.global_step} of {len(batches)} steps")
    params = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
    return Timing(t1 - t0, timer.end - timer.start, timer.threads, timer.minflt, params)


def _max_param_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    diffs = [(a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()]
    return max(diffs) if diffs else 0.0


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def benchmark(
    cfg: Config,
    steps: int,
    rounds: int,
    batch_size: int,
    warmup_steps: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Alternate plain and Lightning ``rounds`` times after a warm-up; per-round and summarised results."""
    if steps < 1 or rounds < 1 or batch_size < 1 or warmup_steps < 0:
        raise ValueError("steps, rounds and batch_size must be >= 1 and warmup_steps >= 0")
    batches = make_batches(cfg, steps, batch_size, seed)
    state = initial_state(cfg, seed)
    if warmup_steps:  # imports, oneDNN primitive caches, allocator: paid once, by neither timed side
        warm = batches[: min(warmup_steps, steps)]
        run_plain(cfg, warm, state)
        run_lightning(cfg, warm, state)
    runners: dict[str, Callable[[Config, list[Batch], dict[str, torch.Tensor]], Timing]] = {
        "plain": run_plain,
        "lightning": run_lightning,
    }
    per_round = []
    max_param_diff = None
    for r in tqdm(range(rounds), desc=f"{cfg.name} bs{batch_size} x{steps} steps", unit="round", disable=not progress):
        order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
        t = {side: runners[side](cfg, batches, state) for side in order}
        p, lt = t["plain"], t["lightning"]
        if max_param_diff is None:
            max_param_diff = _max_param_diff(p.params, lt.params)
        samples = steps * batch_size
        per_round.append(
            {
                "first": order[0],
                "plain_s": p.total_s,
                "lightning_s": lt.total_s,
                "plain_loop_s": p.loop_s,
                "lightning_loop_s": lt.loop_s,
                "plain_samples_per_s": samples / p.total_s,
                "lightning_samples_per_s": samples / lt.total_s,
                "ratio": p.total_s / lt.total_s,
                "loop_ratio": p.loop_s / lt.loop_s,
                "overhead_ms_per_step": (lt.loop_s - p.loop_s) / steps * 1e3,
                "fixed_cost_s": (lt.total_s - lt.loop_s) - (p.total_s - p.loop_s),
                "plain_minflt_per_step": p.minflt / steps,
                "lightning_minflt_per_step": lt.minflt / steps,
                "threads": {"plain": p.threads, "lightning": lt.threads},
            }
        )
    return {
        "name": cfg.name,
        "net": cfg.net,
        "data": cfg.data,
        "input_shape": list(cfg.input_shape),
        "batch_size": batch_size,
        "steps": steps,
        "rounds": rounds,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "plain_samples_per_s": statistics.median(r["plain_samples_per_s"] for r in per_round),
        "lightning_samples_per_s": statistics.median(r["lightning_samples_per_s"] for r in per_round),
        "plain_step_ms": statistics.median(r["plain_loop_s"] for r in per_round) / steps * 1e3,
        "ratio": _summary([r["ratio"] for r in per_round]),
        "loop_ratio": _summary([r["loop_ratio"] for r in per_round]),
        "overhead_ms_per_step": _summary([r["overhead_ms_per_step"] for r in per_round]),
        "fixed_cost_s": _summary([r["fixed_cost_s"] for r in per_round]),
        "plain_minflt_per_step": statistics.median(r["plain_minflt_per_step"] for r in per_round),
        "lightning_minflt_per_step": statistics.median(r["lightning_minflt_per_step"] for r in per_round),
        "max_param_diff": max_param_diff,
        "per_round": per_round,
    }


def _fmt_range(s: dict[str, float], digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Lightning overhead: `ImageClassifier` + `lightning.Trainer` vs a plain PyTorch loop",
        "",
        f"Goal: Lightning/plain throughput ratio >= {GOAL_RATIO:.2f}x for {GOAL_NET} (end to end, median over rounds).",
        "",
        "| net | batch | steps | plain samples/s | lightning samples/s | ratio median [min, max] "
        "| steady-state ratio median [min, max] | overhead ms/step | fixed cost s | page faults/step plain, lightning |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["configs"]:
        lines.append(
            f"| {c['net']} ({c['data']}) | {c['batch_size']} | {c['steps']} | {c['plain_samples_per_s']:.1f} "
            f"| {c['lightning_samples_per_s']:.1f} | {_fmt_range(c['ratio'])} | {_fmt_range(c['loop_ratio'])} "
            f"| {c['overhead_ms_per_step']['median']:.2f} | {c['fixed_cost_s']['median']:.2f} "
            f"| {c['plain_minflt_per_step']:.0f}, {c['lightning_minflt_per_step']:.0f} |"
        )
    lines.append("")
    goal = report.get("goal")
    if goal is not None:
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(
            f"**Goal {verdict}**: {GOAL_NET} ratio median {goal['ratio_median']:.3f} "
            f"(min over rounds {goal['ratio_min']:.3f}) vs >= {GOAL_RATIO:.2f}."
        )
        lines.append("")
    lines += [
        "- *ratio*: end to end, `Trainer(...)` + `trainer.fit(...)` vs optimizer construction + the plain loop, "
        "computed per round (the two sides run back to back, alternating which goes first) and summarised over rounds.",
        "- *steady-state ratio*: first step start to last step end only (Lightning: `on_train_batch_start` of "
        "batch 0 to `on_train_batch_end` of the last batch). *overhead ms/step*: (Lightning - plain) loop time per "
        "step. *fixed cost*: Lightning's start-up/tear-down time outside the loop, minus the plain side's. "
        "*page faults/step*: minor page faults during the loop (median over rounds), i.e. memory freshly taken "
        "from the OS by the allocator; they cost time on either side and are allocator noise, not Lightning work.",
        "- Both sides: same initial weights, SGD(" + ", ".join(f"{k}={v}" for k, v in SGD_KWARGS.items())
        + "), the same pre-generated in-memory batches (resnet20: random 3x32x32 tensors, 10 classes; small_cnn: "
        "shuffled `DigitsDataModule` training tensors), CPU, "
        f"`torch.set_num_threads({m['torch_threads']})`. Final weights after round 1 agree to "
        + ", ".join(f"{c['max_param_diff']:.1e} ({c['net']})" for c in report["configs"])
        + " (max abs difference), so both sides did the same work.",
        "- Lightning side: `accelerator='cpu', devices=1, logger=False, enable_checkpointing=False, "
        "enable_progress_bar=False, enable_model_summary=False`; everything `ImageClassifier.training_step` does "
        "(the `self.log` calls and the torchmetrics top-1/top-5 accuracy updates) is included.",
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Date: {report['date']}",
        "",
        "Machine:",
        "",
        f"- platform: {m['platform']}",
        f"- CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs, shared with other jobs; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'] or [])})",
        f"- python {m['python']}, torch {m['torch']}, lightning {m['lightning']}, torch threads {m['torch_threads']}",
        f"- malloc environment: {m['malloc_env'] or 'none set (glibc defaults)'}",
        "",
        "Per-round end-to-end ratios:",
        "",
    ]
    for c in report["configs"]:
        rs = ", ".join(f"{r['ratio']:.3f} ({r['first']} first)" for r in c["per_round"])
        lines.append(f"- {c['net']}: {rs}")
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timing for every net (default: per net, "
                        + ", ".join(f"{c.name} {c.steps}" for c in CONFIGS.values()) + ")")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per net (default 5)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps of each side first (default 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="override every net's batch size")
    parser.add_argument("--nets", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for both sides (default 1: on a small shared machine, "
                        "OpenMP threads that wait on a busy core make timings erratic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/overhead.json"))
    parser.add_argument("--md", type=Path, default=None, help="markdown report (default: --out with .md)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the ratios, write ``--out`` (JSON) and the markdown report; return the report."""
    args = _parse(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks.overhead", shlex.join(given)]).strip()
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.threads),
        "configs": [],
    }
    for name in args.nets:
        cfg = CONFIGS[name]
        result = benchmark(
            cfg,
            steps=args.steps if args.steps is not None else cfg.steps,
            rounds=args.rounds,
            batch_size=args.batch_size if args.batch_size is not None else cfg.batch_size,
            warmup_steps=args.warmup_steps,
            seed=args.seed,
            progress=not args.no_progress,
        )
        report["configs"].append(result)
        print(
            f"{name}: plain {result['plain_samples_per_s']:.1f} samples/s, "
            f"lightning {result['lightning_samples_per_s']:.1f} samples/s, "
            f"ratio {_fmt_range(result['ratio'])} (steady state {_fmt_range(result['loop_ratio'])}, "
            f"overhead {result['overhead_ms_per_step']['median']:.2f} ms/step, "
            f"fixed {result['fixed_cost_s']['median']:.2f} s)",
            flush=True,
        )
    for c in report["configs"]:
        if c["net"] == GOAL_NET:
            report["goal"] = {
                "net": GOAL_NET,
                "min_ratio": GOAL_RATIO,
                "ratio_median": c["ratio"]["median"],
                "ratio_min": c["ratio"]["min"],
                "met": c["ratio"]["median"] >= GOAL_RATIO,
            }
            print(f"goal ({GOAL_NET} >= {GOAL_RATIO}x): {'met' if report['goal']['met'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    md = args.md if args.md is not None else args.out.with_suffix(".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(to_markdown(report))
    print(f"wrote {args.out} and {md}")
    return report


if __name__ == "__main__":
    main()
