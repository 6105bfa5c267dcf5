"""Measured CPU latency against MACs: Global (PDE) layers and the residual blocks they replace, side by side
(issue 7, item 6). ``benchmarks/sicnn_latency.py`` does the same for the SI blocks with the helpers here.

Every pair is a "replaced" module and its "replacement" at the same input, e.g. the 4 BasicBlocks of a
ResNet-32 stage that ResNet-32-Global drops against the one Global layer it adds, and whole networks. For each
module: conv/linear MACs per input (torch flop counter / 2, the ``all`` convention), the element-wise
multiply-adds that counter cannot see (the PDE iteration, SI interpolation), and the median eval-mode forward
latency on this machine's CPU with 1 torch thread at batch 1 and at a larger batch; the pairs are interleaved
over ``--rounds`` rounds and the median of the round medians is reported. The ratios are reported as measured,
including where fewer MACs do not mean less time (the element-wise PDE iteration, many small ops).

No GPU machine was lent to this task: only CPU latency is measured.

Usage::

    python -m benchmarks.global_latency --out results/global_latency.json   # also writes .md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.global_illustrative import machine


@dataclass
class Pair:
    """``baseline`` (what is replaced) and ``candidate`` (the replacement), both fed ``shape``-shaped inputs."""

    name: str
    baseline: Callable[[], nn.Module]
    candidate: Callable[[], nn.Module]
    shape: tuple[int, ...]  # one input, without the batch dimension
    batch: int  # the larger batch
    baseline_label: str = "baseline"
    candidate_label: str = "candidate"


def elementwise_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Element-wise multiply-adds of the Global layers (PDE) and SI blocks (interpolation, mask), per input."""
    from nets.global_layer import GlobalLayer, IllustrativeNet
    from nets.sicnn import SIBlock

    total = [0]

    def global_hook(m: GlobalLayer, inputs: Any, output: torch.Tensor) -> None:
        total[0] += m.pde_macs(*output.shape[-2:])

    def illustrative_hook(m: IllustrativeNet, inputs: Any, output: torch.Tensor) -> None:
        total[0] += m.pde_macs(*inputs[0].shape[-2:])

    def si_hook(m: SIBlock, inputs: Any, output: torch.Tensor) -> None:
        total[0] += m.elementwise_macs(*inputs[0].shape[-2:])

    handles = [m.register_forward_hook(global_hook) for m in model.modules() if isinstance(m, GlobalLayer)]
    handles += [m.register_forward_hook(si_hook) for m in model.modules() if isinstance(m, SIBlock)]
    handles += [m.register_forward_hook(illustrative_hook) for m in model.modules() if isinstance(m, IllustrativeNet)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] // x.shape[0]


def measure_pairs(pairs: list[Pair], rounds: int, repeats: int) -> list[dict[str, Any]]:
    from callbacks.efficiency_report import count_macs, count_params, measure_latency

    rows = []
    for pair in pairs:
        torch.manual_seed(0)
        mods = {"baseline": pair.baseline().eval(), "candidate": pair.candidate().eval()}
        x = torch.randn(1, *pair.shape)
        info = {k: {"label": pair.baseline_label if k == "baseline" else pair.candidate_label,
                    "params": count_params(m, "all"), "macs": count_macs(m, x, "all"),
                    "elementwise_macs": elementwise_macs(m, x)} for k, m in mods.items()}
        times: dict[tuple[str, int], list[float]] = {(k, b): [] for k in mods for b in (1, pair.batch)}
        for r in range(rounds):
            order = list(mods) if r % 2 == 0 else list(reversed(list(mods)))
            for k in order:
                for b in (1, pair.batch):
                    times[(k, b)].append(measure_latency(mods[k], x, b, repeats, warmup=2))
        for k in mods:
            info[k]["latency_b1_ms"] = 1e3 * statistics.median(times[(k, 1)])
            info[k][f"latency_b{pair.batch}_ms"] = 1e3 * statistics.median(times[(k, pair.batch)])
        b, c = info["baseline"], info["candidate"]
        rows.append({
            "name": pair.name, "input": list(pair.shape), "batch": pair.batch, "baseline": b, "candidate": c,
            "mac_ratio": c["macs"] / b["macs"],
            "mac_ratio_with_elementwise": (c["macs"] + c["elementwise_macs"]) / (b["macs"] + b["elementwise_macs"]),
            "latency_ratio_b1": c["latency_b1_ms"] / b["latency_b1_ms"],
            f"latency_ratio_b{pair.batch}": c[f"latency_b{pair.batch}_ms"] / b[f"latency_b{pair.batch}_ms"],
        })
        print(f"{pair.name}: MACs x{rows[-1]['mac_ratio']:.2f}, latency b1 x{rows[-1]['latency_ratio_b1']:.2f}, "
              f"b{pair.batch} x{rows[-1][f'latency_ratio_b{pair.batch}']:.2f}", flush=True)
    return rows


