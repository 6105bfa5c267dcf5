"""L1-norm filter pruning (Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017).

Drop-in Lightning callback; imports only torch, lightning and torch_pruning. Every selected conv layer loses the
filters whose 3-D weight tensors have the smallest L1 norms; the filters are physically removed together with
their BatchNorm channels and the matching input kernels of the next layer(s), found through Torch-Pruning's
dependency graph (no masks are left behind). docs/pruning.md describes the method and the paper's
configurations.

Configuration (YAML, under ``trainer.callbacks``)::

    - class_path: callbacks.l1_filter_pruning.L1FilterPruning
      init_args:
        preset: resnet56_b                     # the paper's Table 1 rows, see PRESETS
    - class_path: callbacks.l1_filter_pruning.L1FilterPruning
      init_args:
        ratios: {"layer1.*.conv1": 0.6, "layer2.*.conv1": 0.3, "8": 0.5}   # glob on names or paper layer number
        skip: [16, 20, "layer3.8.conv1"]       # paper layer numbers or glob patterns
        ranking: independent                   # or greedy (docs/pruning.md#independent-and-greedy-ranking)
        prune_at_epoch: null                   # null: one shot before training (the paper); N: at epoch N

* **Names.** Layers are named relative to the pruned module: the LightningModule's ``nn.Module`` attribute
  ``net`` (this project's modules) or else ``model`` (a common name in other projects), the LightningModule
  itself otherwise (``target`` overrides it).
* **Paper layer numbers** (docs/pruning.md#residual-networks-and-layer-numbers): the convs of the pruned module in definition order, 1-based,
  leaving out 1x1 projection shortcuts (convs named ``*downsample*``/``*shortcut*``). Layer 1 is the stem; in a
  ResNet, block b holds layers 2b and 2b+1. For VGG-16, layer k is conv_k.
* **Width rule.** A layer of width w at ratio p keeps ``floor(w * (1 - p))`` filters; a ratio in [0, 1) that
  would keep none is an error.
* **Residual channels.** A layer whose filters are coupled to other convs' filters (the second conv of a
  residual block, a projection shortcut, a stem feeding a residual stream) is refused unless ``coupled: true``.
  Then the whole coupled group is pruned by the L1 norms of the named layer's filters; the paper's ResNet-34-C
  names stage 3's projection shortcut (``layer3.0.downsample.0``), whose ranking decides which residual
  channels of the stage are removed. Channel-padding (option-A) shortcuts cannot be pruned at all.
* **Timing.** One shot in ``setup`` (after the trained weights were loaded into the model, before the
  optimizers exist), or at the start of epoch ``prune_at_epoch``, after which the optimizers (and under DDP the
  DistributedDataParallel wrapper) are rebuilt; learning rates and scheduler progress carry over, momentum
  buffers restart.
* **Checkpoints.** The pruned widths, the removed indices and the configuration go into the callback state and
  into the checkpoint's top-level ``"l1_filter_pruning"`` entry. While the callback is in the Trainer, every
  checkpoint Lightning loads into the module (``trainer.fit/validate/test/predict(ckpt_path=...)``) first
  narrows the layers to the checkpoint's widths (a load-state-dict pre-hook on the LightningModule); a run is
  never pruned twice. Without the callback, a LightningModule restores the structure with one line in its
  ``on_load_checkpoint``, which makes ``load_from_checkpoint`` and any Trainer work::

      from l1_filter_pruning import restore_pruned_widths  # this file (callbacks.l1_filter_pruning here)

      class LitClassifier(L.LightningModule):
          def on_load_checkpoint(self, checkpoint):
              restore_pruned_widths(self, checkpoint)

  A plain ``nn.Module`` is rebuilt with :func:`rebuild_pruned_model` (the ``model.``/``net.`` prefix of the
  LightningModule's keys is stripped)::

      model = rebuild_pruned_model(torchvision.models.resnet34(), "last.ckpt")  # reshaped, weights loaded

  A net that defines ``structure_kwargs()`` (this project's ``vgg16``/``resnet*``) also gets its widths
  written into ``hparams.net_kwargs``.
* **Safe loading.** Checkpoint files are read with ``torch.load(weights_only=True)``; a file that holds other
  Python objects is refused with the object's name, and loads only when the caller passes
  ``trust_checkpoint=True``.

Public functions (also used by the sensitivity analysis): :func:`conv_layers`, :func:`numbered_conv_layers`,
:func:`l1_filter_norms`, :func:`dependency_graph`, :func:`prune_layer`, :func:`prune_model`,
:func:`layer_widths`, :func:`rebuild_pruned_model`, :func:`restore_pruned_widths`.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import pickle
import math
import os
import re
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

CHECKPOINT_KEY = "l1_filter_pruning"
STATE_VERSION = 1
Ranking = Literal["independent", "greedy"]

_SHORTCUT_PATTERN = re.compile(r"(downsample|shortcut)", re.IGNORECASE)


def _stage_ratios(*ratios: float, prefix: str = "layer") -> dict[str, float]:
    return {f"{prefix}{s}.*.conv1": r for s, r in enumerate(ratios, start=1) if r > 0}


# The paper's Table 1 configurations (docs/pruning.md#pruned-configurations). ``layers`` is the number of numbered conv layers of the
# architecture the preset is written for (13 for VGG-16, 6n+1 for CIFAR ResNets, 33 for ResNet-34); a preset
# applied to another architecture is an error.
PRESETS: dict[str, dict[str, Any]] = {
    "vgg16_a": {"ratios": {str(k): 0.5 for k in (1, 8, 9, 10, 11, 12, 13)}, "skip": [], "layers": 13},
    "resnet56_a": {"ratios": _stage_ratios(0.1, 0.1, 0.1), "skip": [16, 20, 38, 54], "layers": 55},
    "resnet56_b": {"ratios": _stage_ratios(0.6, 0.3, 0.1), "skip": [16, 18, 20, 34, 38, 54], "layers": 55},
    "resnet110_a": {"ratios": _stage_ratios(0.5), "skip": [36], "layers": 109},
    "resnet110_b": {"ratios": _stage_ratios(0.5, 0.4, 0.3), "skip": [36, 38, 74], "layers": 109},
    "resnet34_a": {"ratios": _stage_ratios(0.3, 0.3, 0.3), "skip": [2, 8, 14, 16, 26, 28, 30, 32], "layers": 33},
    "resnet34_b": {"ratios": _stage_ratios(0.5, 0.6, 0.4), "skip": [2, 8, 14, 16, 26, 28, 30, 32], "layers": 33},
    # the second convs of stage 3 and its identity/projection path, ranked by the projection's filters
    "resnet34_c": {"ratios": {"layer3.0.downsample.0": 0.2}, "skip": [], "layers": 33, "coupled": True},
}


class PruningError(ValueError):
    """A pruning configuration or checkpoint that cannot be applied to the model (the message says why and what
    to do; ``user_facing`` tells an entry point to print it as one paragraph instead of a traceback)."""

    user_facing = True


# ---------------------------------------------------------------------------------------------- layer lists
def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)


def _is_dense_conv(module: nn.Module) -> bool:
    return _is_conv(module) and module.groups == 1


def _is_projection_shortcut(name: str, module: nn.Module) -> bool:
    return _is_conv(module) and all(k == 1 for k in module.kernel_size) and bool(_SHORTCUT_PATTERN.search(name))


def numbered_conv_layers(model: nn.Module) -> list[str]:
    """Conv layer names in the paper's numbering: element ``k - 1`` is layer ``k`` (docs/pruning.md#residual-networks-and-layer-numbers).

    Definition order, leaving out 1x1 projection shortcuts; for a ResNet layer 1 is the stem and block b holds
    layers 2b and 2b+1, for VGG-16 layer k is conv_k.
    """
    return [n for n, m in model.named_modules() if _is_conv(m) and not _is_projection_shortcut(n, m)]


def layer_widths(model: nn.Module) -> dict[str, int]:
    """``{conv name: out_channels}`` for every conv layer of ``model`` (what a pruned checkpoint stores)."""
    return {n: int(m.out_channels) for n, m in model.named_modules() if _is_conv(m)}


def l1_filter_norms(conv: nn.Module) -> torch.Tensor:
    """L1 norm of every 3-D filter of a conv layer: ``s_j = sum |W[j, :, :, :]|`` (one value per output)."""
    if not _is_conv(conv):
        raise PruningError(f"l1_filter_norms needs a conv layer, got {type(conv).__name__}")
    w = conv.weight.detach()
    return w.abs().reshape(w.shape[0], -1).sum(dim=1).float().cpu()


def kept_filters(width: int, ratio: float) -> int:
    """Filters a layer of ``width`` keeps at pruning ``ratio``: ``floor(width * (1 - ratio))`` (docs/pruning.md#residual-networks-and-layer-numbers)."""
    _check_ratio(ratio, "ratio")
    return int(math.floor(width * (1.0 - ratio) + 1e-9))


def smallest_filters(conv: nn.Module, count: int) -> list[int]:
    """Indices (ascending) of the ``count`` filters of ``conv`` with the smallest L1 norms; ties go to the
    lower index, so every DDP rank selects the same filters."""
    if count <= 0:
        return []
    order = torch.sort(l1_filter_norms(conv), stable=True).indices
    return sorted(int(i) for i in order[:count])


def _check_ratio(ratio: Any, where: str) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (0.0 <= float(ratio) < 1.0):
        raise PruningError(
            f"L1FilterPruning: {where} is {ratio!r}; a pruning ratio is the fraction of filters removed and "
            "must be in [0, 1) (0 keeps the layer, 0.5 removes half of its filters)."
        )
    return float(ratio)


def _forward(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _to_model(inputs: Any, model: nn.Module) -> Any:
    """Example inputs on the model's device, floating tensors in its dtype (e.g. mid-fit on a GPU, 16-true)."""
    p = next(model.parameters(), None)
    if p is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.to(p.device, p.dtype) if inputs.is_floating_point() else inputs.to(p.device)
    if isinstance(inputs, tuple | list):
        return type(inputs)(_to_model(v, model) for v in inputs)
    if isinstance(inputs, dict):
        return {k: _to_model(v, model) for k, v in inputs.items()}
    return inputs


class _ModesKept:
    """Restores every submodule's train/eval flag on exit (Torch-Pruning's tracing calls ``model.eval()``)."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self) -> _ModesKept:
        return self

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.modes:
            m.training = training


def dependency_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` traced on ``example_inputs`` (train/eval flags kept).

    Pass it as ``graph=`` to :func:`prune_layer` to prune several layers of one model without tracing again
    (the graph stays valid after pruning).
    """
    if example_inputs is None:
        raise PruningError(
            "L1FilterPruning needs example inputs to trace the model's dependency graph: pass example_inputs, "
            "set the LightningModule's example_input_array, or give the callback example_input_shape."
        )
    inputs = _to_model(example_inputs, model)
    with _ModesKept(model), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=inputs, verbose=False)


def _check_runs(model: nn.Module, example_inputs: Any, what: str) -> None:
    inputs = _to_model(example_inputs, model)
    with _ModesKept(model), torch.no_grad():
        model.eval()
        try:
            _forward(model, inputs)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise PruningError(f"{what} left a model that no longer runs: {type(err).__name__}: {err}") from err


class _Coupling:
    """What pruning a layer's filters drags along, from its Torch-Pruning group."""

    def __init__(self, graph: tp.DependencyGraph, module: nn.Module) -> None:
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels, [0])
        names = graph._module2name
        self.coupled: list[str] = []  # other layers whose outputs (filters) would be removed too
        self.padding = False  # a channel-padding (option-A) shortcut on the path
        self.output = False  # the model's output itself
        for item in group:
            dep = item.dep
            target = dep.target.module
            if dep.target.type == tp.ops.OPTYPE.OUTPUT:
                self.output = True
            elif isinstance(target, tp.ops._ElementWiseOp) and "pad" in repr(target).lower():
                self.padding = True
            elif target is not module and graph.is_out_channel_pruning_fn(dep.handler) and (
                _is_dense_conv(target) or isinstance(target, nn.Linear)
            ):
                name = names.get(target, repr(target))
                if name not in self.coupled:
                    self.coupled.append(name)


