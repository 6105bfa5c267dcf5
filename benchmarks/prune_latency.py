"""Measured CPU inference latency of the paper's pruned nets against their baselines (Li et al., ICLR 2017):
ResNet-56 vs ResNet-56-B and VGG-16 vs VGG-16-A, built from ``nets`` with the pruned widths
(``RESNET56_B_BLOCK_WIDTHS``, ``VGG16_A_CFG``), at batch 1 and 64, in eager mode and with ``torch.compile``.

Method: 1 torch thread (``--threads``), eval mode, ``torch.no_grad``, CIFAR input (3, 32, 32). The two nets of a
pair are measured side by side: in every round each (model, batch) is timed ``--repeats`` times after one
warm-up call and the order of the two models is alternated between rounds; the reported latency is the median
over all timed calls of all rounds. Compiled models are built once per (model, batch) with ``dynamic=False``;
if compiling fails, or the compile budget (``--compile-budget`` seconds, all compiles together) is spent, the
table says so instead of giving a number.

Per pair, mode and batch: ``latency_reduction = 1 - t_pruned / t_base``, ``mac_reduction = 1 - macs_pruned /
macs_base`` (li2017 convention) and their ratio (1.0: every saved MAC became saved time).

Usage::

    python -m benchmarks.prune_latency --out results/prune_latency.json   # also writes the .md
    python -m benchmarks.prune_latency --render results/prune_latency.json --discussion-file notes.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

PAIRS = {
    "resnet56": ("ResNet-56", "ResNet-56-B"),
    "vgg16": ("VGG-16", "VGG-16-A"),
}


def build(name: str, pruned: bool) -> nn.Module:
    from nets import create_net
    from nets.resnet_cifar import RESNET56_B_BLOCK_WIDTHS
    from nets.vgg_cifar import VGG16_A_CFG

    torch.manual_seed(0)
    if name == "resnet56":
        kw = {"block_widths": RESNET56_B_BLOCK_WIDTHS} if pruned else {}
    elif name == "vgg16":
        kw = {"cfg": VGG16_A_CFG} if pruned else {}
    else:
        raise ValueError(f"unknown pair {name!r}; choose from {sorted(PAIRS)}")
    return create_net(name, num_classes=10, **kw).eval()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@torch.no_grad()
def _time_calls(fn: Any, x: torch.Tensor, repeats: int, warmup: int = 1) -> list[float]:
    out = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn(x)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def measure(pairs: list[str], batches: list[int], modes: list[str], rounds: int, repeats: int,
            compile_budget: float) -> list[dict[str, Any]]:
    from callbacks.efficiency_report import count_macs, count_params

    rows = []
    compile_spent = 0.0
    for pair in pairs:
        models = {"base": build(pair, False), "pruned": build(pair, True)}
        x1 = torch.randn(1, 3, 32, 32)
        macs = {k: count_macs(m, x1, "li2017") for k, m in models.items()}
        params = {k: count_params(m, "li2017") for k, m in models.items()}
        for mode in modes:
            for b in batches:
                x = torch.randn(b, 3, 32, 32)
                fns: dict[str, Any] = {}
                notes: dict[str, str] = {}
                compile_s: dict[str, float] = {}
                for k, m in models.items():
                    if mode == "eager":
                        fns[k] = m
                        continue
                    if compile_spent > compile_budget:
                        notes[k] = f"not measured: compile budget of {compile_budget:.0f} s spent"
                        continue
                    t0 = time.perf_counter()
                    try:
                        torch._dynamo.reset()
                        cm = torch.compile(m, dynamic=False)
                        with torch.no_grad():
                            cm(x)  # compiles
                        fns[k] = cm
                    except Exception as err:  # noqa: BLE001 - reported in the table
                        notes[k] = f"compile failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                    compile_s[k] = time.perf_counter() - t0
                    compile_spent += compile_s[k]
                    print(f"  compiled {pair}/{k} b{b} in {compile_s[k]:.1f} s", flush=True)
                times: dict[str, list[float]] = {k: [] for k in fns}
                for r in range(rounds):
                    order = list(fns) if r % 2 == 0 else list(reversed(list(fns)))
                    for k in order:
                        times[k].extend(_time_calls(fns[k], x, repeats))
                lat = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                row: dict[str, Any] = {
                    "pair": pair, "base": PAIRS[pair][0], "pruned": PAIRS[pair][1], "mode": mode, "batch": b,
                    "macs_base": macs["base"], "macs_pruned": macs["pruned"],
                    "params_base": params["base"], "params_pruned": params["pruned"],
                    "mac_reduction": 1 - macs["pruned"] / macs["base"],
                    "latency_ms_base": lat.get("base"), "latency_ms_pruned": lat.get("pruned"),
                    "latency_ms_base_all": [1e3 * t for t in times.get("base", [])],
                    "latency_ms_pruned_all": [1e3 * t for t in times.get("pruned", [])],
                    "compile_s": compile_s or None, "notes": notes or None,
                }
                if "base" in lat and "pruned" in lat:
                    row["latency_reduction"] = 1 - lat["pruned"] / lat["base"]
                    row["ratio"] = row["latency_reduction"] / row["mac_reduction"]
                else:
                    row["latency_reduction"] = row["ratio"] = None
                rows.append(row)
                desc = (f"ratio {row['ratio']:.2f}" if row["ratio"] is not None else "; ".join(notes.values()))
                print(f"{PAIRS[pair][0]} vs {PAIRS[pair][1]} {mode} b{b}: {lat} ms; MAC cut "
                      f"{row['mac_reduction']:.3f}; {desc}", flush=True)
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def to_markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Pruned nets: measured CPU latency vs MAC reduction (Li et al., ICLR 2017)",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Machine: {data['machine']['cpu']}, {data['machine']['logical_cpus']} logical CPUs (shared with other "
        f"jobs), torch threads {data['machine']['torch_threads']}, torch {data['machine']['torch']}, python "
        f"{data['machine']['python']}; date {data['date']}; load average at start {data['machine']['load_start']}, "
        f"at end {data['machine']['load_end']}; wall {data['wall_s']:.0f} s.",
        "",
        f"Method: eval mode, no_grad, input 3x32x32, {data['rounds']} alternating rounds x {data['repeats']} timed "
        "calls (after 1 warm-up) per model, median of all timed calls. MACs: li2017 convention, per image. "
        "ratio = (1 - t_pruned/t_base) / (1 - MACs_pruned/MACs_base).",
        "",
        "| Pair | Mode | Batch | MACs base | MACs pruned | MAC cut | Latency base (ms) | Latency pruned (ms) | "
        "Latency cut | Ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        note = ""
        if r["notes"]:
            note = " (" + "; ".join(f"{k}: {v}" for k, v in r["notes"].items()) + ")"
        run = f" (run {r['run']})" if r.get("run") else ""
        lines.append(
            f"| {r['base']} vs {r['pruned']} | {r['mode']} | {r['batch']} | {r['macs_base']:.3g} | "
            f"{r['macs_pruned']:.3g} | {100 * r['mac_reduction']:.1f}% | {_fmt(r['latency_ms_base'], '.2f')} | "
            f"{_fmt(r['latency_ms_pruned'], '.2f')} | "
            f"{'—' if r['latency_reduction'] is None else format(100 * r['latency_reduction'], '.1f') + '%'} | "
            f"{_fmt(r['ratio'], '.2f')}{note}{run} |"
        )
    for i, run in enumerate(data.get("extra_runs", []), start=1):
        lines += ["", f"Rows marked run {i} come from a later run: `{run['command']}`, {run['date']}, load average at "
                      f"start {run['machine']['load_start']}, at end {run['machine']['load_end']}, {run['rounds']} "
                      f"rounds x {run['repeats']} calls, wall {run['wall_s']:.0f} s."]
    comp = [r for r in data["rows"] if r["compile_s"]]
    if comp:
        lines += ["", "Compile times (s, first call incl.): " + "; ".join(
            f"{r['pair']} b{r['batch']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["compile_s"].items())
            for r in comp) + "."]
    lines += ["", "## Discussion", "", data.get("discussion", "(see the JSON)"), ""]
    return "\n".join(lines)


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the rows of a later run ``new`` added (rows of the same (pair, mode, batch) replaced)."""
    keys = {(r["pair"], r["mode"], r["batch"]) for r in new["rows"]}
    kept = [r for r in old["rows"] if (r["pair"], r["mode"], r["batch"]) not in keys]
    runs = old.setdefault("extra_runs", [])
    runs.append({k: new[k] for k in ("command", "date", "machine", "rounds", "repeats", "wall_s")})
    for r in new["rows"]:
        r["run"] = len(runs)
    old["rows"] = sorted(kept + new["rows"], key=lambda r: (r["pair"] != "resnet56", r["mode"] != "eager", r["batch"]))
    return old


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="benchmarks.prune_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=["resnet56", "vgg16"], choices=sorted(PAIRS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    p.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile-budget", type=float, default=240.0,
                   help="seconds for all torch.compile calls together; later compiles are skipped")
    p.add_argument("--out", default="results/prune_latency.json")
    p.add_argument("--append", action="store_true",
                   help="merge the rows into an existing --out JSON (e.g. a second run for the compiled models)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the .md of an earlier run's JSON")
    p.add_argument("--merge", metavar="JSON", help="with --render: first merge a later run's JSON into it")
    p.add_argument("--discussion-file", help="with --render: text of the .md's Discussion section (kept in the JSON)")
    a = p.parse_args(argv)
    if a.render:
        path = Path(a.render)
        data = json.loads(path.read_text())
        if a.merge:
            data = merge(data, json.loads(Path(a.merge).read_text()))
            path.write_text(json.dumps(data, indent=1))
        if a.discussion_file:
            data["discussion"] = Path(a.discussion_file).read_text().strip()
            path.write_text(json.dumps(data, indent=1))
        path.with_suffix(".md").write_text(to_markdown(data))
        return data
    torch.set_num_threads(a.threads)
    load_start = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    t0 = time.perf_counter()
    rows = measure(a.pairs, a.batches, a.modes, a.rounds, a.repeats, a.compile_budget)
    data = {
        "command": "python -m benchmarks.prune_latency " + " ".join(shlex.quote(s) for s in
                                                                   (sys.argv[1:] if argv is None else argv)),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(), "load_start": load_start,
                    "load_end": ", ".join(f"{v:.2f}" for v in os.getloadavg())},
        "rounds": a.rounds, "repeats": a.repeats, "wall_s": time.perf_counter() - t0, "rows": rows,
    }
    out = Path(a.out)
    if a.append and out.exists():
        data = merge(json.loads(out.read_text()), data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(to_markdown(data))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return data


if __name__ == "__main__":
    main()
