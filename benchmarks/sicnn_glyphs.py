"""CPU-scale SI-CNN study on glyphs: the spatially interpolated network against the plain inverted-residual
network at the same architecture and at the same MAC budget -- accuracy, MACs, parameters and measured CPU
latency side by side (issue 7, item 5b). The SI block is the project's design (``nets/sicnn.py``;
docs/sicnn.md#project-design); the thesis claims up to ~40% less compute at no loss of accuracy (docs/sicnn.md#what-is-public).

Models (1x32x32 glyphs, all 34 classes):

* ``plain``: ``irnet`` (small MobileNetV2-style net, ``nets.sicnn.IRNet``), width 1.
* ``si``: ``si_irnet``, the same architecture with its stride-1 expanded inverted residuals as SI blocks
  (anchor stride 2, cheap path depthwise 3x3 + 1x1).
* ``plain_same_macs``: ``irnet`` with the ``width_mult`` whose MACs are closest to ``si``'s (searched over
  0.30..1.00, to 0.01, before any training).

Protocol, fixed before running: SGD lr 0.1, Nesterov momentum 0.9, weight decay 1e-4, batch 128, cosine decay
per step to 0, 3 epochs on 6000 glyphs (34 classes, difficulty 0.5, standardised); per seed every model
sees the same data (``data_seed = seed``), the same batch order and the same torch seed; the number reported is
the test accuracy after the last epoch. Latency: eval-mode forward, 1 torch thread, median of ``--repeats`` runs
at batch 1 and batch 128, the models interleaved over ``--rounds`` rounds (median of the round medians).

Claims (paired by seed, ``benchmarks.seeds.compare``; margins fixed in advance, accuracy points):

* same architecture: ``si`` is within 1.0 point of ``plain`` (non-inferiority: low(si - plain) > -1.0);
* same MAC budget: ``si`` beats ``plain_same_macs`` (low(si - plain_same_macs) > 0).

The budget (3 epochs of 6000 images) is what fits a 2-core CPU shared with other jobs in ~25 minutes; the nets
are not trained to convergence, so the study compares the models at an equal, short training budget.

Usage (about 25 minutes on a shared 2-core CPU for the defaults)::

    nohup python -m benchmarks.sicnn_glyphs --out results/sicnn_glyphs.json > /tmp/sicnn_glyphs.log 2>&1 &
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.global_illustrative import glyph_tensors, machine, train_classifier

MODELS = ("plain", "si", "plain_same_macs")
NON_INFERIORITY_MARGIN = 1.0


def elementwise_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Interpolation/mask multiply-adds of every SI block (not seen by conv counters), per input."""
    from nets.sicnn import SIBlock

    total = [0]

    def hook(module: SIBlock, inputs: Any, output: Any) -> None:
        total[0] += module.elementwise_macs(*inputs[0].shape[-2:])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SIBlock)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] // x.shape[0]


def build(name: str, width: float, num_classes: int = 10) -> nn.Module:
    from nets import create_net

    net = "si_irnet" if name == "si" else "irnet"
    return create_net(net, num_classes=num_classes, in_channels=1, width_mult=width)


def same_mac_width(target: float, num_classes: int = 10) -> tuple[float, float]:
    """The irnet width multiplier in 0.30..1.00 (steps of 0.01) whose MACs are closest to ``target``: a coarse
    pass in steps of 0.05, then every 0.01 within 0.05 of the best coarse width."""
    from callbacks.efficiency_report import count_macs

    x = torch.zeros(1, 1, 32, 32)
    cache: dict[int, float] = {}

    def macs(i: int) -> float:
        if i not in cache:
            cache[i] = count_macs(build("plain", i / 100, num_classes), x, "all")
        return cache[i]

    coarse = min(range(30, 101, 5), key=lambda i: (abs(macs(i) - target), i))
    best = min(range(max(30, coarse - 5), min(100, coarse + 5) + 1), key=lambda i: (abs(macs(i) - target), i))
    return best / 100, macs(best)