def conv_layers(model: nn.Module, example_inputs: Any = None, coupled: bool = False) -> list[str]:
    """Names of the conv layers whose filters L1 pruning can remove, in definition order.

    Without ``example_inputs``: every dense (``groups == 1``) conv. With ``example_inputs`` the dependency graph
    is traced and layers are dropped whose pruning would change the model's output, cross a channel-padding
    shortcut, or (unless ``coupled``) remove other layers' filters too (residual streams) -- i.e. exactly the
    layers :func:`prune_layer` accepts. For a CIFAR ResNet that is the first conv of every block; for VGG-16 all
    13 convs.
    """
    names = [n for n, m in model.named_modules() if _is_dense_conv(m)]
    if example_inputs is None:
        return names
    graph = dependency_graph(model, example_inputs)
    keep = []
    for name in names:
        c = _Coupling(graph, model.get_submodule(name))
        if not c.output and not c.padding and (coupled or not c.coupled):
            keep.append(name)
    return keep


def _unknown_layer(model: nn.Module, name: str, what: str = "layer") -> PruningError:
    names = [n for n, m in model.named_modules() if _is_dense_conv(m)]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    return PruningError(
        f"L1FilterPruning: {what} {name!r} is not a prunable conv layer of {type(model).__name__}.{hint} "
        f"Prunable convs: {shown}. Names are relative to the pruned module (the LightningModule's 'net' or "
        "'model' attribute, or the one the callback's target argument names), and numbers are the paper's layer "
        "numbers (numbered_conv_layers(model) in l1_filter_pruning.py lists them)."
    )