def to_markdown(data: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"Command: `{data['command']}`", "", f"Date: {data['date']}", "",
             f"Machine: {data['machine']} (no GPU machine was lent to this task: CPU only)", "",
             "MACs: conv + linear multiply-accumulates per input (torch flop counter / 2, `all`); element-wise: the "
             "PDE iteration / SI interpolation and mask, which that counter does not see. Latency: median eval "
             "forward, 1 thread, milliseconds per call at the given batch. Ratios: replacement / replaced.", "",
             "| pair | input | replaced | replacement | params | MACs | + element-wise | MAC ratio (conv / incl. "
             "element-wise) | latency b1 (ms) | ratio b1 | latency bN (ms) | ratio bN |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        b, c, n = r["baseline"], r["candidate"], r["batch"]
        lines.append(
            f"| {r['name']} | {'x'.join(map(str, r['input']))} | {b['label']} | {c['label']} | "
            f"{b['params']:,} -> {c['params']:,} | {b['macs'] / 1e6:.3g}M -> {c['macs'] / 1e6:.3g}M | "
            f"{b['elementwise_macs'] / 1e6:.3g}M -> {c['elementwise_macs'] / 1e6:.3g}M | "
            f"{r['mac_ratio']:.2f} / {r['mac_ratio_with_elementwise']:.2f} | "
            f"{b['latency_b1_ms']:.3g} -> {c['latency_b1_ms']:.3g} | {r['latency_ratio_b1']:.2f} | "
            f"b{n}: {b[f'latency_b{n}_ms']:.3g} -> {c[f'latency_b{n}_ms']:.3g} | {r[f'latency_ratio_b{n}']:.2f} |")
    return "\n".join(lines) + "\n"


def global_pairs(quick: bool = False) -> list[Pair]:
    from nets import create_net
    from nets.global_layer import GlobalLayer
    from nets.resnet_cifar import BasicBlock

    pairs = []
    for c, res in ((16, 32), (32, 16), (64, 8)):
        pairs.append(Pair(f"ResNet-32 stage {c}@{res}",
                          lambda c=c: nn.Sequential(*[BasicBlock(c, c) for _ in range(4)]),
                          lambda c=c: GlobalLayer(c, K=1, coef_bn_eps="channels"), (c, res, res), 32,
                          "4 BasicBlocks", "Global layer K=1"))
    for k in (1, 5):
        pairs.append(Pair(f"one BasicBlock vs Global K={k}, 64@8", lambda: BasicBlock(64, 64),
                          lambda k=k: GlobalLayer(64, K=k), (64, 8, 8), 32, "1 BasicBlock", f"Global layer K={k}"))
    pairs.append(Pair("ResNet-32 vs ResNet-32-Global (CIFAR)", lambda: create_net("resnet32", 10, shortcut="B"),
                      lambda: create_net("resnet32_global", 10), (3, 32, 32), 128, "resnet32", "resnet32_global"))
    if not quick:
        for base, glob in (("mobilenet_v2", "global_mobilenet_v2"), ("mobilenet_v3_large", "global_mobilenet_v3_large"),
                           ("efficientnet_b0", "global_efficientnet_b0")):
            pairs.append(Pair(f"{base} vs {glob} (ImageNet)", lambda b=base: create_net(f"torchvision.{b}", 1000),
                              lambda g=glob: create_net(g, 1000), (3, 224, 224), 8, base, glob))
    return pairs


def run(argv: list[str] | None, prog: str, title: str, default_out: str,
        make_pairs: Callable[[bool], list[Pair]]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=title)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="skip the ImageNet-size networks")
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd = f"python -m {prog} " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    data = {"command": cmd.strip(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(), "rounds": args.rounds, "repeats": args.repeats,
            "rows": measure_pairs(make_pairs(args.quick), args.rounds, args.repeats)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(to_markdown(data, title))
    print(to_markdown(data, title))
    return data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(argv, "benchmarks.global_latency", "Global layer: CPU latency vs MACs", "results/global_latency.json",
               global_pairs)


if __name__ == "__main__":
    main()
