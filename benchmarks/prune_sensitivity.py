"""Sensitivity of each conv layer to L1-norm filter pruning, without retraining (Li et al., ICLR 2017, Figure 2;
docs/pruning.md#sensitivity-analysis).

Every selected conv layer is pruned *alone* -- on a fresh copy of the trained net each time -- at each ratio,
by the L1 rule of ``callbacks/l1_filter_pruning.py`` (:func:`prune_layer`: the filters with the smallest L1
norms go, with their BatchNorm channels and the next layer's input kernels), and the copy is evaluated in eval
mode on the whole chosen split (or its first ``--max-batches`` batches). Ratio 0 is the unpruned net. The curves
(top-1 accuracy vs fraction of filters pruned away, one line per layer, like the paper's Figure 2(b)) go to a
PNG and a JSON, and with ``--wandb`` the PNG is logged to an offline W&B run.

Layers: by default every layer that can be pruned on its own (:func:`conv_layers` with example inputs: all 13
convs of VGG-16, the first conv of every block of a CIFAR ResNet); ``--layers`` takes names or the paper's layer
numbers (:func:`numbered_conv_layers`, 1-based).

Usage::

    python -m benchmarks.prune_sensitivity --ckpt runs/x/checkpoints/last.ckpt \
        --ratios 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 --out results/prune_sensitivity_resnet20_glyphs.json
    # data from a recipe (its ``data:`` section) instead of the default GlyphsDataModule test split:
    python -m benchmarks.prune_sensitivity --ckpt last.ckpt --config recipes/baseline_vgg16_cifar10.yaml

The default data is ``GlyphsDataModule`` (``--test-size`` images, ``--difficulty``, ``--data-seed``), which only
fits a checkpoint trained on glyphs with the same settings (input 1x32x32, pixels in [0, 1]).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib
import json
import math
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ------------------------------------------------------------------------------------------------ core
@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, max_batches: int | None = None, desc: str | None = None,
             progress: bool = True) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode over ``loader`` (first ``max_batches`` batches if given)."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    correct = seen = 0
    for i, batch in enumerate(tqdm(loader, total=total, desc=desc, leave=False, disable=not progress)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = batch[0].to(device), batch[1].to(device)
        correct += int((model(x).argmax(dim=1) == y).sum())
        seen += int(y.numel())
    if seen == 0:
        raise ValueError("prune_sensitivity: the evaluation split is empty")
    return 100.0 * correct / seen


def resolve_layers(net: nn.Module, example_inputs: Any, layers: Sequence[str | int] | None) -> list[str]:
    """Layer names to analyse: ``layers`` (names or paper layer numbers) or every layer prunable on its own."""
    from callbacks.l1_filter_pruning import conv_layers, numbered_conv_layers

    prunable = conv_layers(net, example_inputs)
    if not layers:
        return prunable
    numbered = numbered_conv_layers(net)
    out = []
    for key in layers:
        text = str(key).strip()
        name = numbered[int(text) - 1] if text.isdigit() and 1 <= int(text) <= len(numbered) else text
        if name not in prunable:
            raise ValueError(
                f"prune_sensitivity: layer {key!r} cannot be pruned on its own (a residual-coupled conv, or not a "
                f"conv of {type(net).__name__}); choose from: {', '.join(prunable)}"
            )
        out.append(name)
    return out


def sensitivity(net: nn.Module, loader: Iterable, example_inputs: Any, ratios: Sequence[float] = DEFAULT_RATIOS,
                layers: Sequence[str | int] | None = None, max_batches: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Accuracy of ``net`` with each layer pruned alone at each ratio (no retraining).

    Returns ``{"ratios", "layers", "baseline_acc", "curves": {layer: [acc per ratio]}, "widths":
    {layer: filters}, "kept": {layer: [filters kept per ratio]}, "paper_numbers": {layer: k}}``. A ratio that
    would keep no filter gives ``None``. Ratio 0 evaluates an untouched copy of the net.
    """
    from callbacks.l1_filter_pruning import kept_filters, numbered_conv_layers, prune_layer

    ratios = [float(r) for r in ratios]
    names = resolve_layers(net, example_inputs, layers)
    numbered = numbered_conv_layers(net)
    baseline = evaluate(copy.deepcopy(net), loader, max_batches, "unpruned", progress)
    curves: dict[str, list[float | None]] = {}
    kept: dict[str, list[int]] = {}
    widths = {n: int(net.get_submodule(n).out_channels) for n in names}
    for name in names:
        curves[name], kept[name] = [], []
        for r in ratios:
            keep = kept_filters(widths[name], r)
            kept[name].append(keep)
            if keep == widths[name]:  # nothing removed (ratio 0): the unpruned net
                curves[name].append(baseline)
                continue
            if keep < 1:
                curves[name].append(None)
                continue
            model = copy.deepcopy(net)
            prune_layer(model, name, r, example_inputs)
            curves[name].append(evaluate(model, loader, max_batches, f"{name} @ {r:g}", progress))
        if progress:
            shown = ", ".join("—" if a is None else f"{a:.1f}" for a in curves[name])
            print(f"{name}: {shown}", flush=True)
    return {"ratios": ratios, "layers": names, "baseline_acc": baseline, "curves": curves, "widths": widths,
            "kept": kept, "paper_numbers": {n: numbered.index(n) + 1 for n in names if n in numbered}}