def _prune_group(graph: tp.DependencyGraph, model: nn.Module, name: str, idxs: list[int], coupled: bool,
                 done: set[str]) -> None:
    module = model.get_submodule(name)
    c = _Coupling(graph, module)
    if c.output:
        raise PruningError(f"L1FilterPruning: pruning {name!r} would remove outputs of the model itself; skip it.")
    if c.padding:
        raise PruningError(
            f"L1FilterPruning: the filters of {name!r} feed a residual stream with a channel-padding (option-A) "
            "shortcut, whose channels cannot be removed; the paper prunes only the first conv of each block of "
            "such nets. Add this layer to the callback's skip argument."
        )
    if c.coupled and not coupled:
        shown = ", ".join(c.coupled[:6]) + (", ..." if len(c.coupled) > 6 else "")
        raise PruningError(
            f"L1FilterPruning: the filters of {name!r} are coupled to those of {shown} through a residual sum, "
            "so they cannot be removed on their own. Prune the first conv of the block instead, skip the layer, "
            "or set coupled: true to prune the whole group by this layer's L1 norms (ResNet-34-C)."
        )
    clash = sorted(done.intersection([name, *c.coupled]))
    if clash:
        raise PruningError(
            f"L1FilterPruning: {name!r} is coupled to {', '.join(clash)}, which was already pruned in this pass; "
            "name only one layer of a coupled group."
        )
    if idxs:
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels, idxs)
        group.prune(record_history=False)
    done.update([name, *c.coupled])


# ---------------------------------------------------------------------------------------------- pruning
def prune_layer(model: nn.Module, layer_name: str, ratio: float, example_inputs: Any, *, coupled: bool = False,
                graph: tp.DependencyGraph | None = None) -> list[int]:
    """Prunes one conv layer of ``model`` in place by the L1 rule and returns the removed filter indices.

    The ``len(removed) = width - floor(width * (1 - ratio))`` filters with the smallest L1 norms go, with their
    BatchNorm channels and the next layers' matching input kernels. ``graph`` reuses a dependency graph built on
    this model (Torch-Pruning's graph stays valid after pruning).
    """
    _check_ratio(ratio, f"ratio for {layer_name!r}")
    names = dict(model.named_modules())
    module = names.get(layer_name)
    if module is None or not _is_dense_conv(module):
        raise _unknown_layer(model, layer_name)
    keep = kept_filters(module.out_channels, ratio)
    if keep < 1:
        raise PruningError(
            f"L1FilterPruning: ratio {ratio} would remove every filter of {layer_name!r} "
            f"({module.out_channels} filters, floor({module.out_channels} x {1 - ratio:g}) = 0 kept); use a "
            "smaller ratio."
        )
    idxs = smallest_filters(module, module.out_channels - keep)
    graph = graph if graph is not None else dependency_graph(model, example_inputs)
    _prune_group(graph, model, layer_name, idxs, coupled, set())
    return idxs


def resolve_ratios(model: nn.Module, ratios: Mapping[str, float], skip: Iterable[int | str] = ()) -> dict[str, float]:
    """Expands a ``{pattern | paper layer number: ratio}`` config to ``{layer name: ratio}`` (network order).

    Keys are glob patterns on the layer names (``layer1.*.conv1``) or paper layer numbers (``"8"`` or 8); later
    keys override earlier ones. ``skip`` entries (numbers or patterns) are left out. Every key and skip entry
    must match at least one prunable conv. Layers at ratio 0 are dropped.
    """
    numbered = numbered_conv_layers(model)
    dense = [n for n, m in model.named_modules() if _is_dense_conv(m)]

    def match(key: int | str, what: str) -> list[str]:
        if isinstance(key, bool):
            raise PruningError(f"L1FilterPruning: {what} {key!r} is neither a layer number nor a name pattern")
        text = str(key).strip()
        if re.fullmatch(r"\d+", text):
            k = int(text)
            if not 1 <= k <= len(numbered):
                raise PruningError(
                    f"L1FilterPruning: {what} {k} does not exist; {type(model).__name__} has conv layers 1 to "
                    f"{len(numbered)} in the paper's numbering (stem = 1, block b = layers 2b and 2b+1)."
                )
            name = numbered[k - 1]
            if name not in dense:
                raise PruningError(f"L1FilterPruning: {what} {k} ({name!r}) is a grouped conv; it cannot be pruned")
            return [name]
        found = [n for n in dense if fnmatch.fnmatchcase(n, text)]
        if not found:
            raise _unknown_layer(model, text, what)
        return found

    chosen: dict[str, float] = {}
    for key, ratio in ratios.items():
        r = _check_ratio(ratio, f"the ratio for {key!r}")
        for name in match(key, "layer"):
            chosen[name] = r
    skipped = {name for entry in skip for name in match(entry, "skip entry")}
    order = {n: i for i, n in enumerate(dense)}
    return {n: chosen[n] for n in sorted(chosen, key=order.__getitem__) if n not in skipped and chosen[n] > 0}


