"""Parameters and MACs of every Global-layer and SI-CNN recipe (and their baselines), as ``python main.py report
--config <recipe> --convention all`` prints them, against the published numbers (REFERENCE.md 7.3-7.4, 8.1).

MACs: per input at the recipe's resolution (32x32 CIFAR, 224x224 ImageNet), batch 1, torch flop counter / 2
(conv and linear layers, 1x1 projections included). Not counted: the Global layers' element-wise PDE iteration
and the SI blocks' interpolation/mask (the paper's ``thop`` does not count the PDE either); the element-wise
column gives them separately. Parameters: all of them.

Usage::

    python -m benchmarks.global_counts --out results/global_counts.json   # also writes .md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

# recipe -> (label, published params, published MACs, source)
PUBLISHED: dict[str, tuple[str, float | None, float | None, str]] = {
    "baseline_resnet32_cifar10": ("ResNet-32 (CIFAR-10)", 460e3, 70e6, "runner 460K/70M; poster 473K/70M (7.3, 7.4)"),
    "global_resnet32_cifar10": ("ResNet-32-Global (CIFAR-10)", 170e3, 15e6,
                                "runner 170K/15M; poster 168K/15M, timing table 162K (7.3, 7.4)"),
    "baseline_resnet32_cifar100": ("ResNet-32 (CIFAR-100)", 473e3, 70e6, "poster 473K/70M (7.4)"),
    "global_resnet32_cifar100": ("ResNet-32-Global (CIFAR-100)", 168e3, 15e6, "poster 168K/15M (7.4)"),
    "baseline_mobilenet_v2_imagenet": ("MobileNetV2", 3.4e6, 300e6, "poster (7.4)"),
    "global_mobilenet_v2_imagenet": ("Global MobileNetV2", 1.6e6, 193e6, "poster (7.4)"),
    "baseline_mobilenet_v3_large_imagenet": ("MobileNetV3-Large", 5.4e6, 219e6, "poster (7.4)"),
    "global_mobilenet_v3_large_imagenet": ("Global MobileNetV3-Large", 3.0e6, 156e6, "poster (7.4)"),
    "sicnn_imagenet": ("SI-MobileNetV3-Large (project design)", None, None,
                       "none published; claim: up to ~40% fewer MACs than MobileNetV3 (8.1)"),
    "baseline_efficientnet_b0_imagenet": ("EfficientNet-B0", 5.3e6, 390e6, "poster (7.4)"),
    "global_efficientnet_b0_imagenet": ("Global EfficientNet-B0", 2.4e6, 244e6, "poster (7.4)"),
    "sicnn_efficientnet_b0_imagenet": ("SI-EfficientNet-B0 (project design)", None, None,
                                       "none published; claim: up to ~40% fewer MACs than EfficientNet-B0 (8.1)"),
    "global_illustrative_glyphs": ("illustrative model, PDE backbone", 524, None,
                                   "train_mnist_illustrative_example.py (7.4)"),
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
    from benchmarks.global_latency import elementwise_macs
    from main import cli_main

    out = tmp / f"{recipe}.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        cli = cli_main(["report", "--config", f"recipes/{recipe}.yaml", "--json", str(out), "--convention", "all"])
    model, result = cli.model, json.loads(out.read_text())
    return {"params": result["params"], "macs": result["macs"],
            "elementwise_macs": elementwise_macs(model.net, model.example_input_array),
            "input": list(model.example_input_array.shape[1:])}


def to_markdown(data: dict[str, Any]) -> str:
    def h(v: float | None, unit: str = "") -> str:
        if v is None:
            return "-"
        return f"{v / 1e6:.3g}M" if v >= 1e6 else f"{v / 1e3:.3g}K" if v >= 1e3 else f"{v:g}"

    lines = ["# Global layer and SI-CNN: parameters and MACs against the published numbers", "",
             f"Command: `{data['command']}` (each row = `python main.py report --config recipes/<recipe>.yaml "
             "--convention all`)", "",
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.global_counts", description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--out", default="results/global_counts.json")
    args = parser.parse_args(argv)
    cmd = "python -m benchmarks.global_counts " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for name in args.recipes:
            rows[name] = report(name, Path(tmp))
            print(f"{name}: {rows[name]['params']:,} params, {rows[name]['macs']:.4g} MACs", flush=True)
    data = {"command": cmd.strip(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(to_markdown(data))
    print(to_markdown(data))
    return data


if __name__ == "__main__":
    main()
