"""GPU-hour estimate of a study (printed by ``python -m studies run ... --dry-run``).

One run of a stage costs ``epochs x training images / images per second / 3600`` GPU-hours (a recipe with a step
budget, ``trainer.max_steps``, counts ``max_steps x batch_size`` samples), with the images per second of one GPU:

* measured: the lowest ``images_per_s`` of the stage's recipe in the throughput benchmark's results
  (``results/gpu_recipes.json``, ``results/throughput.json``: rows with ``recipe`` and ``images_per_s``), or else
* assumed from the net's MACs: ``ASSUMED_FLOPS / (6 x MACs per image)`` (a training step is about three passes of
  two FLOPs per MAC), the MACs counted by ``main.py report``. The assumption is printed.

A run on G GPUs is assumed to scale linearly (same GPU-hours, 1/G the wall time). Test and report steps are left
out (one pass over the test split), and so are evaluation-only stages (``fit: false``: one pass over the evaluation
split, shown as 0 GPU-hours with that reason).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from studies.spec import Study

THROUGHPUT_FILES = ("results/gpu_recipes.json", "results/throughput.json")
ASSUMED_FLOPS = 4e12  # effective training FLOP/s of one GPU; the measured CIFAR ResNets give 3-4e12 in fp32
TRAIN_IMAGES = {"CIFAR10DataModule": 50_000, "CIFAR100DataModule": 50_000, "ImageNetDataModule": 1_281_167,
                "MNISTDataModule": 60_000, "PaddedMNISTDataModule": 60_000, "NoisyMNISTDataModule": 60_000,
                "SequentialCIFAR10DataModule": 50_000,
                "ModelNet10DataModule": 3_991}  # ModelNet10's standard training split (908 test objects)
GLUE_TRAIN = {"sst2": 67_349, "qnli": 104_743, "qqp": 363_846, "mnli": 392_702}  # GLUE training rows per task


@dataclass
class StageCost:
    stage: str
    runs: int
    gpus: int
    epochs: float | None
    images: int | None
    images_per_s: float | None
    source: str

    @property
    def gpu_hours_per_run(self) -> float | None:
        if self.epochs is None or self.images is None or not self.images_per_s:
            return None
        return self.epochs * self.images / self.images_per_s / 3600.0

    @property
    def gpu_hours(self) -> float | None:
        per = self.gpu_hours_per_run
        return None if per is None else per * self.runs


def measured_throughput(files: tuple[str, ...] | list[str]) -> dict[str, tuple[float, str]]:
    """Recipe stem -> (lowest measured images/s, "file (device)")."""
    out: dict[str, tuple[float, str]] = {}
    for name in files:
        try:
            data = json.loads(Path(name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rows = data.get("rows", []) if isinstance(data, dict) else data
        device = data.get("device", "?") if isinstance(data, dict) else "?"
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or "recipe" not in row or not row.get("images_per_s"):
                continue
            stem = Path(str(row["recipe"])).stem
            ips = float(row["images_per_s"])
            if stem not in out or ips < out[stem][0]:
                out[stem] = (ips, f"{name} ({row.get('device', device)})")
    return out


def _setting(study: Study, stage: str, dotted: str) -> Any:
    s = study.stages[stage]
    if dotted in s.overrides:
        return s.overrides[dotted]
    node: Any = yaml.safe_load(Path(s.recipe).read_text()) or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _macs(recipe: str, overrides: dict[str, Any], convention: str = "li2017") -> float | None:
    """MACs per image of the recipe's net (``main.py report --json``, in this process; None if it fails)."""
    import tempfile

    from main import cli_main
    from studies.spec import as_cli_value

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        args = ["report", "--config", recipe, "--json", str(out), f"--convention={convention}"]
        args += [f"--{k}={as_cli_value(v)}" for k, v in overrides.items() if k.startswith("model.")]
        buf = io.StringIO()
        loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
        levels = [lg.level for lg in loggers]
        try:
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                cli_main(args)
            return float(json.loads(out.read_text())["macs"])
        except (SystemExit, Exception):  # noqa: BLE001 - an estimate: unknown is shown as '?'
            return None
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def estimate(study: Study, runs_per_stage: dict[str, int], files: tuple[str, ...] | list[str] | None = None,
             count_macs: bool = True) -> list[StageCost]:
    measured = measured_throughput(THROUGHPUT_FILES if files is None else files)
    out = []
    for stage, runs in runs_per_stage.items():
        s = study.stages[stage]
        if not s.fit:
            out.append(StageCost(stage, runs, s.gpus, 0.0, 0, 1.0, "evaluation only (fit: false): one pass over the "
                                 "evaluation split, left out like test steps"))
            continue
        epochs = _setting(study, stage, "trainer.max_epochs")
        cls = str(_setting(study, stage, "data.class_path") or "").rsplit(".", 1)[-1]
        images = TRAIN_IMAGES.get(cls) or _setting(study, stage, "data.init_args.train_size")
        subset = _setting(study, stage, "data.init_args.train_subset")
        if isinstance(subset, int) and subset > 0 and images:
            images = min(int(images), subset)
        if cls == "GlueDataModule":  # the task's training rows, less a held-out share (val_from_train)
            rows = GLUE_TRAIN.get(str(_setting(study, stage, "data.init_args.task") or "sst2"))
            held = _setting(study, stage, "data.init_args.val_from_train") or 0.0
            images = None if rows is None else int(rows * (1.0 - float(held)))
        steps, batch = _setting(study, stage, "trainer.max_steps"), _setting(study, stage, "data.init_args.batch_size")
        if isinstance(steps, int) and steps > 0 and isinstance(batch, int) and images:
            # a step budget: max_steps x batch_size samples, as a number of passes over the training set (the
            # smaller of the two budgets when max_epochs is set too)
            by_steps = steps * batch / int(images)
            epochs = by_steps if not (isinstance(epochs, int | float) and epochs > 0) else min(float(epochs), by_steps)
        elif isinstance(epochs, int | float) and epochs < 0:
            epochs = None  # unbounded epochs and no step budget: unknown
        stem = Path(s.recipe).stem
        if stem in measured:
            ips, source = measured[stem][0], f"measured: {measured[stem][1]}"
        else:
            model = str(_setting(study, stage, "model.class_path") or "")
            recurrent = any(k in model for k in ("Sequence", "FPTT", "fptt", "sequence"))
            # a recurrent cell's matmuls are not conv/linear modules: torch's flop counter sees them at every step
            macs = _macs(s.recipe, s.overrides, "all" if recurrent else "li2017") if count_macs else None
            ips = ASSUMED_FLOPS / (6 * macs) if macs else None
            source = (f"assumed: {macs:.3g} MACs/image at {ASSUMED_FLOPS:.0e} FLOP/s, 6 FLOPs/MAC" if macs else
                      "unknown: no measurement and no MAC count")
            if macs and recurrent:
                source += (" (torch's flop counter over every time step); a recurrent net runs its steps one after "
                           "another, so a GPU reaches less than this FLOP rate: a lower bound")
            if macs and "AffineVAE" in model and str(_setting(study, stage, "model.init_args.mode")) != "none":
                source += ("; the pose search's extra passes (random restarts x Adam steps per image, where the "
                           "module searches) are not counted, so this is a lower bound")
        out.append(StageCost(stage, runs, s.gpus, None if epochs is None else float(epochs),
                             None if images is None else int(images), ips, source))
    return out


