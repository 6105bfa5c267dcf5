"""Deployed latency against MACs: the pruned nets of the pruning paper, the Global nets and the SI nets against
their baselines, in onnxruntime on CPU beside eager PyTorch. Replaces prune_latency.py, global_latency.py and
sicnn_latency.py (their net lists are kept here).

For every pair (a baseline and a cheaper candidate at the same input) and every batch size and thread count:

* the MAC gain ``macs_base / macs_cand`` (conv + linear MACs, the torch flop counter / 2, per input; the
  element-wise work of the PDE iteration and the SI interpolation, which that counter cannot see, is listed
  beside it),
* the latency gain ``t_base / t_cand`` in onnxruntime (CPU provider, all graph optimizations, ``threads``
  intra-op threads, one inter-op thread) and in eager PyTorch (``torch.set_num_threads(threads)``, eval,
  no_grad),
* their ratio ``(t_base / t_cand) / (macs_base / macs_cand)``: 1.0 when every saved MAC is saved time.

Method: both nets are exported once (ONNX with a dynamic batch). A *round* times the baseline and the candidate
one after the other (the order alternates between rounds), each as the median of ``--repeats`` calls after one
warm-up call, and gives one ratio. Rounds run until the 95% interval of the median ratio (distribution-free,
from the binomial order statistics of the rounds' ratios) is narrower than +-``--half-width`` (default 0.15),
or ``--max-rounds`` is reached; then the table says that the machine's noise prevented it.

Where the time goes: for every pair the candidate's and the baseline's onnxruntime profile (batch 1, 1 thread)
is summed by operator type; the report lists the largest ones and the share of time spent in operators that
do no MACs (element-wise, pooling, reshapes), which a fused or cheaper operator would remove, and the latency
gain of the MAC-bearing operators alone (Conv, Gemm, MatMul), which says whether the narrower layers themselves
run proportionally faster.

Usage (the full run takes hours on a shared 2-core machine; run it on an otherwise idle one)::

    python -m benchmarks.deploy_latency --out results/deploy_latency.json    # also writes the .md
    python -m benchmarks.deploy_latency --pairs vgg16_a resnet56_b --max-rounds 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness import command_line, load_average, machine_info, write_report

MAC_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose", "NhwcConv",
                     "QLinearConv", "MatMulInteger", "ConvInteger"})


# ---------------------------------------------------------------------------------------------- statistics
def gain_ratio(t_base: float, t_cand: float, macs_base: float, macs_cand: float) -> float:
    """(latency gain) / (MAC gain) = (t_base / t_cand) / (macs_base / macs_cand)."""
    return (t_base / t_cand) / (macs_base / macs_cand)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(median, low, high, coverage): a distribution-free interval for the median from order statistics.

    The interval is ``[x_(k), x_(n+1-k)]`` (sorted values, 1-based) with the largest k whose coverage
    ``1 - 2 P(Binomial(n, 1/2) < k)`` is at least ``level``; with too few values for that level (n < 6 at 95%)
    it is the whole range and ``coverage`` (below ``level``) says how much it covers.
    """
    if not values:
        raise ValueError("median_interval: no values")
    xs = sorted(values)
    n = len(xs)
    med = statistics.median(xs)

    def coverage(k: int) -> float:
        tail = sum(math.comb(n, i) for i in range(k)) / 2**n
        return 1 - 2 * tail

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return med, xs[k - 1], xs[n - k], coverage(k)


# ---------------------------------------------------------------------------------------------- the pairs
@dataclass
class Pair:
    """``baseline`` and its cheaper ``candidate`` (factories), both fed ``shape``-shaped inputs (no batch dim)."""

    key: str
    name: str
    baseline: Callable[[], nn.Module]
    candidate: Callable[[], nn.Module]
    shape: tuple[int, ...]
    baseline_label: str
    candidate_label: str
    group: str


def _pruned_resnet34(preset: str) -> nn.Module:
    from callbacks.l1_filter_pruning import PRESETS, prune_model
    from nets import create_net

    torch.manual_seed(0)
    model = create_net("torchvision.resnet34", 1000).eval()
    p = PRESETS[preset]
    prune_model(model, p["ratios"], torch.zeros(1, 3, 224, 224), p["skip"], coupled=bool(p.get("coupled")),
                verify=False)
    return model.eval()