def prune_model(model: nn.Module, ratios: Mapping[str, float], example_inputs: Any, skip: Iterable[int | str] = (),
                ranking: Ranking = "independent", coupled: bool = False, verify: bool = True) -> dict[str, list[int]]:
    """Prunes every layer selected by ``ratios``/``skip`` (see :func:`resolve_ratios`) in place.

    ``ranking="independent"`` scores every layer on the weights before any layer is pruned (the filters of
    layer i+1 still count the kernels on maps removed from layer i); ``"greedy"`` prunes layer by layer in
    network order, so a layer is scored without the kernels already removed (docs/pruning.md#independent-and-greedy-ranking). Returns
    ``{layer: removed filter indices}``, indices in the layer's numbering before pruning. Nothing is changed
    when the configuration is invalid. ``verify`` runs the pruned model once on ``example_inputs``.
    """
    if ranking not in ("independent", "greedy"):
        raise PruningError(f"L1FilterPruning: ranking must be 'independent' or 'greedy', got {ranking!r}")
    plan = resolve_ratios(model, ratios, skip)
    modules = dict(model.named_modules())
    counts: dict[str, int] = {}
    for name, ratio in plan.items():
        width = modules[name].out_channels
        keep = kept_filters(width, ratio)
        if keep < 1:
            raise PruningError(
                f"L1FilterPruning: ratio {ratio} would remove every filter of {name!r} ({width} filters, "
                f"floor({width} x {1 - ratio:g}) = 0 kept); use a smaller ratio or skip the layer."
            )
        counts[name] = width - keep
    graph = dependency_graph(model, example_inputs)
    for name in plan:  # refuse coupled/padded/output layers before anything is removed
        _prune_group(graph, model, name, [], coupled, set())
    removed: dict[str, list[int]] = {}
    if ranking == "independent":
        removed = {name: smallest_filters(modules[name], counts[name]) for name in plan}
    done: set[str] = set()
    for name in plan:
        if ranking == "greedy":
            removed[name] = smallest_filters(modules[name], counts[name])
        _prune_group(graph, model, name, removed[name], coupled, done)
    if verify:
        _check_runs(model, example_inputs, "L1 filter pruning")
    return removed


# ---------------------------------------------------------------------------------------------- rebuilding
def _reshape_to_widths(model: nn.Module, widths: Mapping[str, int], example_inputs: Any, source: str) -> None:
    current = layer_widths(model)
    missing = [n for n in widths if n not in current]
    wider = [n for n, w in widths.items() if n in current and int(w) > current[n]]
    if missing or wider or len(current) != len(widths):
        details = []
        if missing:
            details.append(f"layers {', '.join(missing[:4])} do not exist in {type(model).__name__}")
        if wider:
            details.append(", ".join(f"{n} has {current[n]} filters, the checkpoint {widths[n]}" for n in wider[:4]))
        if len(current) != len(widths):
            details.append(f"the model has {len(current)} conv layers, the checkpoint {len(widths)}")
        raise PruningError(
            f"The pruned structure in {source} belongs to another architecture than this "
            f"{type(model).__name__}: {'; '.join(details)}. Build the same architecture the pruning run started from."
        )
    if all(current[n] == int(w) for n, w in widths.items()):
        return
    graph = dependency_graph(model, example_inputs)
    for name, module in model.named_modules():
        if not _is_dense_conv(module) or name not in widths:
            continue
        have, want = module.out_channels, int(widths[name])
        if have > want:  # which filters go does not matter: the checkpoint's weights replace them
            graph.get_pruning_group(module, tp.prune_conv_out_channels, list(range(want, have))).prune(
                record_history=False)
    after = layer_widths(model)
    wrong = [n for n, w in widths.items() if after[n] != int(w)]
    if wrong:
        raise PruningError(
            f"The pruned structure in {source} cannot be rebuilt on this {type(model).__name__}: "
            + ", ".join(f"{n} has {after[n]} filters, the checkpoint {widths[n]}" for n in wrong[:4])
            + ". It belongs to another architecture."
        )