def describe_models(num_classes: int = 10) -> dict[str, dict[str, Any]]:
    from callbacks.efficiency_report import count_macs, count_params

    x = torch.zeros(1, 1, 32, 32)
    si_macs = count_macs(build("si", 1.0, num_classes), x, "all")
    w, _ = same_mac_width(si_macs, num_classes)
    out = {}
    for name, width in (("plain", 1.0), ("si", 1.0), ("plain_same_macs", w)):
        m = build(name, width, num_classes)
        out[name] = {"width_mult": width, "params": count_params(m, "all"), "macs_all": count_macs(m, x, "all"),
                     "macs_li2017": count_macs(m, x, "li2017"), "elementwise_macs": elementwise_macs(m, x)}
    return out


def latency(models: dict[str, dict[str, Any]], rounds: int, repeats: int,
            num_classes: int = 10) -> dict[str, dict[str, float]]:
    from callbacks.efficiency_report import measure_latency

    built = {n: build(n, d["width_mult"], num_classes) for n, d in models.items()}
    x = torch.zeros(1, 1, 32, 32)
    per: dict[tuple[str, int], list[float]] = {(n, b): [] for n in built for b in (1, 128)}
    for r in range(rounds):
        names = list(built) if r % 2 == 0 else list(reversed(list(built)))
        for n in names:
            for b in (1, 128):
                per[(n, b)].append(measure_latency(built[n], x, b, repeats, warmup=2))
    return {n: {f"batch{b}_ms": 1e3 * statistics.median(per[(n, b)]) for b in (1, 128)} for n in built}