def all_pairs() -> dict[str, Pair]:
    from nets import create_net
    from nets.resnet_cifar import RESNET56_A_BLOCK_WIDTHS, RESNET56_B_BLOCK_WIDTHS
    from nets.vgg_cifar import VGG16_A_CFG

    pairs = [
        Pair("vgg16_a", "VGG-16 vs VGG-16-A (CIFAR-10, 32x32)", lambda: create_net("vgg16", 10),
             lambda: create_net("vgg16", 10, cfg=VGG16_A_CFG), (3, 32, 32), "VGG-16", "VGG-16-A", "pruning"),
        Pair("resnet56_a", "ResNet-56 vs ResNet-56-A (32x32)", lambda: create_net("resnet56", 10),
             lambda: create_net("resnet56", 10, block_widths=RESNET56_A_BLOCK_WIDTHS), (3, 32, 32), "ResNet-56",
             "ResNet-56-A", "pruning"),
        Pair("resnet56_b", "ResNet-56 vs ResNet-56-B (32x32)", lambda: create_net("resnet56", 10),
             lambda: create_net("resnet56", 10, block_widths=RESNET56_B_BLOCK_WIDTHS), (3, 32, 32), "ResNet-56",
             "ResNet-56-B", "pruning"),
    ]
    for v in ("a", "b", "c"):
        pairs.append(Pair(f"resnet34_{v}", f"ResNet-34 vs ResNet-34-{v.upper()} (ImageNet, 224x224)",
                          lambda: create_net("torchvision.resnet34", 1000),
                          lambda v=v: _pruned_resnet34(f"resnet34_{v}"), (3, 224, 224), "ResNet-34",
                          f"ResNet-34-{v.upper()}", "pruning"))
    pairs.append(Pair("resnet32_global", "ResNet-32 vs ResNet-32-Global (CIFAR)",
                      lambda: create_net("resnet32", 10, shortcut="B"), lambda: create_net("resnet32_global", 10),
                      (3, 32, 32), "resnet32", "resnet32_global", "global"))
    for base, glob in (("mobilenet_v2", "global_mobilenet_v2"), ("mobilenet_v3_large", "global_mobilenet_v3_large"),
                       ("efficientnet_b0", "global_efficientnet_b0")):
        pairs.append(Pair(glob, f"{base} vs {glob} (ImageNet)", lambda b=base: create_net(f"torchvision.{b}", 1000),
                          lambda g=glob: create_net(g, 1000), (3, 224, 224), base, glob, "global"))
    pairs.append(Pair("si_irnet", "irnet vs si_irnet (glyphs, 34 classes)",
                      lambda: create_net("irnet", 34, in_channels=1), lambda: create_net("si_irnet", 34, in_channels=1),
                      (1, 32, 32), "irnet", "si_irnet", "si"))
    for base, si in (("mobilenet_v3_large", "si_mobilenet_v3_large"), ("efficientnet_b0", "si_efficientnet_b0")):
        pairs.append(Pair(si, f"{base} vs {si} (ImageNet)", lambda b=base: create_net(f"torchvision.{b}", 1000),
                          lambda s=si: create_net(s, 1000), (3, 224, 224), base, si, "si"))
    # a tiny pair for smoke tests (not part of the default run)
    pairs.append(Pair("tiny", "small_cnn vs a half-width small_cnn (tiny, tests only)",
                      lambda: create_net("small_cnn", 4, in_channels=1),
                      lambda: create_net("small_cnn", 4, in_channels=1, widths=(16, 32)), (1, 8, 8), "small_cnn",
                      "small_cnn half", "tiny"))
    return {p.key: p for p in pairs}


DEFAULT_PAIRS = ["vgg16_a", "resnet56_a", "resnet56_b", "resnet34_a", "resnet34_b", "resnet34_c", "resnet32_global",
                 "global_mobilenet_v2", "global_mobilenet_v3_large", "global_efficientnet_b0", "si_irnet",
                 "si_mobilenet_v3_large", "si_efficientnet_b0"]


# ---------------------------------------------------------------------------------------------- measuring
def machine() -> dict[str, Any]:
    """This machine, detected (``benchmarks.harness.machine_info``), with what this benchmark adds: the logical CPUs
    this process may use, the memory and the onnxruntime version."""
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import onnxruntime

    return {**machine_info(), "usable_cpus": usable, "memory_bytes": mem, "onnxruntime": onnxruntime.__version__}


