"""Parameters and MACs of every Global-layer and SI-CNN recipe (and their baselines), as ``python main.py report
--config <recipe> --convention all`` prints them, against the published numbers (docs/global_layer.md and docs/sicnn.md#what-is-public).

MACs: per input at the recipe's resolution (32x32 CIFAR, 224x224 ImageNet), batch 1, torch flop counter / 2
(conv and linear layers, 1x1 projections included). Not counted: the Global layers' element-wise PDE iteration
and the SI blocks' interpolation/mask (the paper's ``thop`` does not count the PDE either); the element-wise
column gives them separately. Parameters: all of them.

The second table (``imagenet_conventions``) asks why the ImageNet Global nets, rebuilt block by block from the
released architecture strings (``imagenet_global_models.py``), count more than the poster (docs/global_layer.md#published-numbers): it
recounts each net with the classifier and the 1x1 head dropped, gives what ``thop`` would report for the released
timm 0.5.4 model (timm's classifier is its own ``Linear`` subclass, and ``thop.profile`` matches module types
exactly, so it counts that layer as zero parameters and zero MACs; conv MACs are a lower bound because thop adds
BatchNorm/pool ops), and the input side (160 to 224) whose conv + linear MACs come closest to the published MACs.

Usage::

    python -m benchmarks.global_counts --out results/global_counts.json   # also writes .md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.harness import command_line, machine_info, write_report

# recipe -> (label, published params, published MACs, source)
PUBLISHED: dict[str, tuple[str, float | None, float | None, str]] = {
    "baseline_resnet32_cifar10": ("ResNet-32 (CIFAR-10)", 460e3, 70e6, "runner 460K/70M; poster 473K/70M (docs/global_layer.md#architectures-and-settings and docs/global_layer.md#published-numbers)"),
    "global_resnet32_cifar10": ("ResNet-32-Global (CIFAR-10)", 170e3, 15e6,
                                "runner 170K/15M; poster 168K/15M, timing table 162K (docs/global_layer.md#architectures-and-settings and docs/global_layer.md#published-numbers)"),
    "baseline_resnet32_cifar100": ("ResNet-32 (CIFAR-100)", 473e3, 70e6, "poster 473K/70M (docs/global_layer.md#published-numbers)"),
    "global_resnet32_cifar100": ("ResNet-32-Global (CIFAR-100)", 168e3, 15e6, "poster 168K/15M (docs/global_layer.md#published-numbers)"),
    "baseline_mobilenet_v2_imagenet": ("MobileNetV2", 3.4e6, 300e6, "poster (docs/global_layer.md#published-numbers)"),
    "global_mobilenet_v2_imagenet": ("Global MobileNetV2", 1.6e6, 193e6, "poster (docs/global_layer.md#published-numbers)"),
    "baseline_mobilenet_v3_large_imagenet": ("MobileNetV3-Large", 5.4e6, 219e6, "poster (docs/global_layer.md#published-numbers)"),
    "global_mobilenet_v3_large_imagenet": ("Global MobileNetV3-Large", 3.0e6, 156e6, "poster (docs/global_layer.md#published-numbers)"),
    "sicnn_imagenet": ("SI-MobileNetV3-Large (project design)", None, None,
                       "none published; claim: up to ~40% fewer MACs than MobileNetV3 (docs/sicnn.md#what-is-public)"),
    "baseline_efficientnet_b0_imagenet": ("EfficientNet-B0", 5.3e6, 390e6, "poster (docs/global_layer.md#published-numbers)"),
    "global_efficientnet_b0_imagenet": ("Global EfficientNet-B0", 2.4e6, 244e6, "poster (docs/global_layer.md#published-numbers)"),
    "sicnn_efficientnet_b0_imagenet": ("SI-EfficientNet-B0 (project design)", None, None,
                                       "none published; claim: up to ~40% fewer MACs than EfficientNet-B0 (docs/sicnn.md#what-is-public)"),
    "global_illustrative_glyphs": ("illustrative model, PDE backbone", 524, None,
                                   "train_mnist_illustrative_example.py (docs/global_layer.md#published-numbers)"),
    "sicnn_irnet_glyphs": ("si_irnet (glyphs, 34 classes; project design)", None, None, "none"),
}
BASELINE_OF = {
    "global_resnet32_cifar10": "baseline_resnet32_cifar10", "global_resnet32_cifar100": "baseline_resnet32_cifar100",
    "global_mobilenet_v2_imagenet": "baseline_mobilenet_v2_imagenet",
    "global_mobilenet_v3_large_imagenet": "baseline_mobilenet_v3_large_imagenet",
    "sicnn_imagenet": "baseline_mobilenet_v3_large_imagenet",
    "global_efficientnet_b0_imagenet": "baseline_efficientnet_b0_imagenet",
    "sicnn_efficientnet_b0_imagenet": "baseline_efficientnet_b0_imagenet",
}


def report(recipe: str, tmp: Path) -> dict[str, Any]:
    """The numbers ``python main.py report --config recipes/<recipe>.yaml --convention all`` prints, plus the
    element-wise multiply-adds of the model's Global/SI layers."""
    from benchmarks.deploy_latency import elementwise_macs
    from main import cli_main

    out = tmp / f"{recipe}.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        cli = cli_main(["report", "--config", f"recipes/{recipe}.yaml", "--json", str(out), "--convention", "all"])
    model, result = cli.model, json.loads(out.read_text())
    return {"params": result["params"], "macs": result["macs"],
            "elementwise_macs": elementwise_macs(model.net, model.example_input_array),
            "input": list(model.example_input_array.shape[1:])}


