"""Measurements the pruning studies take inside a run, as Lightning callbacks (no training changes).

:class:`PruneSensitivitySweep` is the per-layer sensitivity analysis of Li et al., ICLR 2017 (Section 3, Figure 2;
docs/pruning.md#sensitivity-analysis) as a validate-time loop: in one ``main.py validate`` of a trained checkpoint
it prunes every selected conv layer *alone*, on a fresh copy of the net each time, at every ratio, by the L1 rule
of ``callbacks/l1_filter_pruning.py`` (:func:`~callbacks.l1_filter_pruning.prune_layer`: the filters with the
smallest L1 norms go, with their BatchNorm channels and the next layer's input kernels), evaluates the copy in eval
mode on the validation split, and logs one accuracy per (layer, ratio), without retraining.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def check_ratio(ratio: Any) -> float:
    """``ratio`` as a float in [0, 1), or a one-paragraph error naming the callback argument."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= float(ratio) < 1.0:
        raise ValueError(
            f"PruneSensitivitySweep: ratio {ratio!r} in init_args.ratios (trainer.callbacks of the recipe or stage) "
            "is not a fraction of filters in [0, 1); use e.g. [0, 0.1, 0.2, ..., 0.9] (0 is the unpruned net)."
        )
    return float(ratio)


def ratio_tag(ratio: float) -> str:
    """The ratio as it appears in metric keys: ``r0.50``."""
    return f"r{float(ratio):.2f}"


def layer_key(prefix: str, layer: str, ratio: float) -> str:
    """``<prefix>/<layer>/r<ratio>``: the logged accuracy of ``layer`` pruned alone at ``ratio``."""
    return f"{prefix}/{layer}/{ratio_tag(ratio)}"


