"""Training throughput of recipes through main.py beside a plain PyTorch loop on the same net, data and precision.

For each recipe and mode, two sides train for ``--steps`` timed steps after ``--warmup`` untimed ones:

* **recipe**: the model, optimizer, callbacks (pruning, quantized training, efficiency report, ...) and datamodule
  built by main.py's CLI exactly as ``python main.py fit --config recipes/<name>.yaml`` builds them (logger,
  checkpoints, progress bar and validation off), trained by its Lightning ``Trainer``; timed from the start of
  training batch ``--warmup`` to the end of the last batch (``benchmarks.harness.step_timer``);
* **plain**: a copy of the same net (after the recipe side's fit started, so a net pruned at fit start is pruned
  here too) in a bare loop: the same datamodule's training loader and batch hooks, the recipe's optimizer class
  and settings, ``F.cross_entropy``, backward, step, zero_grad; autocast, channels-last and ``nn.Module.compile``
  as in the mode; timed over the same steps. A callback's own work (quantizing weights, ...) is on the recipe side
  only, so its cost is part of the ratio.

The data is the recipe's real datamodule reading its real on-disk format at full size: the real set from
``--data-root`` (``cifar10``/``cifar100``/``imagenet``) where it is there, else random images in the real format and
size written once under ``--random-root`` (CIFAR: 50,000 + 10,000 32x32 images; ImageNet: ``--imagenet-per-class``
JPEGs of 375x500 per class); each row says which (``data``).

Modes: ``fp32``, ``bf16`` (``bf16-mixed``), ``bf16_cl`` (plus ChannelsLast), ``fp32_compile`` /
``bf16_cl_compile`` (plus ``compile``). The sides alternate for ``--rounds`` rounds (the first side alternates too)
and the ratio recipe / plain images/s is computed per round: its median and [min, max] are reported.

Goal (CPU): the recipe path reaches 0.95x of the plain loop for ResNet-20 at batch 128 in fp32 (the ResNet-56
baseline recipe with ``net=resnet20``, written ``baseline_resnet56_cifar10@resnet20``).

The report also projects the GPU-hours of the pruning paper's Table 1 (Li et al., 2017) from the measured
images/s: epochs x training images / images/s per recipe, baseline plus pruned retraining (see ``project_table1``).

Usage::

    python -m benchmarks.throughput                                  # CPU: results/throughput_cpu.{json,md}
    python -m benchmarks.throughput --device cuda --rounds 3         # GPU: results/throughput_cuda.{json,md}
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from benchmarks.harness import (
    REPO,
    command_line,
    machine_info,
    prepare_torch,
    quiet_lightning,
    step_timer,
    synchronize,
    write_report,
)

GOAL_CASE = "baseline_resnet56_cifar10@resnet20"
GOAL_BATCH = 128
GOAL_RATIO = 0.95
DEFAULT_RECIPES = [GOAL_CASE, "baseline_resnet56_cifar10", "prune_resnet56_cifar10_b", "quant_bc_resnet56_cifar10",
                   "global_resnet32_cifar10", "sicnn_imagenet"]
MODES = {  # name -> (precision, channels_last, compile)
    "fp32": ("32-true", False, False),
    "bf16": ("bf16-mixed", False, False),
    "bf16_cl": ("bf16-mixed", True, False),
    "fp32_compile": ("32-true", False, True),
    "bf16_cl_compile": ("bf16-mixed", True, True),
}
DEFAULT_MODES = {"cpu": ["fp32", "bf16", "bf16_cl", "fp32_compile"],
                 "cuda": ["fp32", "bf16", "bf16_cl", "bf16_cl_compile"]}
DATASETS = {  # datamodule class -> (folder under --data-root, training images of the real set)
    "CIFAR10DataModule": ("cifar10", 50_000),
    "CIFAR100DataModule": ("cifar100", 50_000),
    "ImageNetDataModule": ("imagenet", 1_281_167),
}
# Li et al. (2017), Table 1: each pruned model = its baseline's training + the pruned net's retraining
# (the recipes' own epoch counts). Keys: the pruned recipe; value: its baseline recipe.
TABLE1 = {
    "prune_vgg16_cifar10_a": "baseline_vgg16_cifar10",
    "prune_resnet56_cifar10_a": "baseline_resnet56_cifar10",
    "prune_resnet56_cifar10_b": "baseline_resnet56_cifar10",
    "prune_resnet110_cifar10_a": "baseline_resnet110_cifar10",
    "prune_resnet110_cifar10_b": "baseline_resnet110_cifar10",
    "prune_resnet34_imagenet_a": "baseline_resnet34_imagenet",
    "prune_resnet34_imagenet_b": "baseline_resnet34_imagenet",
    "prune_resnet34_imagenet_c": "baseline_resnet34_imagenet",
}


class ThroughputError(ValueError):
    """A bad argument of the benchmark (one paragraph naming it)."""


class Skipped(Exception):
    """A (recipe, mode) that does not exist as such: reported as a skipped row with the reason."""


# ---------------------------------------------------------------------------------------------------- recipes
def split_case(case: str) -> tuple[str, str | None]:
    """``recipe@net`` -> (recipe, net override or None)."""
    recipe, _, net = case.partition("@")
    return recipe, (net or None)


def recipe_config(recipe: str) -> dict[str, Any]:
    path = REPO / "recipes" / f"{recipe}.yaml"
    if not path.is_file():
        raise ThroughputError(f"--recipes: no recipe {recipe!r} ({path} does not exist); name a file of recipes/ "
                              "without .yaml, optionally with @<net> to train another net.")
    return yaml.safe_load(path.read_text())


def uses_channels_last(config: dict[str, Any]) -> bool:
    """Whether a recipe adds the ChannelsLast callback itself."""
    callbacks = [c.get("class_path", "") for c in (config.get("trainer") or {}).get("callbacks") or []]
    return any(c.endswith("ChannelsLast") for c in callbacks)


def data_class(config: dict[str, Any]) -> str:
    return config["data"]["class_path"].rsplit(".", 1)[-1]


def ensure_data(name: str, root: Path, random_root: Path, imagenet_per_class: int) -> tuple[Path, str]:
    """(data folder, "real" or "random") for datamodule ``name``: the real set under ``root`` where it is there,
    else random images in the real format and size under ``random_root`` (written once; never into ``root``,
    so a later training run cannot mistake them for the real set)."""
    from tests import fakedata

    if name not in DATASETS:
        raise ThroughputError(f"--recipes: the datamodule {name} has no data writer here; use recipes on "
                              f"{', '.join(DATASETS)}.")
    sub = DATASETS[name][0]
    probe = {"CIFAR10DataModule": "cifar-10-batches-py/data_batch_1", "CIFAR100DataModule": "cifar-100-python/train",
             "ImageNetDataModule": "train"}[name]
    if (root / sub / probe).exists():
        return root / sub, "real"
    folder = random_root / sub
    if (folder / ".complete").is_file():
        return folder, "random"
    folder.mkdir(parents=True, exist_ok=True)
    if name == "CIFAR10DataModule":
        fakedata.write_cifar10(folder, n_train=50_000, n_test=10_000)
    elif name == "CIFAR100DataModule":
        fakedata.write_cifar100(folder, n_train=50_000, n_test=10_000)
    else:
        fakedata.write_imagenet(folder, num_classes=1000, per_class=imagenet_per_class, size=(375, 500))
    (folder / ".complete").write_text("random images in the real format, written by benchmarks/throughput.py\n")
    return folder, "random"


def build(case: str, mode: str, device: str, steps: int, batch: int | None, data_dir: Path, runs: Path,
          workers: int, extra: Sequence[str] = ()) -> Any:
    """main.py's CLI objects (``run=False``) for ``case`` in ``mode``."""
    from main import cli_main

    recipe, net = split_case(case)
    config = recipe_config(recipe)
    precision, channels_last, compiled = MODES[mode]
    args = ["--config", str(REPO / "recipes" / f"{recipe}.yaml"), f"--runs_root={runs}",
            f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "--trainer.devices=1",
            f"--trainer.precision={precision}", f"--trainer.max_steps={steps}",
            "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0", f"--data.init_args.data_dir={data_dir}",
            f"--data.init_args.num_workers={workers}"]
    if channels_last and not uses_channels_last(config):
        args.append("--trainer.callbacks+=callbacks.channels_last.ChannelsLast")
    if compiled:
        args.append("--model.init_args.compile=true")
    if net:
        args.append(f"--model.init_args.net={net}")
    if batch:
        args.append(f"--data.init_args.batch_size={batch}")
    if config.get("init_from"):
        args.append("--init_from=null")  # an earlier stage's run: not needed for speed
    with quiet_lightning():
        return cli_main([*args, *extra], run=False)