# net -> (published params, published MACs, final classifier, the 1x1 head (the released ``conv_head``);
# "features.last" = the last entry of ``model.features``)
IMAGENET_GLOBAL: dict[str, tuple[float, float, str, str]] = {
    "global_mobilenet_v2": (1.6e6, 193e6, "classifier.1", "features.last"),
    "global_mobilenet_v3_large": (3.0e6, 156e6, "classifier.3", "classifier.0"),
    "global_efficientnet_b0": (2.4e6, 244e6, "classifier.1", "features.last"),
}


@torch.no_grad()
def _macs_by_module(model: nn.Module, side: int) -> dict[str, int]:
    """Conv + linear MACs of every ``nn.Conv2d`` / ``nn.Linear`` (by name) for one ``side`` x ``side`` input."""
    out: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def count(module: nn.Module, inputs: Any, y: Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                out[name] = out.get(name, 0) + y.numel() * (module.in_channels // module.groups) * k
            else:
                out[name] = out.get(name, 0) + y.numel() * module.in_features
        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        model.eval()(torch.zeros(1, 3, side, side, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return out


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imagenet_conventions(side: int = 224) -> dict[str, Any]:
    """Counts of the ImageNet Global nets under the candidate conventions (module docstring), batch 1."""
    from nets import create_net

    rows = {}
    for net, (p_pub, m_pub, classifier, head) in IMAGENET_GLOBAL.items():
        with torch.device("meta"):  # shapes only
            model = create_net(net, num_classes=1000)
        head = head.replace("last", str(len(model.features) - 1))
        params = {n: p.numel() for n, p in model.named_parameters()}
        macs = _macs_by_module(model, side)

        def count(drop: tuple[str, ...]) -> tuple[int, int]:
            return (sum(v for n, v in params.items() if not _under(n, drop)),
                    sum(v for n, v in macs.items() if not _under(n, drop)))

        full, no_cls, no_head = count(()), count((classifier,)), count((classifier, head))
        # the MACs at every input side from 160 to 224 (odd sides give the maps of the next even side)
        by_side = {k: sum(_macs_by_module(model, k).values()) for k in range(160, side + 1, 2)}
        closest = min(by_side, key=lambda k: abs(by_side[k] - m_pub))
        rows[net] = {"published": [p_pub, m_pub], "all": list(full), "no_classifier": list(no_cls),
                     "no_classifier_no_head": list(no_head), "thop_released": [no_cls[0], no_cls[1]],
                     "closest_side": [closest, by_side[closest]], "classifier": classifier, "head": head}
    return rows


def conventions_markdown(rows: dict[str, Any]) -> str:
    def pm(v: list[float]) -> str:
        return f"{v[0] / 1e6:.2f}M / {v[1] / 1e6:.1f}M"

    lines = ["## ImageNet Global nets: which counting convention could give the published numbers?", "",
             "Params / MACs (conv + linear, batch 1, 224x224) of the nets rebuilt from the released architecture "
             "strings, recounted under each candidate convention. `thop` on the released timm 0.5.4 model skips "
             "the classifier (timm's `Linear` subclass has no thop rule: zero params, zero MACs) and adds BatchNorm/"
             "pool ops, so its MACs are at least the value shown. Last column: the input side (160 to 224) whose "
             "conv + linear MACs come closest to the published MACs, and those MACs.", "",
             "| net | published | all layers | without classifier (= thop params) | without classifier and 1x1 head "
             "| closest input side |", "|---|---|---|---|---|---|"]
    for net, r in rows.items():
        lines.append(f"| {net} | {pm(r['published'])} | {pm(r['all'])} | {pm(r['no_classifier'])} "
                     f"(thop MACs >= {r['thop_released'][1] / 1e6:.1f}M) | {pm(r['no_classifier_no_head'])} | "
                     f"{r['closest_side'][0]} ({r['closest_side'][1] / 1e6:.1f}M) |")
    above = [n for n, r in rows.items()
             if min(r["no_classifier_no_head"][1], r["thop_released"][1]) > r["published"][1]]
    between = [n for n, r in rows.items() if r["no_classifier"][0] < r["published"][0] < r["all"][0]]
    off = {n: abs(r["closest_side"][1] / r["published"][1] - 1) for n, r in rows.items()}
    lines += ["", f"At 224x224, every convention leaves more MACs than published for {', '.join(above) or 'no net'} "
              "(and thop only adds ops to the conv count); the published parameters lie strictly between the counts "
              f"with and without the classifier for {', '.join(between) or 'no net'}; over input sides 160-224 the "
              "closest conv + linear MACs still miss the published MACs by "
              + ", ".join(f"{100 * v:.1f}% ({n})" for n, v in off.items())
              + " (the count jumps over the published value between two even sides, at a different side per net). "
              "A configuration that matches all three published rows is not among these conventions."]
    return "\n".join(lines) + "\n"


def to_markdown(data: dict[str, Any]) -> str:
    def h(v: float | None, unit: str = "") -> str:
        if v is None:
            return "-"
        return f"{v / 1e6:.3g}M" if v >= 1e6 else f"{v / 1e3:.3g}K" if v >= 1e3 else f"{v:g}"

    lines = ["# Global layer and SI-CNN: parameters and MACs against the published numbers", "",
             "Each row = `python main.py report --config recipes/<recipe>.yaml --convention all` (the command that "
             "ran them all is given at the end).", "",
             "MACs per input, batch 1, torch flop counter / 2 (conv + linear, 1x1 projections included); the "
             "element-wise PDE iteration / SI interpolation is not in it (nor in the paper's thop) and is listed "
             "separately.", "",
             "| recipe | model | params (ours) | params (published) | MACs (ours) | MACs (published) | "
             "+ element-wise | vs baseline (MACs) | published from |", "|---|---|---|---|---|---|---|---|---|"]
    rows = data["rows"]
    for name, r in rows.items():
        label, p_pub, m_pub, src = PUBLISHED[name]
        base = BASELINE_OF.get(name)
        vs = f"{100 * (r['macs'] / rows[base]['macs'] - 1):+.1f}%" if base in rows else "-"
        lines.append(f"| {name} | {label} | {r['params']:,} | {h(p_pub)} | {r['macs'] / 1e6:.4g}M | {h(m_pub)} | "
                     f"{r['elementwise_macs'] / 1e6:.3g}M | {vs} | {src} |")
    text = "\n".join(lines) + "\n"
    if "imagenet_conventions" in data:
        text += "\n" + conventions_markdown(data["imagenet_conventions"])
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.global_counts", description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--out", default="results/global_counts.json")
    args = parser.parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for name in args.recipes:
            rows[name] = report(name, Path(tmp))
            print(f"{name}: {rows[name]['params']:,} params, {rows[name]['macs']:.4g} MACs", flush=True)
    data = {"command": command_line("benchmarks.global_counts", argv), "machine": machine, "rows": rows,
            "imagenet_conventions": imagenet_conventions()}
    out = Path(args.out)
    md = to_markdown(data)
    write_report(out.stem, data, md, out.parent)
    print(md)
    return data


if __name__ == "__main__":
    main()