def pruning_state(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The L1FilterPruning entry of a Lightning checkpoint dict, or None when it has none."""
    state = checkpoint.get(CHECKPOINT_KEY)
    if state is None:
        for key, value in (checkpoint.get("callbacks") or {}).items():
            if str(key).startswith("L1FilterPruning") and isinstance(value, Mapping):
                state = value
                break
    return dict(state) if state else None


def _example_from_shape(shape: Sequence[int] | None) -> torch.Tensor | None:
    return torch.zeros(*[int(s) for s in shape]) if shape else None


# ---------------------------------------------------------------------------------------------- loading
_MARK = "_l1_filter_pruning_state"  # set on a module once narrowed, so that no callback prunes it again


def _mark(module: nn.Module, state: Mapping[str, Any]) -> None:
    module.__dict__[_MARK] = copy.deepcopy(dict(state))


def _hint_reloading(pl_module: nn.Module) -> None:
    """Tells the user how their own LightningModule reloads the pruned checkpoints (once, at pruning time)."""
    if not isinstance(pl_module, pl.LightningModule):
        return
    cls = type(pl_module)
    if cls.on_load_checkpoint is not pl.LightningModule.on_load_checkpoint:
        return  # the module restores checkpoints its own way (e.g. with restore_pruned_widths)
    rank_zero_warn(
        f"L1FilterPruning: the checkpoints of this run hold narrower layers than a new {cls.__name__} has. "
        "Lightning loads them (trainer.fit/validate/test(ckpt_path=...)) while this callback is in the Trainer; "
        f"to load them anywhere else ({cls.__name__}.load_from_checkpoint, a Trainer without the callback), give "
        f"{cls.__name__} the method `def on_load_checkpoint(self, checkpoint): restore_pruned_widths(self, "
        "checkpoint)` (from l1_filter_pruning import restore_pruned_widths); without it they fail with 'size "
        "mismatch'."
    )


def load_checkpoint_file(path: str | os.PathLike, trust_checkpoint: bool = False) -> Any:
    """``torch.load`` of a checkpoint on the CPU with ``weights_only=True``.

    A file that holds other Python objects than tensors and plain containers is refused with a
    :class:`PruningError` naming the file and the object; ``trust_checkpoint=True`` loads it anyway with
    ``weights_only=False``, which can run arbitrary code from the file: only for files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PruningError(f"L1FilterPruning: the checkpoint {path} does not exist; pass the path of a checkpoint "
                           "saved by a run with this callback.")
    if trust_checkpoint:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"the Python object {found.group(1)}" if found else "a Python object"
        raise PruningError(
            f"L1FilterPruning: {path} holds {what}, which safe loading (torch.load with weights_only=True) "
            "refuses because unpickling it could run code. If you trust this file, pass trust_checkpoint=True "
            "to load it anyway."
        ) from None


def _align_prefix(state: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``state`` with one leading prefix stripped or added so that its keys match ``keys`` (a model's state-dict
    keys): a LightningModule's ``model.``/``net.`` keys fit the plain net, and the other way round."""
    keys = set(keys)
    state = dict(state)
    candidates: list[tuple[str, str]] = [("", "")]
    for k in list(state)[:50]:
        for own in keys:
            if k.endswith("." + own):
                candidates.append(("strip", k[: len(k) - len(own)]))
            elif own.endswith("." + k):
                candidates.append(("add", own[: len(own) - len(k)]))
    best, best_hits = state, sum(k in keys for k in state)
    for how, head in dict.fromkeys(candidates):
        if how == "strip":
            moved = {k[len(head):]: v for k, v in state.items() if k.startswith(head)}
        elif how == "add":
            moved = {head + k: v for k, v in state.items()}
        else:
            continue
        hits = sum(k in keys for k in moved)
        if hits > best_hits:
            best, best_hits = moved, hits
    return best


def _set_shape_attributes(module: nn.Module) -> None:
    """Updates the size attributes of a layer whose tensors were replaced by narrower ones."""
    w = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd) and isinstance(w, torch.Tensor):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if module.transposed:
            module.in_channels, out = int(w.shape[0]), int(w.shape[1])
            module.groups = module.in_channels if depthwise else module.groups
            module.out_channels = out * module.groups
        else:
            module.out_channels = int(w.shape[0])
            module.groups = module.out_channels if depthwise else module.groups
            module.in_channels = int(w.shape[1]) * module.groups
    elif isinstance(module, nn.Linear) and isinstance(w, torch.Tensor):
        module.out_features, module.in_features = int(w.shape[0]), int(w.shape[1])
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        ref = w if isinstance(w, torch.Tensor) else getattr(module, "running_mean", None)
        if isinstance(ref, torch.Tensor):
            module.num_features = int(ref.shape[0])
    elif isinstance(module, nn.GroupNorm) and isinstance(w, torch.Tensor):
        module.num_channels = int(w.shape[0])
    elif isinstance(module, nn.LayerNorm) and isinstance(w, torch.Tensor):
        module.normalized_shape = tuple(int(d) for d in w.shape)
    elif isinstance(module, nn.PReLU) and isinstance(w, torch.Tensor):
        module.num_parameters = int(w.numel())


def _adopt_shapes(model: nn.Module, state: Mapping[str, Any], source: str, advice: str) -> list[str]:
    """Replaces every parameter and buffer of ``model`` that ``state`` holds narrower (same rank, no dimension
    larger) by an uninitialised tensor of the state's shape, so that ``load_state_dict`` fits; returns the names
    of the layers changed. Any wider or otherwise different shape is a :class:`PruningError`."""
    plan: list[tuple[nn.Module, str, str, torch.Tensor, tuple[int, ...]]] = []
    wrong: list[str] = []
    for mname, module in model.named_modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for local, tensor in tensors:
            key = f"{mname}.{local}" if mname else local
            other = state.get(key)
            if not isinstance(other, torch.Tensor) or tuple(other.shape) == tuple(tensor.shape):
                continue
            new = tuple(int(d) for d in other.shape)
            if len(new) != tensor.dim() or any(a > b for a, b in zip(new, tensor.shape)):
                wrong.append(f"{key}: {list(new)} there, {list(tensor.shape)} in the model")
            else:
                plan.append((module, mname, local, tensor, new))
    if wrong:
        raise PruningError(
            f"L1FilterPruning: {source} does not fit {type(model).__name__} even after narrowing its layers ("
            + "; ".join(wrong[:3]) + (f"; {len(wrong)} in all" if len(wrong) > 3 else "") + f"). {advice}"
        )
    changed: dict[str, nn.Module] = {}
    for module, mname, local, tensor, new in plan:
        fresh = torch.empty(new, dtype=tensor.dtype, device=tensor.device)
        if isinstance(tensor, nn.Parameter):
            setattr(module, local, nn.Parameter(fresh, requires_grad=tensor.requires_grad))
        else:
            module.register_buffer(local, fresh)
        changed[mname] = module
    for module in changed.values():
        _set_shape_attributes(module)
    return list(changed)


def restore_pruned_widths(module: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any], *,
                          trust_checkpoint: bool = False) -> bool:
    """Narrows ``module`` in place to the layer widths of a checkpoint written by a pruning run (weights are not
    loaded). Returns True when the checkpoint came from a pruning run, False (and changes nothing) otherwise.

    Call it before the weights are loaded. In a LightningModule, one line makes ``load_from_checkpoint`` and
    every ``Trainer(...).validate/test/fit(ckpt_path=...)`` work, with or without the callback::

        def on_load_checkpoint(self, checkpoint):
            restore_pruned_widths(self, checkpoint)

    Args:
        module: the LightningModule the run used, or the plain net it pruned (keys are matched with or without
            the LightningModule's prefix, e.g. ``model.``).
        checkpoint: the loaded checkpoint dict (what ``on_load_checkpoint`` receives) or its path.
        trust_checkpoint: a path is read with ``torch.load(weights_only=True)``; True allows other Python objects
            in the file (only for files you trust).

    The layers are narrowed from the shapes of the checkpoint's ``state_dict`` (no example input or tracing is
    needed); a checkpoint whose layers do not fit the architecture raises :class:`PruningError`.
    """
    source = "the checkpoint"
    if isinstance(checkpoint, str | os.PathLike):
        source = str(checkpoint)
        checkpoint = load_checkpoint_file(checkpoint, trust_checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise PruningError(f"restore_pruned_widths: expected a checkpoint dict or path, got {type(checkpoint).__name__}")
    state = pruning_state(checkpoint)
    if not state or not state.get("pruned"):
        return False
    advice = "Build the same architecture the pruning run started from."
    weights = checkpoint.get("state_dict")
    if isinstance(weights, Mapping) and weights:
        weights = _align_prefix(weights, module.state_dict().keys())
        _adopt_shapes(module, weights, source, advice)
    else:  # a pruning entry without weights: rebuild from the stored widths (traces the model)
        target = state.get("target", "")
        root = module.get_submodule(target) if target and isinstance(module, pl.LightningModule) else module
        shape = state.get("example_input_shape")
        example = _example_from_shape(shape) if shape else getattr(module, "example_input_array", None)
        _reshape_to_widths(root, state["widths"], example, source)
    _mark(module, {**state, "pruned": True})
    return True


def rebuild_pruned_model(model: nn.Module, checkpoint_or_widths: str | os.PathLike | Mapping[str, Any],
                         example_inputs: Any = None, load_weights: bool = True, strict: bool = True, *,
                         trust_checkpoint: bool = False) -> nn.Module:
    """Reshapes a freshly built (unpruned) model to a pruned checkpoint's widths and loads its weights.

    Args:
        model: the same architecture the pruned run started from: a plain ``nn.Module`` (e.g.
            ``torchvision.models.resnet34()``), or the LightningModule the run used.
        checkpoint_or_widths: a checkpoint path, a loaded Lightning checkpoint dict, or ``{conv name: width}``
            (as :func:`layer_widths` returns).
        example_inputs: inputs to trace the model with; by default zeros of the shape stored in the checkpoint.
        load_weights: also load the checkpoint's ``state_dict`` (the LightningModule's key prefix, e.g.
            ``net.`` or ``model.``, is stripped when ``model`` is the plain net).
        strict: passed to ``load_state_dict``.
        trust_checkpoint: a path is read with ``torch.load(weights_only=True)``; True allows other Python
            objects in the file (only for files you trust).

    Returns ``model``, reshaped in place. Raises :class:`PruningError` when the widths belong to another
    architecture.
    """
    source = "the given widths"
    checkpoint: Mapping[str, Any] | None = None
    if isinstance(checkpoint_or_widths, str | os.PathLike):
        source = str(checkpoint_or_widths)
        checkpoint = load_checkpoint_file(checkpoint_or_widths, trust_checkpoint)
    elif isinstance(checkpoint_or_widths, Mapping) and (
        "state_dict" in checkpoint_or_widths or CHECKPOINT_KEY in checkpoint_or_widths
    ):
        source = "the checkpoint"
        checkpoint = checkpoint_or_widths
    target = ""
    shape = None
    if checkpoint is not None:
        state = pruning_state(checkpoint)
        if state is None or not state.get("pruned"):
            raise PruningError(f"{source} has no L1FilterPruning structure (it was not saved from a pruned run).")
        widths, target, shape = state["widths"], state.get("target", ""), state.get("example_input_shape")
    else:
        widths = dict(checkpoint_or_widths)  # type: ignore[arg-type]
    root = model
    if target and isinstance(model, pl.LightningModule):
        root = model.get_submodule(target)
    if example_inputs is None:
        example_inputs = _example_from_shape(shape)
        if example_inputs is None and isinstance(model, pl.LightningModule):
            example_inputs = model.example_input_array
    _reshape_to_widths(root, widths, example_inputs, source)
    if load_weights and checkpoint is not None and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
        if root is model and target:
            prefix = target + "."
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        model.load_state_dict(state_dict, strict=strict)
    return model


# ---------------------------------------------------------------------------------------------- callback
class L1FilterPruning(pl.Callback):
    """Removes the smallest-L1 filters of the configured conv layers (Li et al., ICLR 2017).

    Args:
        preset: one of :data:`PRESETS` (the paper's Table 1 rows: ``vgg16_a``, ``resnet56_a``, ``resnet56_b``,
            ``resnet110_a``, ``resnet110_b``, ``resnet34_a``, ``resnet34_b``, ``resnet34_c``); ``ratios`` and
            ``skip`` add to it.
        ratios: ``{glob pattern on layer names | paper layer number: ratio}``, ratios in [0, 1).
        skip: paper layer numbers or glob patterns left unpruned.
        ranking: ``independent`` (score every layer on the unpruned weights; the default) or ``greedy``.
        coupled: allow layers whose filters are tied to other layers' (residual streams); the whole group is
            ranked by the named layer's filters (ResNet-34-C).
        prune_at_epoch: ``None`` prunes once in ``setup`` (from the weights the model holds then, as the
            paper does); an integer prunes at the start of that training epoch and rebuilds the optimizers.
        target: dotted name of the submodule to prune; default ``net`` or ``model`` when the LightningModule
            has such an ``nn.Module`` attribute, else the LightningModule itself.
        example_input_shape: shape of the zeros used to trace the model; default: the LightningModule's
            ``example_input_array``.
    """

    def __init__(
        self,
        preset: str | None = None,
        ratios: dict[str, float] | None = None,
        skip: list[int | str] | None = None,
        ranking: Ranking = "independent",
        coupled: bool | None = None,
        prune_at_epoch: int | None = None,
        target: str | None = None,
        example_input_shape: list[int] | None = None,
    ) -> None:
        super().__init__()
        if preset is not None and preset not in PRESETS:
            close = difflib.get_close_matches(str(preset), list(PRESETS), n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise PruningError(f"L1FilterPruning: unknown preset {preset!r}.{hint} Presets: {', '.join(PRESETS)}")
        base = PRESETS.get(preset or "", {})
        self.preset = preset
        self.ratios: dict[str, float] = {**base.get("ratios", {}), **{str(k): v for k, v in (ratios or {}).items()}}
        self.skip: list[int | str] = [*base.get("skip", []), *(skip or [])]
        for key, ratio in self.ratios.items():
            _check_ratio(ratio, f"the ratio for {key!r}")
        if not self.ratios:
            raise PruningError(
                "L1FilterPruning: nothing to prune; give a preset or ratios (e.g. {'layer1.*.conv1': 0.5})")
        if ranking not in ("independent", "greedy"):
            raise PruningError(f"L1FilterPruning: ranking must be 'independent' or 'greedy', got {ranking!r}")
        if prune_at_epoch is not None and (isinstance(prune_at_epoch, bool) or int(prune_at_epoch) < 0):
            raise PruningError(f"L1FilterPruning: prune_at_epoch must be None or an epoch >= 0, got {prune_at_epoch!r}")
        self.ranking = ranking
        self.coupled = bool(base.get("coupled", False)) if coupled is None else bool(coupled)
        self.prune_at_epoch = prune_at_epoch
        self.target = target
        self.example_input_shape = list(example_input_shape) if example_input_shape else None
        self._layers = base.get("layers")
        self.state: dict[str, Any] = {"version": STATE_VERSION, "pruned": False}
        self._load_hook: Any = None
        self._trainer_ref: Any = None

    @property
    def state_key(self) -> str:
        # the arguments that tell two instances apart (e.g. two targets in one Trainer); checkpoints written under
        # the plain class name still restore through Lightning's legacy-key fallback
        return self._generate_state_key(target=self.target, preset=self.preset, ratios=self.ratios,
                                        skip=self.skip)

    # ---- helpers
    @property
    def pruned(self) -> bool:
        return bool(self.state.get("pruned"))

    def _root(self, pl_module: nn.Module) -> tuple[str, nn.Module]:
        if self.target is not None:
            if self.target == "":
                return "", pl_module
            try:
                return self.target, pl_module.get_submodule(self.target)
            except AttributeError:
                raise PruningError(f"L1FilterPruning: target {self.target!r} is not a submodule of "
                                   f"{type(pl_module).__name__}") from None
        for name in ("net", "model"):
            if isinstance(getattr(pl_module, name, None), nn.Module):
                return name, getattr(pl_module, name)
        return "", pl_module

    def _example(self, pl_module: nn.Module) -> Any:
        if self.example_input_shape:
            return _example_from_shape(self.example_input_shape)
        example = getattr(pl_module, "example_input_array", None)
        if example is None:
            raise PruningError(
                f"L1FilterPruning: {type(pl_module).__name__} has no example_input_array; set it in the module's "
                "__init__ or give the callback example_input_shape (e.g. [1, 3, 32, 32])."
            )
        return example

    def _check_preset(self, root: nn.Module) -> None:
        if self.preset and self._layers is not None:
            n = len(numbered_conv_layers(root))
            if n != self._layers:
                raise PruningError(
                    f"L1FilterPruning: preset {self.preset!r} is written for a net with {self._layers} conv layers "
                    f"(paper numbering) but {type(root).__name__} has {n}; use the preset of this architecture "
                    f"({', '.join(PRESETS)}) or give ratios and skip yourself."
                )

    def _record(self, pl_module: nn.Module, target: str, root: nn.Module, example: Any,
                removed: dict[str, list[int]] | None) -> None:
        shape = list(example.shape) if isinstance(example, torch.Tensor) else None
        self.state = {
            "version": STATE_VERSION,
            "pruned": True,
            "target": target,
            "example_input_shape": shape,
            "widths": layer_widths(root),
            "removed": removed if removed is not None else self.state.get("removed", {}),
            "config": {"preset": self.preset, "ratios": dict(self.ratios), "skip": list(self.skip),
                       "ranking": self.ranking, "coupled": self.coupled},
        }
        _mark(pl_module, self.state)
        self._update_hparams(pl_module, root)

    @staticmethod
    def _update_hparams(pl_module: nn.Module, root: nn.Module) -> None:
        """Writes the net's pruned widths into ``hparams.net_kwargs`` (load_from_checkpoint rebuilds them)."""
        hparams = getattr(pl_module, "hparams", None)
        fn = getattr(root, "structure_kwargs", None)
        if hparams is None or "net_kwargs" not in hparams or root is pl_module:
            return
        kwargs = fn() if callable(fn) else None
        if kwargs:
            hparams["net_kwargs"] = {**(hparams["net_kwargs"] or {}), **kwargs}

    @staticmethod
    def _hparams_already_pruned(pl_module: nn.Module, root: nn.Module) -> bool:
        """True when the net was built from explicit pruned widths (e.g. hparams re-read from a checkpoint)."""
        hparams = getattr(pl_module, "hparams", None)
        fn = getattr(root, "structure_kwargs", None)
        if hparams is None or "net_kwargs" not in hparams or not callable(fn):
            return False
        net_kwargs = hparams["net_kwargs"] or {}
        kwargs = fn() or {}
        return bool(kwargs) and all(net_kwargs.get(k) is not None for k in kwargs)

    def _restore(self, pl_module: nn.Module, state: Mapping[str, Any], source: str) -> None:
        target = state.get("target", "")
        try:
            root = pl_module.get_submodule(target) if target else pl_module
        except AttributeError:
            raise PruningError(f"The pruned structure in {source} was saved for a module with a {target!r} "
                               f"submodule; {type(pl_module).__name__} has none.") from None
        shape = state.get("example_input_shape")
        example = _example_from_shape(shape) if shape else self._example(pl_module)
        _reshape_to_widths(root, state["widths"], example, source)
        self.state = {**copy.deepcopy(dict(state)), "pruned": True}
        _mark(pl_module, self.state)
        self._update_hparams(pl_module, root)

    # ---- protocols of this project's entry point (optional elsewhere)
    def prune(self, pl_module: nn.Module) -> dict[str, list[int]]:
        """Prunes ``pl_module`` in place by the configured rule (no-op when it is already pruned)."""
        if self.pruned:
            return self.state.get("removed", {})
        target, root = self._root(pl_module)
        self._check_preset(root)
        example = self._example(pl_module)
        before = sum(p.numel() for p in root.parameters())
        removed = prune_model(root, self.ratios, example, self.skip, self.ranking, self.coupled, verify=False)
        self._record(pl_module, target, root, example, removed)
        _hint_reloading(pl_module)
        after = sum(p.numel() for p in root.parameters())
        coupled = " (and the layers coupled to them)" if self.coupled else ""
        rank_zero_info(
            f"L1FilterPruning: removed the smallest-L1 filters of {len(removed)} conv layers{coupled}"
            f"{f' (preset {self.preset})' if self.preset else ''}; parameters {before:,} -> {after:,}."
        )
        return removed

    def apply_structure(self, pl_module: nn.Module) -> None:
        """Structure-only use (e.g. counting MACs): the pruned architecture (pruned by the rule on whatever weights exist)."""
        if not self.pruned and not self._built_pruned(pl_module):
            self.prune(pl_module)

    def _built_pruned(self, pl_module: nn.Module) -> bool:
        """Marks the module as pruned (and returns True) when its net was built from explicit widths."""
        target, root = self._root(pl_module)
        if not self._hparams_already_pruned(pl_module, root):
            return False
        rank_zero_warn(
            f"L1FilterPruning: {type(pl_module).__name__}.hparams.net_kwargs already holds explicit widths "
            f"({', '.join(root.structure_kwargs())}), so the net is taken as already pruned and is not pruned "
            "again.",
        )
        self._record(pl_module, target, root, self._example(pl_module), None)
        return True

    def restore_structure(self, pl_module: nn.Module, checkpoint: Mapping[str, Any]) -> None:
        """Rebuilds the narrow layers of a pruned checkpoint before its weights are copied into ``pl_module``
        outside Lightning's own loading (no-op for an unpruned checkpoint, which this callback then prunes in
        ``setup``)."""
        state = pruning_state(checkpoint)
        if state and state.get("pruned"):
            self._restore(pl_module, state, "the checkpoint being loaded")

    # ---- Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer_ref = weakref.ref(trainer)
        self._watch_loading(pl_module)
        if self.pruned:
            return
        marked = getattr(pl_module, _MARK, None)
        if marked and marked.get("pruned"):  # narrowed before (restore_pruned_widths, another fit): never twice
            self.state = copy.deepcopy(dict(marked))
            return
        if self._built_pruned(pl_module):
            return
        if self.prune_at_epoch is None:
            self.prune(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._load_hook is not None:
            self._load_hook.remove()
            self._load_hook = None

    def _watch_loading(self, pl_module: nn.Module) -> None:
        """Every checkpoint Lightning loads into ``pl_module`` (``ckpt_path=``) first narrows the layers to the
        checkpoint's widths: the structure is restored before the weights, with public torch/Lightning APIs."""
        if self._load_hook is None:
            self._load_hook = pl_module.register_load_state_dict_pre_hook(self._before_load_state_dict)

    def _before_load_state_dict(self, module: nn.Module, state_dict: Mapping[str, Any], prefix: str,
                                *args: Any) -> None:
        if prefix:  # only the call on the LightningModule itself
            return
        target = self.state.get("target") if self.pruned else None
        if target is None:
            target, root = self._root(module)
        else:
            root = module.get_submodule(target) if target else module
        head = f"{target}." if target else ""
        sub = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        source = f"the checkpoint {path}" if path else "the state dict being loaded"
        advice = (
            "It was not saved by a run with this pruning. To prune a trained model, load its weights into the "
            "model before calling fit (model.load_state_dict(...)) and fit without ckpt_path; to resume or "
            "evaluate a pruning run, pass one of that run's checkpoints."
        )
        if _adopt_shapes(root, sub, source, advice):
            self._record(module, target, root, None, {})
            rank_zero_info(f"L1FilterPruning: narrowed {type(root).__name__} to the pruned widths of {source}.")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned or self.prune_at_epoch is None or trainer.current_epoch < self.prune_at_epoch:
            return
        self.prune(pl_module)
        _rebuild_optimizers(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.state = copy.deepcopy(dict(state_dict))

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """A state saved under another key (the old constant ``"L1FilterPruning"``) is taken from the
        checkpoint's pruning entry when this is the only instance in the Trainer."""
        if self.state_key in (checkpoint.get("callbacks") or {}):
            return  # Lightning hands it to load_state_dict
        if sum(type(c).__name__ == type(self).__name__ for c in trainer.callbacks) == 1:
            state = pruning_state(checkpoint)
            if state:
                self.load_state_dict(state)


def _rebuild_optimizers(trainer: pl.Trainer) -> None:
    """New optimizers (and DDP wrapper) for the pruned parameters; learning rates and scheduler progress kept."""
    strategy = trainer.strategy
    old_lrs = [[g["lr"] for g in opt.param_groups] for opt in strategy.optimizers]
    old_schedulers = [cfg.scheduler.state_dict() for cfg in strategy.lr_scheduler_configs]
    module = strategy.lightning_module
    if strategy.model is not module and hasattr(strategy, "configure_ddp"):
        # DistributedDataParallel holds the old parameters in its buckets: wrap the pruned module anew (every
        # rank pruned the same filters from the same weights, so the broadcast at wrapping changes nothing)
        strategy.model = module
        strategy.configure_ddp()
    strategy.setup_optimizers(trainer)  # new optimizers hold no state yet: nothing to move to the device
    for cfg, state in zip(strategy.lr_scheduler_configs, old_schedulers):
        cfg.scheduler.load_state_dict(state)
    for opt, lrs in zip(strategy.optimizers, old_lrs):
        if len(opt.param_groups) == len(lrs):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
