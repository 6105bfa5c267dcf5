"""Convex study of Li et al., "Training Quantized Nets: A Deeper Understanding", NeurIPS 2017 (docs/quantized_training.md):
on a strongly convex problem, as the learning rate decays,

* BC's real-valued buffer keeps approaching the minimiser (its error keeps falling),
* SR stalls at an error floor set by the grid step (halving the step lowers the floor; lowering the learning rate
  does not),
* R freezes: once lr * |g| < step / 2 in every coordinate, every update rounds back to the same grid point.

Problem: ridge regression F(w) = 1/(2m) ||X w - y||^2 + mu/2 ||w||^2 (d = 10, m = 2000, X ~ N(0, 1), y = X w_true +
0.1 noise, mu = 0.1), minimised by minibatch SGD (batch 8) with the learning rate halved every ``phase`` steps.
The weights are an ``nn.Linear(d, 1, bias=False)`` trained through ``QuantizedTraining`` itself (``attach`` +
``watch_optimizer``, the same code as in Lightning), on the uniform grid ``step * Z`` (8-bit range, wide enough
never to clip). BC uses its stochastic quantizer in the forward (the variant whose gradient at Q(w) is unbiased;
the deterministic one is reported too). Reported: the excess loss F(w) - F(w*) of what each method stores (BC: the
buffer and the deployed Q_d(buffer)), averaged over the last half of every phase and over seeds; "grid best" is
F(Q_d(w*)) - F(w*), what the nearest grid point to the minimiser achieves.

Usage (about a minute on one core)::

    python -m benchmarks.quant_convex --out results/quant_convex.json   # also .md and .png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

METHODS = ("fp", "bc", "bc_det", "sr", "r")
LABELS = {"fp": "FP SGD", "bc": "BC buffer (stochastic Q)", "bc_det": "BC buffer (deterministic Q)",
          "bc_q": "BC deployed Q_d(buffer)", "sr": "SR", "r": "R"}


def make_problem(seed: int, d: int, m: int, mu: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    w_true = torch.rand(d, generator=g, dtype=torch.float64) * 2 - 1
    y = x @ w_true + 0.1 * torch.randn(m, generator=g, dtype=torch.float64)
    h = x.T @ x / m + mu * torch.eye(d, dtype=torch.float64)
    w_star = torch.linalg.solve(h, x.T @ y / m)
    return {"x": x, "y": y, "h": h, "w_star": w_star, "mu": torch.tensor(mu, dtype=torch.float64)}


def excess(p: dict[str, torch.Tensor], w: torch.Tensor) -> float:
    """F(w) - F(w*) = 1/2 (w - w*)^T H (w - w*) for the quadratic (exact, in float64)."""
    e = w.detach().double().reshape(-1) - p["w_star"]
    return float(0.5 * e @ p["h"] @ e)


def run(method: str, p: dict[str, torch.Tensor], step: float, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from callbacks.quantized_training import QuantizedTraining, quantize_nearest

    d = p["x"].shape[1]
    torch.manual_seed(seed)
    lin = nn.Linear(d, 1, bias=False)
    nn.init.uniform_(lin.weight, -1.0, 1.0)
    cb = None
    if method != "fp":
        cb = QuantizedTraining(method="bc" if method.startswith("bc") else method, grid="uniform", bits=8, step=step,
                               stochastic=(method == "bc"), seed=seed)
        cb.attach(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=args.lr)
    if cb is not None:
        cb.watch_optimizer(opt)
    x, y = p["x"].float(), p["y"].float()
    g = torch.Generator().manual_seed(seed)
    m = x.shape[0]
    trace, trace_q, lr_trace, last_change, max_update = [], [], [], 0, []
    for t in range(args.phases * args.phase):
        lr = args.lr * 0.5 ** (t // args.phase)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(m, (args.batch,), generator=g)
        before = lin.weight.detach().clone()
        opt.zero_grad()
        r = lin(x[idx]).squeeze(1) - y[idx]
        loss = 0.5 * (r * r).mean() + 0.5 * args.mu * (lin.weight.float() ** 2).sum()
        loss.backward()
        max_update.append(lr * float(lin.weight.grad.abs().max()))
        opt.step()
        if not torch.equal(before, lin.weight):
            last_change = t
        if t % args.every == 0 or t == args.phases * args.phase - 1:
            trace.append(excess(p, lin.weight))
            if method.startswith("bc"):
                trace_q.append(excess(p, quantize_nearest(lin.weight.detach(), cb.layers[""].grid)))
            lr_trace.append(lr)
    out = {"method": method, "step": step, "seed": seed, "trace": trace, "lr": lr_trace, "last_change": last_change,
           "max_update": max_update[:: args.every]}
    if trace_q:
        out["trace_q"] = trace_q
    return out


def phase_means(trace: list[float], args: argparse.Namespace) -> list[float]:
    """Mean of the trace over the last half of every phase."""
    per = args.phase // args.every
    return [sum(trace[k * per + per // 2 : (k + 1) * per]) / (per - per // 2) for k in range(args.phases)]


def grid_best(p: dict[str, torch.Tensor], step: float) -> float:
    from callbacks.quantized_training import make_grid, quantize_nearest

    return excess(p, quantize_nearest(p["w_star"].float(), make_grid("uniform", 1.0, 8, step=step)))


def analyse(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Per grid step: phase means (averaged over seeds) and the three claims."""
    out: dict[str, Any] = {}
    for step in args.steps:
        runs = [r for r in data["runs"] if r["step"] == step]
        table: dict[str, list[float]] = {}
        for key in ("fp", "bc", "bc_det", "sr", "r"):
            rs = [r for r in runs if r["method"] == key]
            per_seed = [phase_means(r["trace"], args) for r in rs]
            table[key] = [sum(v[k] for v in per_seed) / len(per_seed) for k in range(args.phases)]
        rs = [r for r in runs if r["method"] == "bc"]
        per_seed = [phase_means(r["trace_q"], args) for r in rs]
        table["bc_q"] = [sum(v[k] for v in per_seed) / len(per_seed) for k in range(args.phases)]
        best = sum(grid_best(make_problem(s, args.dim, args.samples, args.mu), step) for s in args.seeds)
        best /= len(args.seeds)
        r_runs = [r for r in runs if r["method"] == "r"]
        freeze = []
        for r in r_runs:
            t = r["last_change"]
            # after the last change, was every update below half a grid step? (measured each `every` steps)
            after = r["max_update"][t // args.every + 1 :]
            freeze.append({"seed": r["seed"], "last_change_step": t, "lr_at_freeze": args.lr * 0.5 ** (t // args.phase),
                           "max_update_after": max(after) if after else None})
        k = args.phases // 2
        claims = {
            # BC: the buffer's error keeps falling: each of the last k phases lower than the one before
            "bc_keeps_falling": all(table["bc"][i + 1] < table["bc"][i] for i in range(args.phases - k - 1,
                                                                                       args.phases - 1)),
            "bc_fall_factor_last_k_phases": table["bc"][args.phases - k - 1] / table["bc"][-1],
            # SR: over the last k phases (lr / 2^k) its error changes by less than 2x, and it stays above BC
            "sr_floor_ratio_last_k_phases": table["sr"][args.phases - k - 1] / table["sr"][-1],
            "sr_stalls": table["sr"][args.phases - k - 1] / table["sr"][-1] < 2.0,
            "sr_above_bc_at_end": table["sr"][-1] > 10 * table["bc"][-1],
            # R: frozen (last change at some step, then every lr*|g| < step/2)
            "r_frozen": all(f["max_update_after"] is not None and f["max_update_after"] < step / 2 for f in freeze),
        }
        out[str(step)] = {"table": table, "grid_best": best, "r_freeze": freeze, "claims": claims}
    if len(args.steps) >= 2:
        a, b = sorted(args.steps)[:2]
        out["sr_floor_vs_step"] = {"steps": [a, b], "floors": [out[str(a)]["table"]["sr"][-1],
                                                                out[str(b)]["table"]["sr"][-1]]}
    return out


def write_markdown(path: Path, data: dict[str, Any], args: argparse.Namespace) -> None:
    res = data["analysis"]
    lines = ["# Quantized training on a strongly convex problem: BC keeps improving, SR stalls, R freezes", "",
             f"Ridge regression, d = {args.dim}, m = {args.samples}, mu = {args.mu}; minibatch SGD "
             f"(batch {args.batch}), "
             f"lr {args.lr} halved every {args.phase} steps ({args.phases} phases); {len(args.seeds)} seeds (data, "
             "init and random draws). Excess loss F(w) - F(w*), mean over the last half of each phase and over "
             "seeds. Grid: step * {-127..127} (QuantizedTraining, grid: uniform, bits 8).", ""]
    for step in args.steps:
        r = res[str(step)]
        lines += [f"## Grid step {step}", "",
                  "| phase | lr | " + " | ".join(LABELS[k] for k in ("fp", "bc", "bc_det", "bc_q", "sr", "r")) + " |",
                  "|---|---|" + "---|" * 6]
        for k in range(args.phases):
            lr = args.lr * 0.5**k
            cells = " | ".join(f"{r['table'][m][k]:.2e}" for m in ("fp", "bc", "bc_det", "bc_q", "sr", "r"))
            lines.append(f"| {k + 1} | {lr:.2e} | {cells} |")
        c = r["claims"]
        fz = r["r_freeze"]
        lines += ["", f"Grid best F(Q_d(w*)) - F(w*): {r['grid_best']:.2e}.", "",
                  f"- BC (stochastic Q) buffer keeps falling over the last {args.phases // 2} phases: "
                  f"**{'yes' if c['bc_keeps_falling'] else 'no'}** (factor {c['bc_fall_factor_last_k_phases']:.1f} "
                  f"while the lr fell {2 ** (args.phases // 2)}x).",
                  f"- SR stalls: its error changes by a factor {c['sr_floor_ratio_last_k_phases']:.2f} over the same "
                  f"phases (**{'stalled' if c['sr_stalls'] else 'not stalled'}**, criterion < 2x) and ends "
                  f"{r['table']['sr'][-1] / max(r['table']['bc'][-1], 1e-300):.0f}x above BC's buffer.",
                  f"- R freezes: last weight change at steps {[f['last_change_step'] for f in fz]} (lr "
                  f"{sorted({f['lr_at_freeze'] for f in fz})}); afterwards the largest lr*|g| measured was "
                  f"{max((f['max_update_after'] or 0) for f in fz):.3g} < step/2 = {step / 2:g}: "
                  f"**{'frozen' if c['r_frozen'] else 'not frozen'}**.", ""]
    if "sr_floor_vs_step" in res:
        f = res["sr_floor_vs_step"]
        lines += [f"SR's final error: {f['floors'][0]:.2e} with grid step {f['steps'][0]}, {f['floors'][1]:.2e} "
                  f"with step {f['steps'][1]} ({f['floors'][1] / f['floors'][0]:.1f}x for a "
                  f"{f['steps'][1] / f['steps'][0]:g}x larger step: the floor is set by the grid, not by the "
                  "learning rate).", ""]
    lines += ["BC with the deterministic quantizer is shown for completeness: the gradient evaluated at "
              "Q_d(buffer) is biased (Q_d is not unbiased), so its buffer hovers near the cell boundaries around w* "
              "and its error stops falling, while the deployed weights Q_d(buffer) of stochastic BC approach the "
              "grid's best point (the floor no method storing grid values can beat).", "",
              f"![excess loss vs step]({path.with_suffix('.png').name})", "", "Command:", "", "```", data["command"],
              "```", "", f"Date: {data['date']}", "", f"Machine: {data['machine']}", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, data: dict[str, Any], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.steps), figsize=(6 * len(args.steps), 4.2), squeeze=False)
    colors = {"fp": "0.4", "bc": "C0", "bc_det": "C9", "bc_q": "C2", "sr": "C1", "r": "C3"}
    for ax, step in zip(axes[0], args.steps):
        runs = [r for r in data["runs"] if r["step"] == step]
        for key in ("fp", "bc", "bc_det", "bc_q", "sr", "r"):
            src, field = ("bc", "trace_q") if key == "bc_q" else (key, "trace")
            rs = [r[field] for r in runs if r["method"] == src]
            mean = [sum(v[i] for v in rs) / len(rs) for i in range(len(rs[0]))]
            ax.plot([i * args.every for i in range(len(mean))], mean, color=colors[key], label=LABELS[key], lw=1.2)
        ax.axhline(data["analysis"][str(step)]["grid_best"], color="k", ls=":", lw=1, label="grid best F(Q(w*))")
        ax.set_yscale("log")
        ax.set_xlabel(f"SGD step (lr {args.lr} halved every {args.phase})")
        ax.set_ylabel("F(w) - F(w*)")
        ax.set_title(f"grid step {step}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compact(data: dict[str, Any], keep_every: int = 10) -> dict[str, Any]:
    """What goes into the JSON: traces thinned to every ``keep_every``-th record, 4 significant digits; the
    per-step update sizes (used only for R's freeze, already in the analysis) dropped."""
    runs = []
    for r in data["runs"]:
        r = {k: v for k, v in r.items() if k != "max_update"}
        for key in ("trace", "trace_q", "lr"):
            if key in r:
                r[key] = [float(f"{v:.4g}") for v in r[key][::keep_every]]
        runs.append(r)
    return {**data, "runs": runs, "trace_every_steps": data["args"]["every"] * keep_every}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quant_convex", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=float, nargs="+", default=[0.1, 0.05], help="grid steps")
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--mu", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--phase", type=int, default=1000, help="steps per learning-rate phase")
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--every", type=int, default=10, help="record the error every this many steps")
    parser.add_argument("--out", default="results/quant_convex.json")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.phase % args.every:
        parser.error("--phase must be a multiple of --every")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "args": vars(args), "runs": [],
        "command": "python -m benchmarks.quant_convex " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, 1 thread",
    }
    for step in args.steps:
        for seed in args.seeds:
            p = make_problem(seed, args.dim, args.samples, args.mu)
            for method in METHODS:
                data["runs"].append(run(method, p, step, args, seed))
    data["analysis"] = analyse(data, args)
    if not args.no_plot:
        plot(out.with_suffix(".png"), data, args)
    out.write_text(json.dumps(compact(data)))
    write_markdown(out.with_suffix(".md"), data, args)
    for step in args.steps:
        print(step, json.dumps(data["analysis"][str(step)]["claims"]))
    return data


if __name__ == "__main__":
    main()