def plot(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Accuracy vs fraction of filters pruned away, one line per layer (the paper's Figure 2(b))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [100 * r for r in result["ratios"]]
    cmap = plt.get_cmap("viridis" if len(result["layers"]) > 10 else "tab10")
    for i, name in enumerate(result["layers"]):
        ys = [math.nan if a is None else a for a in result["curves"][name]]
        k = result["paper_numbers"].get(name)
        label = f"conv {k} ({name}, {result['widths'][name]})" if k else name
        color = cmap(i / max(1, len(result["layers"]) - 1)) if len(result["layers"]) > 10 else cmap(i % 10)
        ax.plot(xs, ys, marker="o", ms=3, label=label, color=color)
    ax.axhline(result["baseline_acc"], color="grey", lw=0.8, ls="--", label="unpruned")
    ax.set_xlabel("Filters pruned away (%)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title(title or "Prune smallest filters (L1), each layer alone, no retraining", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(result["layers"]) > 8 else 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ loading
def load_model(ckpt: str) -> nn.Module:
    """The ``ImageClassifier`` of a checkpoint (a pruned one is rebuilt from its hparams), on the CPU, eval
    mode."""
    from modules.image_classifier import ImageClassifier

    return ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()


def _instantiate(spec: dict[str, Any]) -> Any:
    module_name, _, cls_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**(spec.get("init_args") or {}))


def make_loader(args: argparse.Namespace) -> Iterable:
    """The evaluation loader: the recipe's ``data:`` section (``--config``) or a GlyphsDataModule split."""
    if args.config:
        import yaml

        cfg = yaml.safe_load(Path(args.config).read_text())
        spec = cfg.get("data")
        if not isinstance(spec, dict) or "class_path" not in spec:
            raise SystemExit(f"prune_sensitivity: {args.config} has no data: class_path section")
        dm = _instantiate(spec)
    else:
        from datamodules.glyphs import GlyphsDataModule

        dm = GlyphsDataModule(batch_size=args.batch_size, seed=args.data_seed, difficulty=args.difficulty,
                              train_size=1, test_size=args.test_size, num_classes=args.num_classes)
    dm.prepare_data()
    dm.setup("test" if args.split == "test" else "validate")
    return dm.test_dataloader() if args.split == "test" else dm.val_dataloader()


def log_wandb(png: Path, result: dict[str, Any], wandb_dir: str, project: str, name: str | None) -> str:
    import wandb

    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(mode="offline", dir=wandb_dir, project=project, name=name, job_type="prune_sensitivity",
                     config={"ratios": result["ratios"], "layers": result["layers"]})
    run.log({"prune_sensitivity/plot": wandb.Image(str(png)), "prune_sensitivity/baseline_acc":
             result["baseline_acc"]})
    run.finish()
    return str(run.dir)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="benchmarks.prune_sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint of an ImageClassifier")
    p.add_argument("--config", help="recipe YAML whose data: section gives the evaluation data")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--ratios", nargs="+", type=float, default=list(DEFAULT_RATIOS))
    p.add_argument("--layers", nargs="+", help="layer names or paper layer numbers (default: all prunable alone)")
    p.add_argument("--max-batches", type=int, help="evaluate on the first N batches only")
    p.add_argument("--batch-size", type=int, default=250, help="glyphs batch size")
    p.add_argument("--test-size", type=int, default=1000, help="glyphs test images")
    p.add_argument("--difficulty", type=float, default=0.5, help="glyphs difficulty")
    p.add_argument("--data-seed", type=int, default=0, help="glyphs seed")
    p.add_argument("--num-classes", type=int, default=10, help="glyphs classes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/prune_sensitivity.json", help="JSON path; the PNG goes beside it")
    p.add_argument("--title", default="")
    p.add_argument("--wandb", action="store_true", help="log the PNG to an offline W&B run")
    p.add_argument("--wandb-dir", default="runs/wandb_prune_sensitivity")
    p.add_argument("--wandb-project", default="prune_sensitivity")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    module = load_model(a.ckpt)
    net = module.net if isinstance(getattr(module, "net", None), nn.Module) else module
    example = module.example_input_array
    loader = make_loader(a)
    result = sensitivity(net, loader, example, a.ratios, a.layers, a.max_batches, progress=not a.no_progress)
    out = Path(a.out)
    png = plot(result, out.with_suffix(".png"), a.title)
    result.update({
        "ckpt": a.ckpt, "net": getattr(module.hparams, "net", None) if hasattr(module, "hparams") else None,
        "data": a.config or f"GlyphsDataModule(test_size={a.test_size}, difficulty={a.difficulty}, "
                            f"data_seed={a.data_seed}, num_classes={a.num_classes})",
        "split": a.split, "max_batches": a.max_batches, "png": str(png),
        "command": "python -m benchmarks.prune_sensitivity " + " ".join(
            shlex.quote(s) for s in (sys.argv[1:] if argv is None else argv)),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "wall_s": time.perf_counter() - t0,
    })
    if a.wandb:
        result["wandb_dir"] = log_wandb(png, result, a.wandb_dir, a.wandb_project, out.stem)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} and {png}")
    return result


if __name__ == "__main__":
    main()
