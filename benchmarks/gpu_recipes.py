"""Training throughput of full-size recipes on a GPU, fp32 beside mixed precision.

Each recipe is built by main.py's CLI exactly as ``python main.py fit --config recipes/<name>.yaml`` builds it
(model, optimizer, scheduler, the recipe's callbacks such as pruning or quantized training, its batch size and
input size), then trained by the real Lightning Trainer for ``--steps`` steps on in-memory random batches of the
datamodule's ``input_shape`` (so the figure is the training step, not JPEG decoding or disk). The precisions are
measured one after the other in the same process and reported side by side: images per second over the steps
after ``--warmup`` (CUDA synchronised at both ends), peak GPU memory, and the ratio to the first precision.

Usage (on a machine with a GPU)::

    python -m benchmarks.gpu_recipes --out results/gpu_recipes.json      # also writes results/gpu_recipes.md
    python -m benchmarks.gpu_recipes --accelerator cpu --steps 3 --warmup 1 --batch-size 4 --recipes quickstart
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.harness import step_timer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = [
    "baseline_resnet56_cifar10", "prune_resnet56_cifar10_b", "quant_bc_resnet56_cifar10",
    "baseline_resnet32_cifar10", "global_resnet32_cifar10",
    "baseline_mobilenet_v3_large_imagenet", "sicnn_imagenet",
]


class RandomImages(Dataset):
    """``n`` fixed random (input, label) pairs held in memory."""

    def __init__(self, n: int, shape: tuple[int, ...], num_classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, *shape, generator=g)
        self.y = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def measure(recipe: str, precision: str, accelerator: str, steps: int, warmup: int,
            batch_size: int | None, root: Path) -> dict:
    from main import cli_main

    path = REPO / "recipes" / f"{recipe}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no recipe {recipe!r}: {path} does not exist")
    args = ["--config", str(path), f"--runs_root={root}",
            f"--trainer.accelerator={accelerator}", "--trainer.devices=1", f"--trainer.precision={precision}",
            f"--trainer.max_steps={steps + warmup}", "--trainer.max_epochs=-1", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]
    if batch_size:
        args.append(f"--data.init_args.batch_size={batch_size}")
    cli = cli_main(args, run=False)
    dm = cli.datamodule
    batch = batch_size or dm.hparams.get("batch_size") or getattr(dm, "batch_size")
    data = RandomImages(batch * 4, tuple(dm.input_shape), int(dm.num_classes))
    loader = DataLoader(data, batch_size=batch, shuffle=False, drop_last=True, num_workers=0,
                        pin_memory=accelerator == "gpu")
    timer = step_timer(warmup)
    cli.trainer.callbacks.append(timer)
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    cli.trainer.fit(cli.model, train_dataloaders=loader)
    seconds = timer.end - timer.start
    return {
        "recipe": recipe, "precision": precision, "batch": batch, "input_shape": list(dm.input_shape),
        "timed_steps": timer.steps, "seconds": seconds, "images_per_s": timer.steps * batch / seconds,
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if accelerator == "gpu" else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES)
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--steps", type=int, default=50, help="timed steps per (recipe, precision)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (cuDNN autotuning, allocator)")
    p.add_argument("--batch-size", type=int, default=None, help="override every recipe's batch size")
    p.add_argument("--root", default="/tmp/gpu_recipes_runs")
    p.add_argument("--out", default=str(REPO / "results" / "gpu_recipes.json"))
    a = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.backends.cudnn.benchmark = True
    rows = []
    for recipe in a.recipes:
        for precision in a.precisions:
            try:
                row = measure(recipe, precision, a.accelerator, a.steps, a.warmup, a.batch_size, Path(a.root))
            except (Exception, SystemExit) as err:  # noqa: BLE001 - one recipe's failure is a result, not a crash
                row = {"recipe": recipe, "precision": precision, "error": f"{type(err).__name__}: {err}"[:400]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name(0) if a.accelerator == "gpu" else platform.processor() or "cpu"
    command = "python -m benchmarks.gpu_recipes" + (f" --recipes {' '.join(a.recipes)}"
                                                    if a.recipes != DEFAULT_RECIPES else "")
    result = {"rows": rows, "device": device, "torch": torch.__version__, "python": platform.python_version(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
              "steps": a.steps, "warmup": a.warmup}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    lines = [f"# Full-size recipe training throughput on {device}", "",
             f"Recipe's model, optimizer, callbacks, batch and input size; random in-memory batches; {a.steps} timed "
             f"steps after {a.warmup} warm-up steps; torch {torch.__version__}; {result['date']}.", "",
             "| recipe | batch | input | precision | images/s | vs " + a.precisions[0] + " | peak GPU memory (GiB) |",
             "|---|---|---|---|---|---|---|"]
    base: dict[str, float] = {}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | | | {r['precision']} | failed: {r['error']} | | |")
            continue
        base.setdefault(r["recipe"], r["images_per_s"])
        mem = f"{r['peak_gpu_mem_gb']:.2f}" if r["peak_gpu_mem_gb"] is not None else "-"
        lines.append(f"| {r['recipe']} | {r['batch']} | {'x'.join(map(str, r['input_shape']))} | {r['precision']} | "
                     f"{r['images_per_s']:.0f} | {r['images_per_s'] / base[r['recipe']]:.2f}x | {mem} |")
    lines += ["", f"Command: `{command}`."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