def elementwise_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Element-wise multiply-adds of Global layers (PDE iteration) and SI blocks (interpolation, mask), per input."""
    from nets.global_layer import GlobalLayer, IllustrativeNet
    from nets.sicnn import SIBlock

    total = [0]

    def add(n: int) -> None:
        total[0] += n

    handles = []
    for m in model.modules():
        if isinstance(m, GlobalLayer):
            handles.append(m.register_forward_hook(lambda m, i, o: add(m.pde_macs(*o.shape[-2:]))))
        elif isinstance(m, SIBlock):
            handles.append(m.register_forward_hook(lambda m, i, o: add(m.elementwise_macs(*i[0].shape[-2:]))))
        elif isinstance(m, IllustrativeNet):
            handles.append(m.register_forward_hook(lambda m, i, o: add(m.pde_macs(*i[0].shape[-2:]))))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] // x.shape[0]


def _median_call(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _profile_by_op(path: str, x: torch.Tensor, runs: int = 5) -> dict[str, float]:
    """Microseconds per call by operator type in onnxruntime's profile of the optimized graph (1 thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + float(e.get("dur", 0)) / (runs + 1)
    return by_op


LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                        "Concat", "Split", "Slice", "Gather", "Expand", "Shape", "Identity"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
                      "Resize", "Upsample"})
REMEDIES = {
    "element-wise": "a fused operator (one kernel for the element-wise chain, or folded into the conv's epilogue)",
    "layout": "keeping onnxruntime's blocked NCHWc layout across layers (channel counts that are multiples of 8 "
              "avoid the reorders) or fewer reshapes between layers",
    "pooling/resampling": "fusing the pooling or interpolation into the neighbouring conv (or a cheaper "
                          "resampling operator)",
}


def _category(op: str) -> str:
    if op in LAYOUT_OPS:
        return "layout"
    if op in POOL_OPS:
        return "pooling/resampling"
    return "element-wise"


