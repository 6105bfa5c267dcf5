"""Training step time of quantized training (BC, SR, R with binary weights) relative to full precision (FP).

All sides train the same net (identical initial weights) through ``lightning.Trainer`` + ``modules.ImageClassifier``
with Adam (the paper's optimizer), on the same pre-generated in-memory batches, on the CPU with the same thread
count; the quantized sides add ``callbacks.quantized_training.QuantizedTraining(method=..., grid="binary")``. The
sides run back to back in rounds (the order rotates every round) after a warm-up, and the steady-state loop time
(``on_train_batch_start`` of batch 0 to ``on_train_batch_end`` of the last batch) is compared per round:
ratio = method step time / FP step time; the median and [min, max] over rounds are reported.

Goal: BC and SR at most 1.3x the FP step time (resnet20, batch 128).

Usage::

    python -m benchmarks.quant_overhead --rounds 5 --out results/quant_overhead.json   # also writes the .md
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    command_line,
    machine_info,
    quiet_lightning,
    quiet_trainer,
    write_report,
)
from benchmarks.overhead import (
    CONFIGS,
    Config,
    InMemoryBatches,
    _loop_timer_callback,
    initial_state,
    make_batches,
)

GOAL_NET = "resnet20"
GOAL_RATIO = 1.3
METHODS = ("fp", "bc", "sr", "r")
DEFAULT_STEPS = {"resnet20": 10, "small_cnn": 300}


def adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def run_side(method: str, cfg: Config, batches: list, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    from callbacks.quantized_training import QuantizedTraining
    from modules.image_classifier import ImageClassifier

    module = ImageClassifier(net=cfg.net, num_classes=cfg.num_classes, input_shape=cfg.input_shape,
                             optimizer=adam, log_images=False)
    module.net.load_state_dict(state)
    timer = _loop_timer_callback(len(batches))
    callbacks: list[Any] = [timer]
    if method != "fp":
        callbacks.insert(0, QuantizedTraining(method=method, grid="binary", delta=1.0, seed=0))
    with quiet_lightning():
        gc.collect()
        trainer = quiet_trainer(accelerator="cpu", devices=1, max_epochs=1, max_steps=len(batches),
                                callbacks=callbacks)
        trainer.fit(module, train_dataloaders=InMemoryBatches(batches))
    if trainer.global_step != len(batches) or timer.start is None or timer.end is None:
        raise RuntimeError(f"{method}: ran {trainer.global_step} of {len(batches)} steps")
    return {"loop_s": timer.end - timer.start, "threads": timer.threads}


def isolated_costs(cfg: Config, state: dict[str, torch.Tensor], repeats: int = 30) -> dict[str, float]:
    """Milliseconds per training step of the quantization work alone, timed in isolation (min over ``repeats``):
    BC: every layer's forward pre-/post-hook (Q_d(w) and the straight-through node) plus the clip after the
    step; SR / R: the projection after the step. Much less sensitive to a busy machine than the step ratio."""
    from callbacks.quantized_training import QuantizedTraining
    from modules.image_classifier import ImageClassifier

    module = ImageClassifier(net=cfg.net, num_classes=cfg.num_classes, input_shape=cfg.input_shape,
                             optimizer=adam, log_images=False)
    module.net.load_state_dict(state)
    out = {}
    for method in ("bc", "sr", "r"):
        cb = QuantizedTraining(method=method, grid="binary", delta=1.0, seed=0)
        cb.attach(module)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            if method == "bc":
                for name, layer in cb.layers.items():
                    cb._bc_pre_forward(name, layer.module, ())
                    cb._bc_post_forward(layer.module, (), None)
            cb.apply_update_rule()
            best = min(best, time.perf_counter() - t0)
        cb.detach()
        out[method] = best * 1e3
    return out


def benchmark(cfg: Config, steps: int, rounds: int, batch_size: int, methods: tuple[str, ...] = METHODS,
              seed: int = 0, warmup_steps: int = 2) -> dict[str, Any]:
    batches = make_batches(cfg, steps, batch_size, seed)
    state = initial_state(cfg, seed)
    for m in methods:  # warm-up: imports, oneDNN primitive caches, allocator
        run_side(m, cfg, batches[:warmup_steps], state)
    per_round = []
    for r in range(rounds):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        times = {m: run_side(m, cfg, batches, state) for m in order}
        per_round.append({"order": list(order), **{f"{m}_step_ms": times[m]["loop_s"] / steps * 1e3 for m in methods},
                          **{f"{m}_ratio": times[m]["loop_s"] / times["fp"]["loop_s"] for m in methods if m != "fp"},
                          "threads": {m: times[m]["threads"] for m in methods}})
    out: dict[str, Any] = {"name": cfg.name, "net": cfg.net, "data": cfg.data, "input_shape": list(cfg.input_shape),
                           "batch_size": batch_size, "steps": steps, "rounds": rounds, "per_round": per_round}
    out["isolated_ms"] = isolated_costs(cfg, state)
    out["fp_step_ms_min"] = min(r["fp_step_ms"] for r in per_round)
    for m in methods:
        out[f"{m}_step_ms"] = statistics.median(r[f"{m}_step_ms"] for r in per_round)
        if m != "fp":
            out[f"{m}_min_ratio"] = min(r[f"{m}_step_ms"] for r in per_round) / out["fp_step_ms_min"]
            out[f"{m}_isolated_ratio"] = 1.0 + out["isolated_ms"][m] / out["fp_step_ms_min"]
        if m != "fp":
            vals = [r[f"{m}_ratio"] for r in per_round]
            out[f"{m}_ratio"] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
            out[f"{m}_overhead_ms"] = out[f"{m}_step_ms"] - out["fp_step_ms"]
    return out


def to_markdown(data: dict[str, Any]) -> str:
    lines = ["# Quantized training: step time of BC, SR and R relative to full precision", "",
             f"Goal: BC and SR at most {GOAL_RATIO}x the full-precision step time for {GOAL_NET} (median over rounds).",
             "", "| net | batch | steps | FP ms/step | BC ms/step | SR ms/step | R ms/step | "
             "BC / FP median [min, max] | SR / FP median [min, max] | R / FP median [min, max] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in data["results"]:
        cells = [f"{res[f'{m}_step_ms']:.1f}" for m in METHODS]
        ratios = [f"{res[f'{m}_ratio']['median']:.3f} [{res[f'{m}_ratio']['min']:.3f}, {res[f'{m}_ratio']['max']:.3f}]"
                  for m in METHODS[1:]]
        lines.append(f"| {res['name']} ({res['data']}) | {res['batch_size']} | {res['steps']} | " + " | ".join(cells)
                     + " | " + " | ".join(ratios) + " |")
    lines += ["", "Less noisy views of the same runs: *fastest* = fastest quantized step / fastest FP step over the "
              "rounds; *isolated* = 1 + (the quantization work alone, timed in isolation) / fastest FP step.", "",
              "| net | BC added ms/step (isolated) | SR added | R added | BC / FP fastest, isolated | SR / FP fastest, "
              "isolated | R / FP fastest, isolated |", "|---|---|---|---|---|---|---|"]
    for res in data["results"]:
        iso = res["isolated_ms"]
        cells = [f"{res[f'{m}_min_ratio']:.3f}, {res[f'{m}_isolated_ratio']:.4f}" for m in METHODS[1:]]
        lines.append(f"| {res['name']} | {iso['bc']:.2f} | {iso['sr']:.2f} | {iso['r']:.2f} | " + " | ".join(cells)
                     + " |")
    goal = [r for r in data["results"] if r["net"] == GOAL_NET]
    if goal:
        g = goal[0]
        met = all(g[f"{m}_ratio"]["median"] <= GOAL_RATIO for m in ("bc", "sr"))
        lines += ["", f"**Goal {'met' if met else 'NOT met'}**: {GOAL_NET} BC {g['bc_ratio']['median']:.3f}x, SR "
                  f"{g['sr_ratio']['median']:.3f}x (goal <= {GOAL_RATIO}x)."]
    lines += ["", "- Every side: `lightning.Trainer` (CPU, no logger, checkpointing, progress bar or summary) + "
              "`ImageClassifier` with Adam(lr=1e-3), the same initial weights and the same in-memory batches "
              "(resnet20: random 3x32x32 tensors; small_cnn: scikit-learn digits). Quantized sides add "
              "`QuantizedTraining(method=..., grid='binary', delta=1)` on every conv and linear weight.",
              "- Step time: steady-state loop time / steps (first batch start to last batch end), per round; sides "
              "run back to back, the order rotating each round, after a warm-up of 2 steps per side.",
              "- Where the time goes: BC quantizes each layer's weights in its forward pre-hook (one `where` per "
              "layer) and passes the gradient straight through; SR draws one uniform number per weight after every "
              "optimizer step and rounds; R rounds after every step. The cost is proportional to the number of "
              "weights, the convolutions' to weights x positions x batch, so the ratio is largest for small "
              "batches and small inputs (small_cnn on 8x8 digits).", "", "Per-round ratios:", ""]
    for res in data["results"]:
        for m in METHODS[1:]:
            ratios = ", ".join(f"{r[f'{m}_ratio']:.3f}" for r in res["per_round"])
            lines.append(f"- {res['name']} {m.upper()}: {ratios}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quant_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_STEPS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="steps per timing (default per config)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/quant_overhead.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data: dict[str, Any] = {"command": command_line("benchmarks.quant_overhead", argv),
                            "machine": machine_info(args.threads), "results": []}
    for name in args.configs:
        cfg = CONFIGS[name]
        t0 = time.perf_counter()
        res = benchmark(cfg, args.steps or DEFAULT_STEPS.get(name, cfg.steps), args.rounds,
                        args.batch_size or cfg.batch_size)
        data["results"].append(res)
        print(f"{name}: FP {res['fp_step_ms']:.1f} ms/step; BC {res['bc_ratio']['median']:.3f}x, SR "
              f"{res['sr_ratio']['median']:.3f}x, R {res['r_ratio']['median']:.3f}x ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    out = Path(args.out)
    write_report(out.stem, data, to_markdown(data), out.parent)
    return data


if __name__ == "__main__":
    main()