def format_costs(costs: list[StageCost]) -> str:
    lines = ["cost estimate (GPU-hours = epochs x training images / images per second per GPU / 3600):"]
    total, unknown = 0.0, []
    for c in costs:
        per = c.gpu_hours_per_run
        if per is None:
            unknown.append(c.stage)
            why = "; the training-set size of this datamodule is not known without its data" if c.images is None else ""
            lines.append(f"  {c.stage}: {c.runs} run(s) x ? GPU-h ({c.source}; epochs {c.epochs}, images {c.images}"
                         f"{why})")
            continue
        if c.epochs == 0 and not c.images:
            lines.append(f"  {c.stage}: {c.runs} run(s) x 0 GPU-h ({c.source})")
            continue
        total += c.gpu_hours or 0.0
        lines.append(f"  {c.stage}: {c.runs} run(s) x {per:.2f} GPU-h = {c.gpu_hours:.2f} GPU-h "
                     f"({c.epochs:g} epochs x {c.images} images at {c.images_per_s:.0f} images/s; {c.source}; "
                     f"{per / c.gpus:.2f} h wall per run on {c.gpus} GPU(s), linear scaling assumed)")
    lines.append(f"  total: {total:.1f} GPU-hours" + (f" (without {', '.join(unknown)})" if unknown else ""))
    return "\n".join(lines)