def _graph_notes(base: dict[str, float], cand: dict[str, float], mac_gain: float) -> dict[str, Any]:
    """What the onnxruntime profiles say about the gap between the latency gain and the MAC gain."""
    def non_mac(prof: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for op, us in prof.items():
            if op not in MAC_OPS:
                out[_category(op)] = out.get(_category(op), 0.0) + us
        return out

    total_c, total_b = sum(cand.values()) or 1.0, sum(base.values()) or 1.0
    base_mac = sum(v for k, v in base.items() if k in MAC_OPS)
    cand_mac = sum(v for k, v in cand.items() if k in MAC_OPS)
    top = sorted(cand.items(), key=lambda kv: -kv[1])[:5]
    by_category = non_mac(cand)
    non_mac_share = sum(by_category.values()) / total_c
    mac_op_gain = base_mac / cand_mac if cand_mac else None
    notes = []
    if mac_op_gain is not None and mac_op_gain / mac_gain < 0.8:
        notes.append(f"the MAC-bearing operators alone gain x{mac_op_gain:.2f} for x{mac_gain:.2f} fewer MACs: the "
                     "candidate's narrower or depthwise layers run at a lower MAC rate (convolution kernels are "
                     "tuned for wide, aligned channel counts)")
    for category, us in sorted(by_category.items(), key=lambda kv: -kv[1]):
        if us / total_c > 0.1:
            ops = ", ".join(k for k, _ in sorted(cand.items(), key=lambda kv: -kv[1])
                            if k not in MAC_OPS and _category(k) == category)[:80]
            notes.append(f"{us / total_c:.0%} of the candidate's time is {category} work without MACs ({ops}); "
                         f"{REMEDIES[category]} would remove most of it")
    if mac_op_gain is not None and mac_op_gain / mac_gain > 1.2:
        notes.append(f"the MAC-bearing operators gain more than the MACs (x{mac_op_gain:.2f} for x{mac_gain:.2f}): "
                     "the candidate's narrower layers run at a higher MAC rate (their weights and activations fit "
                     "the caches better)")
    if not notes:
        notes.append("the time follows the MACs: the MAC-bearing operators dominate and gain in proportion")
    return {"top_ops_candidate_us": {k: round(v, 1) for k, v in top},
            "non_mac_share_candidate": non_mac_share,
            "non_mac_share_baseline": 1 - base_mac / total_b,
            "non_mac_by_category_candidate": {k: v / total_c for k, v in by_category.items()},
            "mac_op_latency_gain": mac_op_gain, "notes": notes}


def measure_pair(pair: Pair, batches: list[int], threads: list[int], repeats: int, min_rounds: int,
                 max_rounds: int, half_width: float, workdir: str, profile: bool = True) -> dict[str, Any]:
    from callbacks.efficiency_report import count_macs, count_params
    from nets.export import export_module, onnxruntime_session

    torch.manual_seed(0)
    mods = {"baseline": pair.baseline().eval(), "candidate": pair.candidate().eval()}
    x1 = torch.randn(1, *pair.shape)
    info: dict[str, Any] = {}
    paths = {}
    for k, m in mods.items():
        info[k] = {"label": pair.baseline_label if k == "baseline" else pair.candidate_label,
                   "params": count_params(m, "all"), "macs": count_macs(m, x1, "all"),
                   "elementwise_macs": elementwise_macs(m, x1)}
        summary = export_module(m, Path(workdir) / f"{pair.key}_{k}.onnx", "onnx", example_input=x1, overwrite=True)
        paths[k] = summary["path"]
        info[k]["onnx_bytes"] = summary["stored_bytes"]
    mac_gain = info["baseline"]["macs"] / info["candidate"]["macs"]
    cells = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        sessions = {k: onnxruntime_session(p, threads=n_threads) for k, p in paths.items()}
        for b in batches:
            x = torch.randn(b, *pair.shape)
            feeds = {k: {s.get_inputs()[0].name: x.numpy()} for k, s in sessions.items()}
            fns = {
                ("ort", k): (lambda s=sessions[k], f=feeds[k]: s.run(None, f)) for k in mods
            }
            with torch.no_grad():
                fns.update({("eager", k): (lambda m=mods[k]: m(x)) for k in mods})
                times: dict[tuple[str, str], list[float]] = {key: [] for key in fns}
                ratios: dict[str, list[float]] = {"ort": [], "eager": []}
                rounds, converged = 0, False
                while rounds < max_rounds:
                    order = ["baseline", "candidate"] if rounds % 2 == 0 else ["candidate", "baseline"]
                    for runtime in ("ort", "eager"):
                        for k in order:
                            times[(runtime, k)].append(_median_call(fns[(runtime, k)], repeats))
                        ratios[runtime].append(gain_ratio(times[(runtime, "baseline")][-1],
                                                          times[(runtime, "candidate")][-1],
                                                          info["baseline"]["macs"], info["candidate"]["macs"]))
                    rounds += 1
                    if rounds >= min_rounds:
                        med, lo, hi, cov = median_interval(ratios["ort"])
                        if cov >= 0.95 and max(med - lo, hi - med) < half_width:
                            converged = True
                            break
            cell: dict[str, Any] = {"batch": b, "threads": n_threads, "rounds": rounds, "converged": converged}
            for runtime in ("ort", "eager"):
                med, lo, hi, cov = median_interval(ratios[runtime])
                tb = statistics.median(times[(runtime, "baseline")])
                tc = statistics.median(times[(runtime, "candidate")])
                cell[runtime] = {"baseline_ms": 1e3 * tb, "candidate_ms": 1e3 * tc, "latency_gain": tb / tc,
                                 "ratio": med, "ratio_low": lo, "ratio_high": hi, "coverage": cov,
                                 "ratios": ratios[runtime]}
            cells.append(cell)
            print(f"{pair.key} b{b} t{n_threads}: MAC gain x{mac_gain:.2f}, onnxruntime latency gain "
                  f"x{cell['ort']['latency_gain']:.2f}, ratio {cell['ort']['ratio']:.2f} "
                  f"[{cell['ort']['ratio_low']:.2f}, {cell['ort']['ratio_high']:.2f}] after {rounds} rounds"
                  f"{'' if converged else ' (not converged)'}", flush=True)
    row = {"key": pair.key, "name": pair.name, "group": pair.group, "input": list(pair.shape),
           "baseline": info["baseline"], "candidate": info["candidate"], "mac_gain": mac_gain,
           "mac_gain_with_elementwise": (info["baseline"]["macs"] + info["baseline"]["elementwise_macs"])
           / (info["candidate"]["macs"] + info["candidate"]["elementwise_macs"]), "cells": cells}
    if profile:
        torch.set_num_threads(1)
        prof = {k: _profile_by_op(paths[k], x1) for k in mods}
        row["graph"] = _graph_notes(prof["baseline"], prof["candidate"], mac_gain)
    return row


# ---------------------------------------------------------------------------------------------- report
def to_markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Deployed latency vs MACs (onnxruntime CPU and eager PyTorch)", "",
        f"Runtime: {m['usable_cpus']} of {m['logical_cpus']} logical CPUs usable by the process, "
        f"{(m['memory_bytes'] or 0) / 2**30:.1f} GiB memory, onnxruntime {m['onnxruntime']} (the machine is "
        f"described at the end). Load average (1, 5, 15 min) at start {data['load_start']}, at end "
        f"{data['load_end']}.", "",
        "MAC gain: baseline MACs / candidate MACs (conv + linear, per input). Latency gain: baseline time / "
        "candidate time. Ratio: latency gain / MAC gain (1.0: every saved MAC is saved time), the median over "
        "alternating rounds with its 95% interval; rounds run until the interval is within "
        f"+-{data['settings']['half_width']} or {data['settings']['max_rounds']} rounds (marked *: not reached, "
        "the machine's noise prevented it).", "",
        "| pair | MAC gain | batch | threads | ORT base (ms) | ORT cand (ms) | ORT latency gain | ORT ratio [95%] | "
        "eager base (ms) | eager cand (ms) | eager ratio | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        for c in r["cells"]:
            o, e = c["ort"], c["eager"]
            star = "" if c["converged"] else "*"
            lines.append(
                f"| {r['name']} | x{r['mac_gain']:.2f} | {c['batch']} | {c['threads']} | {o['baseline_ms']:.3g} | "
                f"{o['candidate_ms']:.3g} | x{o['latency_gain']:.2f} | {o['ratio']:.2f} [{o['ratio_low']:.2f}, "
                f"{o['ratio_high']:.2f}]{star} | {e['baseline_ms']:.3g} | {e['candidate_ms']:.3g} | "
                f"{e['ratio']:.2f} | {c['rounds']} |")
    lines += ["", "## Where the time goes (onnxruntime profile of the optimized graph, batch 1, 1 thread)", ""]
    for r in data["rows"]:
        g = r.get("graph")
        if not g:
            continue
        ew = r["candidate"]["elementwise_macs"]
        top = ", ".join(f"{k} {v:.0f} us" for k, v in g["top_ops_candidate_us"].items())
        gain = g["mac_op_latency_gain"]
        lines.append(
            f"- **{r['name']}**: candidate's largest operators {top}; time without MACs "
            f"{g['non_mac_share_candidate']:.0%} (baseline {g['non_mac_share_baseline']:.0%}); MAC-bearing "
            f"operators' latency gain {'-' if gain is None else f'x{gain:.2f}'} for x{r['mac_gain']:.2f} MACs"
            f"{f'; element-wise MACs the counter misses: {ew / 1e6:.3g}M' if ew else ''}. "
            + " ".join(n[0].upper() + n[1:] + "." for n in g["notes"]))
    vgg = [c for r in data["rows"] if r["key"] == "vgg16_a" for c in r["cells"]]
    if vgg:
        worst = min(c["ort"]["ratio"] for c in vgg)
        lines += ["", f"Goal: ratio >= 0.8 for VGG-16-A in onnxruntime: lowest cell {worst:.2f} "
                      f"({'met' if worst >= 0.8 else 'not met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy_latency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS,
                        help=f"pair keys (default: {' '.join(DEFAULT_PAIRS)})")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (median taken)")
    parser.add_argument("--min-rounds", type=int, default=6, help="rounds before the stopping rule is checked")
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--half-width", type=float, default=0.15, help="stop when the 95%% interval is within +-this")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator onnxruntime profile")
    parser.add_argument("--out", default="results/deploy_latency.json")
    args = parser.parse_args(argv)
    pairs = all_pairs()
    unknown = [k for k in args.pairs if k not in pairs]
    if unknown:
        parser.error(f"unknown pair(s) {unknown}; choose from {', '.join(pairs)}")
    if args.min_rounds < 1 or args.max_rounds < args.min_rounds or args.repeats < 1:
        parser.error("need 1 <= --min-rounds <= --max-rounds and --repeats >= 1")
    data: dict[str, Any] = {
        "command": command_line("benchmarks.deploy_latency", argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
        "settings": {"batches": args.batches, "threads": args.threads, "repeats": args.repeats,
                     "min_rounds": args.min_rounds, "max_rounds": args.max_rounds, "half_width": args.half_width},
        "rows": [],
    }
    data["load_start"] = data["machine"]["loadavg_at_start"]
    with tempfile.TemporaryDirectory() as workdir:
        for key in args.pairs:
            data["rows"].append(measure_pair(pairs[key], args.batches, args.threads, args.repeats, args.min_rounds,
                                             args.max_rounds, args.half_width, workdir, not args.no_profile))
    data["load_end"] = load_average()
    out = Path(args.out)
    md = to_markdown(data)
    write_report(out.stem, data, md, out.parent)
    print(md)
    return data


if __name__ == "__main__":
    main()
