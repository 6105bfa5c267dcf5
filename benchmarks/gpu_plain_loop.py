"""Plain PyTorch training loop (no Lightning) on a GPU: fp32, TF32, bf16 autocast, bf16 + channels_last, and bf16 +
channels_last + torch.compile, for nets built by the recipes, on random in-memory batches (30 timed SGD steps after
5 warm-up steps). Explains the bf16 column of results/gpu_recipes.md: bf16 pays off only in NHWC.

Usage (on a GPU machine)::

    python -m benchmarks.gpu_plain_loop results/gpu_plain_loop.txt   # also results/gpu_plain_loop.{json,md}

The ``.txt`` file is written line by line, so a run cut by its time limit keeps what it measured; the JSON and
markdown report (with the command and the machine, detected at run time) are written at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import command_line, machine_info, write_report

CASES = [("baseline_resnet56_cifar10", 128), ("baseline_resnet56_cifar10", 1024), ("sicnn_imagenet", 256)]
MODES = ["fp32", "tf32", "bf16", "bf16_cl", "bf16_cl_compile"]


def images_per_s(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, steps: int = 30,
                 warmup: int = 5) -> float:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode != "fp32"
    layout = torch.channels_last if "cl" in mode else torch.contiguous_format
    net = net.to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    f = torch.compile(net) if "compile" in mode else net
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16, enabled=mode.startswith("bf16")):
            loss = F.cross_entropy(f(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - start)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """One row per recipe and batch, one column per mode (images/s, or why the mode failed)."""
    lines = ["# Plain PyTorch training loop on a GPU: images/s per precision and memory layout", "",
             "30 timed SGD steps after 5 warm-up steps on random in-memory batches; nets built by the recipes; no "
             "Lightning. cl = channels_last.", "",
             "| recipe | batch | " + " | ".join(MODES) + " |", "|---|---|" + "---|" * len(MODES)]
    cases = list(dict.fromkeys((r["recipe"], r["batch"]) for r in rows))
    for recipe, batch in cases:
        cells = {r["mode"]: (f"{r['images_per_s']:.0f}" if "images_per_s" in r else f"failed ({r['error']})")
                 for r in rows if (r["recipe"], r["batch"]) == (recipe, batch)}
        lines.append(f"| {recipe} | {batch} | " + " | ".join(cells.get(m, "-") for m in MODES) + " |")
    return "\n".join(lines) + "\n"


def main(out: str, argv: list[str] | None = None) -> list[dict[str, Any]]:
    from main import cli_main

    torch.backends.cudnn.benchmark = True
    report: dict[str, Any] = {"command": command_line("benchmarks.gpu_plain_loop", argv),
                              "machine": machine_info(device="cuda"), "rows": []}
    with open(out, "w") as log:  # written line by line: a run cut by its time limit keeps what it measured
        for recipe, batch in CASES:
            cli = cli_main(["--config", f"recipes/{recipe}.yaml", "--trainer.logger=false"], run=False)
            net = cli.model.net.cuda()
            x = torch.randn(batch, *cli.datamodule.input_shape, device="cuda")
            y = torch.randint(0, int(cli.datamodule.num_classes), (batch,), device="cuda")
            for mode in MODES:
                row: dict[str, Any] = {"recipe": recipe, "batch": batch, "mode": mode}
                try:
                    row["images_per_s"] = images_per_s(net, x, y, mode)
                    line = f"{recipe} batch {batch} {mode}: {row['images_per_s']:.0f} img/s (plain PyTorch loop)"
                except Exception as err:  # noqa: BLE001 - a failing mode is a result
                    row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
                    line = f"{recipe} batch {batch} {mode}: failed {row['error']}"
                report["rows"].append(row)
                print(line, flush=True)
                log.write(line + "\n")
                log.flush()
    path = Path(out)
    write_report(path.stem, report, to_markdown(report["rows"]), path.parent)
    return report["rows"]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/gpu_plain_loop.txt")