def mean_key(prefix: str, ratio: float) -> str:
    """``<prefix>/mean/r<ratio>``: the mean over the analysed layers of their accuracy at ``ratio``."""
    return f"{prefix}/mean/{ratio_tag(ratio)}"


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode over ``loader`` (batches of ``(images, labels, ...)``)."""
    model.eval()
    device = next(model.parameters()).device
    correct = seen = 0
    for batch in loader:
        x, y = batch[0].to(device), batch[1].to(device)
        correct += int((model(x).argmax(dim=1) == y).sum())
        seen += int(y.numel())
    if seen == 0:
        raise ValueError("PruneSensitivitySweep: the validation split is empty")
    return 100.0 * correct / seen


def resolve_layers(net: nn.Module, example_inputs: Any, layers: Sequence[str | int] | None) -> list[str]:
    """The layers to analyse: ``layers`` (names, or the paper's 1-based conv layer numbers) or, by default, every
    conv that L1 pruning can remove on its own (``conv_layers`` with example inputs: all convs of VGG-16, the first
    conv of every block of a CIFAR ResNet)."""
    from callbacks.l1_filter_pruning import PruningError, conv_layers, numbered_conv_layers

    prunable = conv_layers(net, example_inputs)
    if not layers:
        return prunable
    numbered = numbered_conv_layers(net)
    out = []
    for key in layers:
        text = str(key).strip()
        name = numbered[int(text) - 1] if text.isdigit() and 1 <= int(text) <= len(numbered) else text
        if name not in prunable:
            raise PruningError(
                f"PruneSensitivitySweep: layer {key!r} (trainer.callbacks, init_args.layers) cannot be pruned on its "
                f"own (a residual-coupled conv, or not a conv of {type(net).__name__}); choose from: "
                f"{', '.join(prunable)}, or leave layers out to analyse all of them."
            )
        out.append(name)
    return out


def sensitivity(net: nn.Module, loader: Iterable, example_inputs: Any, ratios: Sequence[float] = DEFAULT_RATIOS,
                layers: Sequence[str | int] | None = None) -> dict[str, Any]:
    """Accuracy of ``net`` with each layer pruned alone at each ratio, no retraining.

    Returns ``{"ratios", "layers", "unpruned_acc", "curves": {layer: [acc per ratio]}, "widths": {layer:
    filters}, "kept": {layer: [filters kept per ratio]}, "paper_numbers": {layer: k}}``. A ratio that keeps every
    filter (ratio 0) gives the unpruned accuracy; one that would keep none gives ``None``. ``net`` is not changed.
    """
    from callbacks.l1_filter_pruning import kept_filters, numbered_conv_layers, prune_layer

    ratios = [check_ratio(r) for r in ratios]
    names = resolve_layers(net, example_inputs, layers)
    numbered = numbered_conv_layers(net)
    unpruned = accuracy(copy.deepcopy(net), loader)
    widths = {n: int(net.get_submodule(n).out_channels) for n in names}
    curves: dict[str, list[float | None]] = {}
    kept: dict[str, list[int]] = {}
    for name in names:
        curves[name], kept[name] = [], []
        for r in ratios:
            keep = kept_filters(widths[name], r)
            kept[name].append(keep)
            if keep == widths[name]:
                curves[name].append(unpruned)
            elif keep < 1:
                curves[name].append(None)
            else:
                model = copy.deepcopy(net)
                prune_layer(model, name, r, example_inputs)
                curves[name].append(accuracy(model, loader))
    return {"ratios": ratios, "layers": names, "unpruned_acc": unpruned, "curves": curves, "widths": widths,
            "kept": kept, "paper_numbers": {n: numbered.index(n) + 1 for n in names if n in numbered}}


class PruneSensitivitySweep(pl.Callback):
    """Per-layer L1 pruning sensitivity, measured at the end of ``main.py validate`` (see the module docstring).

    Logged (so ``metrics/validate.json`` holds them): ``<prefix>/unpruned`` (accuracy % of the loaded net),
    ``<prefix>/<layer>/r<ratio>`` for every layer and ratio that keeps at least one filter, and
    ``<prefix>/mean/r<ratio>`` (mean over the layers). The whole result (curves, widths, filters kept, the paper's
    layer numbers) also goes to ``<run dir>/<out_file>`` as JSON.

    Args:
        ratios: fractions of each layer's filters removed, in [0, 1).
        layers: layer names or the paper's conv layer numbers; default every conv prunable on its own.
        prefix: the first part of every logged key.
        out_file: the JSON file's name in ``trainer.default_root_dir`` (``null``: none).
        during_fit: also sweep after every validation inside ``fit`` (off: only ``validate`` runs the sweep).
    """

    def __init__(self, ratios: list[float] | None = None, layers: list[str | int] | None = None,
                 prefix: str = "sensitivity", out_file: str | None = "prune_sensitivity.json",
                 during_fit: bool = False) -> None:
        self.ratios = [check_ratio(r) for r in (DEFAULT_RATIOS if ratios is None else ratios)]
        if not self.ratios:
            raise ValueError("PruneSensitivitySweep: ratios is empty; give at least one ratio in [0, 1)")
        self.layers = list(layers) if layers else None
        self.prefix, self.out_file, self.during_fit = prefix, out_file, bool(during_fit)
        self.result: dict[str, Any] | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn != TrainerFn.VALIDATING and not (self.during_fit and trainer.state.fn == TrainerFn.FITTING):
            return
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise ValueError(f"PruneSensitivitySweep needs a LightningModule with an nn.Module 'net' attribute; "
                             f"{type(pl_module).__name__} has none")
        example = pl_module.example_input_array
        if example is None:
            raise ValueError(f"PruneSensitivitySweep: {type(pl_module).__name__} has no example_input_array to trace "
                             "the net's dependency graph with")
        example = example.to(pl_module.device) if isinstance(example, torch.Tensor) else example
        loader = trainer.datamodule.val_dataloader()
        t0 = time.perf_counter()
        # validation runs under torch.inference_mode; tracing the dependency graph needs autograd
        with torch.inference_mode(False), torch.enable_grad():
            result = sensitivity(net, loader, example, self.ratios, self.layers)
        result["seconds"] = time.perf_counter() - t0
        self.result = result
        pl_module.log(f"{self.prefix}/unpruned", result["unpruned_acc"])
        for i, r in enumerate(result["ratios"]):
            values = [result["curves"][name][i] for name in result["layers"]]
            for name, value in zip(result["layers"], values):
                if value is not None:
                    pl_module.log(layer_key(self.prefix, name, r), value)
            present = [v for v in values if v is not None]
            if present:
                pl_module.log(mean_key(self.prefix, r), sum(present) / len(present))
        if self.out_file and trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.out_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