# ------------------------------------------------------------------------------------------------- both sides
def run_recipe(cli: Any, warmup: int) -> dict[str, Any]:
    """Fits the CLI's model; images/s over the steps after ``warmup``."""
    timer = step_timer(warmup)
    cli.trainer.callbacks.append(timer)
    gc.collect()
    with quiet_lightning():
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    batch = cli.datamodule.batch_size
    return {"images_per_s": timer.steps * batch / timer.seconds, "steps": timer.steps, "seconds": timer.seconds,
            "batch": batch}


def _optimizer_like(module: Any, params: Any) -> torch.optim.Optimizer:
    """An optimizer of the recipe's class and settings over ``params``."""
    configured = module.configure_optimizers()
    opt = configured["optimizer"] if isinstance(configured, dict) else configured
    if isinstance(opt, list | tuple):
        opt = opt[0]
    accepted = inspect.signature(type(opt).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return type(opt)(params, **opt.defaults)
    # a subclass's constructor may take fewer settings than its base records in ``defaults`` (timm's RMSpropTF
    # records corrected_weight_decay; the project's TimmRMSpropTF does not take it)
    return type(opt)(params, **{k: v for k, v in opt.defaults.items() if k in accepted})


def run_plain(cli: Any, net: torch.nn.Module, mode: str, device: str, steps: int, warmup: int) -> dict[str, Any]:
    """The bare loop over the same datamodule's training batches (see the module docstring)."""
    precision, channels_last, compiled = MODES[mode]
    dm = cli.datamodule
    dev = torch.device(device)
    net = net.to(dev).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compiled:
        net.compile()
    optimizer = _optimizer_like(cli.model, net.parameters())
    smoothing = float(getattr(cli.model.hparams, "label_smoothing", 0.0) or 0.0)
    loader = dm.train_dataloader()
    done, start = 0, None
    gc.collect()
    while done < steps:
        if len(loader) == 0:
            raise ThroughputError("the training loader is empty: give more data or a smaller --batch-size")
        for batch in loader:
            batch = dm.on_before_batch_transfer(batch, 0)
            batch = dm.transfer_batch_to_device(batch, dev, 0)
            batch = dm.on_after_batch_transfer(batch, 0)
            if done == warmup:
                synchronize(dev)
                start = time.perf_counter()
            x, y = batch[0], batch[1]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = F.cross_entropy(net(x), y, label_smoothing=smoothing)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    synchronize(dev)
    seconds = time.perf_counter() - start
    batch_size = dm.batch_size
    return {"images_per_s": (steps - warmup) * batch_size / seconds, "steps": steps - warmup, "seconds": seconds,
            "batch": batch_size}


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio_summary(per_round: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Per-round recipe / plain ratios and images/s, summarised (median, min, max)."""
    if not per_round:
        raise ThroughputError("--rounds must be >= 1")
    ratios = [r["recipe_images_per_s"] / r["plain_images_per_s"] for r in per_round]
    return {"ratio": _summary(ratios),
            "recipe_images_per_s": statistics.median(r["recipe_images_per_s"] for r in per_round),
            "plain_images_per_s": statistics.median(r["plain_images_per_s"] for r in per_round)}


def measure(case: str, mode: str, args: argparse.Namespace, data_root: Path, device: str) -> dict[str, Any]:
    """Alternating rounds of both sides for one (case, mode) on ``device``."""
    recipe, _ = split_case(case)
    config = recipe_config(recipe)
    if not MODES[mode][1] and uses_channels_last(config):
        raise Skipped(f"{recipe} trains channels-last itself (its ChannelsLast callback): measured in the *_cl "
                      "modes only")
    name = data_class(config)
    data_dir, data_kind = ensure_data(name, data_root, args.random_root, args.imagenet_per_class)
    batch = args.batch_size or (GOAL_BATCH if case == GOAL_CASE else None)
    steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as runs:
        def recipe_side() -> tuple[dict[str, Any], Any]:
            cli = build(case, mode, device, steps, batch, data_dir, Path(runs), args.workers, args.extra)
            return run_recipe(cli, args.warmup), cli

        # warm-up: the recipe side first (its fit prunes/quantizes where the recipe does), then the plain side on
        # a copy of the net it ended with
        _, ref = recipe_side()
        net = copy.deepcopy(ref.model.net)
        if getattr(net, "_compiled_call_impl", None) is not None:
            net._compiled_call_impl = None  # the plain side compiles its own copy
        run_plain(ref, copy.deepcopy(net), mode, device, min(steps, args.warmup + 1), args.warmup)
        per_round = []
        for r in range(args.rounds):
            order = ("plain", "recipe") if r % 2 == 0 else ("recipe", "plain")
            result: dict[str, dict[str, Any]] = {}
            for side in order:
                if side == "recipe":
                    result[side], _ = recipe_side()
                else:
                    result[side] = run_plain(ref, copy.deepcopy(net), mode, device, steps, args.warmup)
            per_round.append({"first": order[0], "recipe_images_per_s": result["recipe"]["images_per_s"],
                              "plain_images_per_s": result["plain"]["images_per_s"]})
        row = {"case": case, "mode": mode, "device": device, "batch": result["recipe"]["batch"], "timed_steps": args.steps,
               "input_shape": list(ref.datamodule.input_shape), "datamodule": name, "data_dir": str(data_dir),
               "data": data_kind,
               **ratio_summary(per_round), "per_round": per_round}
        if device == "cuda":
            row["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        return row


# --------------------------------------------------------------------------------------------------- reporting
def _epochs(recipe: str) -> int | None:
    try:
        return int((recipe_config(recipe).get("trainer") or {}).get("max_epochs"))
    except (ThroughputError, TypeError, ValueError):
        return None


def project_table1(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """GPU-hours of each Table 1 model: baseline epochs x images / (baseline images/s) + retraining epochs x images
    / (pruned recipe images/s), with the best measured mode of each recipe (``None`` where not measured)."""
    best: dict[str, float] = {}
    for r in rows:
        if "error" not in r and "skipped" not in r:
            best[r["case"]] = max(best.get(r["case"], 0.0), r["recipe_images_per_s"])
    out = []
    for pruned, base in TABLE1.items():
        name = data_class(recipe_config(pruned))
        images = DATASETS[name][1]
        parts = []
        for recipe in (base, pruned):
            epochs, speed = _epochs(recipe), best.get(recipe)
            parts.append(None if epochs is None or not speed else epochs * images / speed / 3600)
        total = None if None in parts else sum(parts)
        out.append({"model": pruned, "baseline": base, "baseline_gpu_h": parts[0], "retrain_gpu_h": parts[1],
                    "total_gpu_h": total})
    return out


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"


def goal(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The CPU goal, where this run measured its case (ResNet-20, batch 128, fp32, on the CPU)."""
    for r in rows:
        if (r["case"] == GOAL_CASE and r["mode"] == "fp32" and r.get("device") == "cpu" and "error" not in r
                and "skipped" not in r and r["batch"] == GOAL_BATCH):
            return {"case": GOAL_CASE, "batch": r["batch"], "min_ratio": GOAL_RATIO,
                    "ratio_median": r["ratio"]["median"], "met": r["ratio"]["median"] >= GOAL_RATIO}
    return None


def to_markdown(report: dict[str, Any]) -> str:
    device = report["device"]
    m = report["machine"]
    device_name = m.get("gpu") or m.get("cpu", "?")
    lines = [f"# Training throughput: recipes through main.py vs a plain PyTorch loop ({device})", "",
             f"{report['steps']} timed steps after {report['warmup']} warm-up steps per side, {report['rounds']} "
             "alternating rounds; ratio = recipe images/s / plain images/s per round, median [min, max]. Real "
             "datamodules on full-size data in the real on-disk format (random images where the set is absent: column data).",
             "", "| recipe | device | data | batch | input | mode | recipe images/s | plain images/s | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if "error" in r or "skipped" in r:
            what = f"failed: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            lines.append(f"| {r['case']} | {r.get('device', '')} | | | | {r['mode']} | {what} | | |")
            continue
        lines.append(f"| {r['case']} | {r['device']} | {r['data']} | {r['batch']} | {'x'.join(map(str, r['input_shape']))} | {r['mode']} | "
                     f"{r['recipe_images_per_s']:.1f} | {r['plain_images_per_s']:.1f} | {_fmt(r['ratio'])} |")
    g = report.get("goal")
    if g is not None:
        lines += ["", f"**Goal {'met' if g['met'] else 'NOT met'}** (CPU): {g['case']} at batch {g['batch']}, fp32, "
                  f"ratio median {g['ratio_median']:.3f} vs >= {g['min_ratio']:.2f}."]
    else:
        lines += ["", f"Goal (CPU, {GOAL_CASE} at batch {GOAL_BATCH}, fp32, >= {GOAL_RATIO}x): not measured in this "
                  "run."]
    lines += ["", "## Projected cost of the pruning paper's Table 1 (Li et al., 2017)", "",
              f"Hours on one {device} device of this machine ({device_name}), from the best measured recipe images/s "
              f"on it: hours = epochs "
              "x training images / images/s, baseline training plus the pruned net's retraining (the recipes' own "
              "max_epochs; CIFAR 50,000 and ImageNet 1,281,167 training images). Assumes the measured steady-state "
              "speed holds for the whole run; excludes validation, checkpoints, data loading stalls beyond those "
              "measured, start-up and compilation; the pruned net is timed after pruning.", "",
              "| model | baseline | baseline h | retraining h | total h |", "|---|---|---|---|---|"]

    def h(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else "not measured"

    for p in report["table1"]:
        lines.append(f"| {p['model']} | {p['baseline']} | {h(p['baseline_gpu_h'])} | {h(p['retrain_gpu_h'])} | "
                     f"{h(p['total_gpu_h'])} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- main
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, help="recipe names, recipe@net for another net")
    p.add_argument("--modes", nargs="+", default=None, choices=sorted(MODES))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side and round (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="override every recipe's batch size")
    p.add_argument("--workers", type=int, default=2, help="data loader workers (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    p.add_argument("--data-root", type=Path, default=REPO / "data",
                   help="the real sets, if present: cifar10/, cifar100/, imagenet/ (default data/)")
    p.add_argument("--random-root", type=Path, default=Path(tempfile.gettempdir()) / "throughput_random",
                   help="where random full-size sets are written when a real one is absent")
    p.add_argument("--imagenet-per-class", type=int, default=2, help="random JPEGs per class if ImageNet is absent")
    p.add_argument("--extra", nargs="*", default=[], help="more main.py arguments for every recipe side")
    p.add_argument("--no-cpu-goal", action="store_true", help="with --device cuda: skip the CPU goal case")
    p.add_argument("--name", default=None, help="report name (default throughput_<device>)")
    p.add_argument("--out-dir", type=Path, default=None, help="default results/")
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 1 or a.rounds < 1:
        raise ThroughputError("--steps, --warmup and --rounds must be >= 1 (the first step is never timed).")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ThroughputError("--device cuda: no CUDA device is visible; run on a GPU machine or use --device cpu.")
    return a


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    prepare_torch(args.threads, args.device)
    modes = args.modes or DEFAULT_MODES[args.device]
    report: dict[str, Any] = {"command": command_line("benchmarks.throughput", argv), "device": args.device,
                              "machine": machine_info(device=args.device), "steps": args.steps,
                              "warmup": args.warmup, "rounds": args.rounds, "modes": modes, "rows": []}
    if args.device == "cuda" and not args.no_cpu_goal:  # the CPU goal goes in every report
        print(f"{GOAL_CASE} fp32 on the CPU (the CPU goal) first ...", flush=True)
        try:
            report["rows"].append(measure(GOAL_CASE, "fp32", args, args.data_root, "cpu"))
        except (Exception, SystemExit) as err:  # noqa: BLE001
            report["rows"].append({"case": GOAL_CASE, "mode": "fp32", "device": "cpu",
                                   "error": f"{type(err).__name__}: {err}"[:300]})
    for mode in modes:  # mode-major: the slow compile rows come last, after every recipe's other rows
        for case in args.recipes:
            try:
                row = measure(case, mode, args, args.data_root, args.device)
            except ThroughputError:
                raise
            except Skipped as why:
                row = {"case": case, "mode": mode, "device": args.device, "skipped": str(why)}
            except (Exception, SystemExit) as err:  # noqa: BLE001 - one recipe's failure is a result, not a crash
                row = {"case": case, "mode": mode, "device": args.device,
                       "error": f"{type(err).__name__}: {err}"[:300]}
            report["rows"].append(row)
            finish(report, args)  # after every row: a run cut short by a time limit keeps what it measured
            print(f"{case} {mode}: " + (row.get("error") or row.get("skipped") or f"recipe {row['recipe_images_per_s']:.1f} images/s, "
                  f"plain {row['plain_images_per_s']:.1f}, ratio {_fmt(row['ratio'])}"), flush=True)
    json_path, md_path = finish(report, args)
    print(f"wrote {json_path} and {md_path}")
    return report


def finish(report: dict[str, Any], args: argparse.Namespace) -> tuple[Path, Path]:
    """Goal and projection from the rows so far; writes the JSON and markdown reports."""
    report["goal"] = goal(report["rows"])
    report["table1"] = project_table1([r for r in report["rows"] if r.get("device") == args.device])
    return write_report(args.name or f"throughput_{args.device}", report, to_markdown(report), args.out_dir)


if __name__ == "__main__":
    main()