def run_one(name: str, width: float, seed: int, data: dict[str, torch.Tensor],
            args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build(name, width, args.num_classes)

    def optimizer(params: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)

    def scheduler(opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * args.epochs)

    r = train_classifier(model, data, args.epochs, args.batch_size, seed, optimizer, scheduler)
    r.pop("preds")
    return {"model": name, "seed": seed, "width_mult": width, **r}


def summarise(data: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    from benchmarks.seeds import compare, mean_ci

    runs = data["runs"]
    by = {m: {r["seed"]: r["test_acc"] for r in runs if r["model"] == m} for m in MODELS}
    out: dict[str, Any] = {"per_model": {}, "claims": []}
    for m in MODELS:
        accs = [by[m][s] for s in seeds if s in by[m]]
        if len(accs) >= 2:
            ci = mean_ci(accs)
            out["per_model"][m] = {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}
    for a, b, margin, kind in (("si", "plain", NON_INFERIORITY_MARGIN, "non_inferior"),
                               ("si", "plain_same_macs", 0.0, "beats")):
        common = [s for s in seeds if s in by[a] and s in by[b]]
        if len(common) >= 5:
            c = compare([by[a][s] for s in common], [by[b][s] for s in common], margin=margin, names=(a, b))
            met = c.non_inferior if kind == "non_inferior" else c.margin_met
            out["claims"].append({"a": a, "b": b, "kind": kind, "margin": margin, "diff": c.diff, "low": c.low,
                                  "high": c.high, "n": c.n_a, "met": met, "text": str(c)})
    return out


def to_markdown(data: dict[str, Any]) -> str:
    models, lat, s = data["models"], data.get("latency", {}), data.get("summary", {})
    base = models["plain"]["macs_all"]
    lines = ["# SI-CNN vs plain inverted-residual network on glyphs (CPU scale)", "",
             f"Command: `{data['command']}`", "", f"Date: {data['date']}", "", f"Machine: {data['machine']}", "",
             "MACs per 1x32x32 input (batch 1): conv/linear MACs from torch's flop counter / 2 (`all`), plus the SI "
             "blocks' element-wise interpolation/mask multiply-adds in their own column. Latency: eval forward, "
             "1 thread, median. Accuracy: test %, mean and 95% Student-t interval over seeds, after the last epoch.",
             "", "| model | width | params | MACs (all) | vs plain | + element-wise | latency b1 (ms) | "
             "latency b128 (ms) | b128 vs plain | test acc (%) | 95% interval |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in MODELS:
        d, acc = models[m], s.get("per_model", {}).get(m)
        la = lat.get(m, {})
        ratio = (f"{la['batch128_ms'] / lat['plain']['batch128_ms']:.2f}x"
                 if la and "plain" in lat else "-")
        lines.append(
            f"| {m} | {d['width_mult']:.2f} | {d['params']:,} | {d['macs_all'] / 1e6:.3f}M | "
            f"{100 * (d['macs_all'] / base - 1):+.1f}% | {d['elementwise_macs'] / 1e6:.3f}M | "
            f"{la.get('batch1_ms', float('nan')):.2f} | {la.get('batch128_ms', float('nan')):.1f} | {ratio} | "
            + (f"{acc['mean']:.2f} | [{acc['low']:.2f}, {acc['high']:.2f}] (n={acc['n']}) |" if acc else "- | - |"))
    lines += ["", "Claims (paired by seed; margins fixed in advance):", ""]
    for c in s.get("claims", []):
        what = (f"is within {c['margin']:g} point of {c['b']} (non-inferiority: low(diff) > -{c['margin']:g})"
                if c["kind"] == "non_inferior" else f"beats {c['b']} (low(diff) > 0)")
        lines.append(f"- {c['a']} {what}: **{'met' if c['met'] else 'not met'}**; {c['a']} - {c['b']} = "
                     f"{c['diff']:.2f} [{c['low']:.2f}, {c['high']:.2f}] points (95% CI, n={c['n']}, paired)")
    lines += ["", "Per run:", "", "| model | seed | test acc | train acc (first 5k) | final train loss | s |",
              "|---|---|---|---|---|---|"]
    for r in data["runs"]:
        lines.append(f"| {r['model']} | {r['seed']} | {r['test_acc']:.2f} | {r['train_acc_first5k']:.2f} | "
                     f"{r['train_loss'][-1]:.4f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sicnn_glyphs", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=3000)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--num-classes", type=int, default=34, help="glyph classes (34 = all of 0-9, A-Z but I, O)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (0 skips latency)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/sicnn_glyphs.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.sicnn_glyphs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    keys = ["seeds", "models", "epochs", "train_size", "test_size", "difficulty", "num_classes", "batch_size", "lr",
            "weight_decay", "threads"]
    data: dict[str, Any] = {"args": {k: getattr(args, k) for k in keys}, "command": cmd,
                            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                            "models": describe_models(args.num_classes), "runs": []}
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("args") == data["args"]:  # resume: keep the runs, their date and machine
            data["runs"] = old["runs"]
            data["latency"] = old.get("latency", {})
            data["date"], data["machine"] = old.get("date", data["date"]), old.get("machine", data["machine"])

    def save() -> None:
        data["summary"] = summarise(data, args.seeds)
        out.write_text(json.dumps(data, indent=1))
        out.with_suffix(".md").write_text(to_markdown(data))

    if args.rounds > 0 and not data.get("latency"):
        data["latency"] = latency(data["models"], args.rounds, args.repeats, args.num_classes)
        save()
    done = {(r["model"], r["seed"]) for r in data["runs"]}
    for seed in args.seeds:
        if all((m, seed) in done for m in args.models):
            continue
        tensors = glyph_tensors(seed, args.train_size, args.test_size, args.difficulty, args.num_classes)
        for m in args.models:
            if (m, seed) in done:
                continue
            r = run_one(m, data["models"][m]["width_mult"], seed, tensors, args)
            data["runs"].append(r)
            print(f"{m:>16} seed {seed}: test {r['test_acc']:.2f}%  ({r['train_seconds']:.0f} s)", flush=True)
            save()
    save()
    print(to_markdown(data))
    return data


if __name__ == "__main__":
    main()
