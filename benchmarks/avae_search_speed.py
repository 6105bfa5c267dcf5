"""Speed of the Affine VAE pose search: batched (samples x restarts as one tensor computation) against the
per-sample loop at the same restarts x steps (modules/affine_vae.py, ``AffineVAE.search_alpha(batched=...)``).

Both run the same algorithm on the same random restarts (``init``), so they return the same poses (the maximum
difference is reported); the loop evaluates one sample and one restart per forward pass and runs the Adam steps of
each kept restart separately, as the authors' single-image search does. CPU time (and wall time) per call, single
thread (``torch.set_num_threads(1)``), median of ``--repeats`` after one warm-up call. The goal set in the issue is a
10x speed-up on CPU.

Why the goal is out of reach on one CPU thread: both versions do the same number of network evaluations, and a
convolution on one 40x40 image already costs about as much per image as inside a batch of 256 (measured 2.7 ms
per image forward at batch 1 and at batch 256 for the full-width 2D net); batching removes only the per-call
overhead (Python, dispatch, small-kernel inefficiency), which matters most for small nets. The batched search
gains more with threads or a GPU, where one large batch fills the device and 1-sample calls cannot.

Usage::

    python -m benchmarks.avae_search_speed                 # results/avae_search_speed.{json,md}
    python -m benchmarks.avae_search_speed --quick          # smaller batches (a few seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.harness import RESULTS, command_line, machine_info, write_report

# name, input shape, width, mode, batch, restarts, keep, steps, alpha_lr
CONFIGS = [
    ("2D rotation, paper training budget (MNIST 40x40, full width)", (1, 40, 40), 1.0, "rotation", 32, 20, 1, 10, 0.01),
    ("2D rotation, glyph study budget (32x32, width 0.5)", (1, 32, 32), 0.5, "rotation", 64, 8, 1, 2, 0.01),
    ("2D affine, 4 parameters (40x40, full width)", (1, 40, 40), 1.0, "affine", 16, 20, 1, 10, 0.03),
    ("3D Euler, keep best 2 (24^3, width 0.5)", (1, 24, 24, 24), 0.5, "euler", 4, 8, 2, 3, 0.03),
]


def _time(fn, repeats: int, device: torch.device = torch.device("cpu")) -> tuple[float, float]:
    """(median CPU seconds of this process, median wall seconds). On a machine shared with other jobs the CPU time
    of a single-threaded process is the robust measure; the wall time is reported beside it. On CUDA the wall time
    (synchronised at both ends) is the measure."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up
    cpu, wall = [], []
    for _ in range(repeats):
        sync()
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        sync()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def measure(cfg, repeats: int, scale: float = 1.0, device: str = "cpu") -> dict:
    from modules.affine_vae import AffineVAE

    name, shape, width, mode, batch, restarts, keep, steps, lr = cfg
    batch = max(2, int(batch * scale))
    torch.manual_seed(0)
    model = AffineVAE(input_shape=shape, latent_dim=8, width=width, mode=mode, restarts=restarts, keep=keep,
                      steps=steps, alpha_lr=lr)
    dev = torch.device(device)
    model.to(dev)
    x = torch.rand(batch, *shape).to(dev)
    init = model.sample_alpha(batch * restarts, torch.Generator().manual_seed(0)).reshape(batch, restarts, -1).to(dev)
    out = {}
    t_batched, w_batched = _time(lambda: out.__setitem__("b", model.search_alpha(x, init=init)), repeats, dev)
    t_loop, w_loop = _time(lambda: out.__setitem__("l", model.search_alpha(x, init=init, batched=False)), repeats,
                           dev)
    return {
        "config": name, "input_shape": list(shape), "width": width, "mode": mode, "batch": batch,
        "restarts": restarts, "keep": keep, "steps": steps,
        "batched_s": t_batched, "loop_s": t_loop, "speedup": t_loop / t_batched,
        "batched_wall_s": w_batched, "loop_wall_s": w_loop, "speedup_wall": w_loop / w_batched,
        "max_loss_diff": float((out["b"][1] - out["l"][1]).abs().max()),
        "max_alpha_diff": float((out["b"][0] - out["l"][0]).abs().max()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="quarter batches, one repeat")
    p.add_argument("--device", default="cpu", help="cpu (1 thread, CPU time) or cuda (wall time, synchronised)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (> 1: wall time is the measure)")
    p.add_argument("--out", default=None, help="default results/avae_search_speed[_cuda|_<n>threads].json")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    suffix = "_cuda" if cuda else (f"_{a.threads}threads" if a.threads > 1 else "")
    a.out = a.out or str(RESULTS / f"avae_search_speed{suffix}.json")
    torch.set_num_threads(a.threads)
    wall = cuda or a.threads > 1  # the CPU time sums threads (or is the host's under CUDA): wall time measures
    rows = []
    for cfg in CONFIGS:
        row = measure(cfg, 1 if a.quick else a.repeats, 0.25 if a.quick else 1.0, a.device)
        if wall:
            row["speedup"] = row["speedup_wall"]
        rows.append(row)
        print(f"{row['config']}: batched {row['batched_s']:.2f} s CPU, loop {row['loop_s']:.2f} s CPU, "
              f"x{row['speedup']:.1f} (max loss diff {row['max_loss_diff']:.2e})", flush=True)
    machine = machine_info(a.threads, a.device)
    result = {"rows": rows, "command": command_line("benchmarks.avae_search_speed", argv), "machine": machine,
              "threads": a.threads, "goal": "batched >= 10x faster than the per-sample loop"}
    out = Path(a.out)
    where = (f"{machine.get('gpu', a.device)}, wall time synchronised" if cuda else
             f"CPU, {a.threads} threads, wall time" if a.threads > 1 else "CPU, 1 thread")
    lines = [f"# Affine VAE pose search: batched vs per-sample loop ({where})", "",
             "Same restarts (init) and the same algorithm in both; time per search call over the whole batch, median "
             f"of {1 if a.quick else a.repeats} after a warm-up"
             + (" on one GPU, not shared." if cuda else
                " (on a machine shared with other jobs absolute times are noisy, the ratio less so; the load average"
                " is given below)."), "",
             "| configuration | batch | restarts x steps (keep) | batched CPU s | loop CPU s | speed-up ("
             f"{'wall, the measure' if wall else 'CPU time, the measure'}) | "
             "speed-up (wall) | max loss diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['batch']} | {r['restarts']} x {r['steps']} ({r['keep']}) | "
                     f"{r['batched_s']:.2f} | {r['loop_s']:.2f} | {r['speedup']:.1f}x | {r['speedup_wall']:.1f}x | "
                     f"{r['max_loss_diff']:.1e} |")
    met = all(r["speedup"] >= 10 for r in rows)
    goal = "; the issue sets it on CPU, this is the same measurement on a GPU" if cuda else ""
    lines += ["", f"Goal (>= 10x in every configuration{goal}): **{'met' if met else 'not met'}**."]
    write_report(out.stem, result, "\n".join(lines), out.parent)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
