"""Deployable artifacts from a trained model: ONNX or ``torch.export`` programs, checked against eager PyTorch.

Three entry points, from the most to the least wired:

* :func:`export_checkpoint` ``(pl_module, callbacks, ckpt_path, fmt)``: loads a Lightning checkpoint safely
  (``torch.load(weights_only=True)``), lets the module and the structural callbacks rebuild their structure first
  (every object with a ``restore_structure(pl_module, checkpoint)`` method, e.g. a pruning callback rebuilding the
  narrow layers), loads the weights, applies the quantized weights of a quantization callback (any callback with
  ``quantized_weights()`` and ``layers``, e.g. ``QuantizedTraining``), then exports and verifies the module's
  ``forward``. Default output: ``<checkpoint's run dir>/export/model.<onnx|pt2>``.
* :func:`export_module` ``(model, path, fmt, example_input, quantized=...)``: the same for a model already in
  memory (a ``LightningModule`` or any ``nn.Module``).
* :func:`load_packed` / :func:`load_packed_into`: the loader of the packed low-bit format (below).

Every export is verified: the artifact is reloaded (onnxruntime's CPU provider for ONNX, ``torch.export.load``
for ``.pt2``) and run on a batch of another size than the traced one (the batch dimension is exported
dynamic when the exporter can); the largest absolute difference to eager PyTorch, divided by the largest
absolute eager output, must stay below ``tolerance`` (default ``DEFAULT_TOLERANCE`` = 1e-4), else
:class:`ExportError` is raised. The summary dict gives the path, format, stored bytes, both errors, the
tolerance and notes.

Quantized weights (what is true of the artifacts, stated in the summary's ``notes``):

* ONNX: every quantized layer's weight is stored as an int8 initializer of its grid codes with a float scale
  and zero point 0, read through ``DequantizeLinear`` (weight-only QDQ; binary weights {-d, +d} are codes
  {-1, +1} with scale d, ternary and k-bit grids codes -q..q with scale = grid step; the dequantized values
  are bit-identical to the eager quantized weights). **Integers are stored, execution is float**: onnxruntime
  runs float kernels on the dequantized weights. It does not fold the constant ``DequantizeLinear`` away: in
  the optimized graphs read so far (the 8-bit ResNet-20 students of studies/composed_glyphs.yaml) every
  ``DequantizeLinear`` stays, with a ``Cast`` and ``Expand`` around it and the BatchNorm after it left unfused,
  and runs at every call, so a weight-only QDQ model can be slower than the same net exported in float. This
  is checked, not assumed: :func:`onnxruntime_optimized_ops` reads the runtime's optimized graph; the summary's
  ``integer_execution`` is True only where integer kernels (``QLinearConv``, ``ConvInteger``, ``MatMulInteger``,
  ...) are in it, and ``dequantize_nodes_in_optimized_graph`` counts the ``DequantizeLinear`` nodes left.
  Integer execution would need static QDQ with calibrated activation scales, which this module does not
  produce.
* ``.pt2``: the program holds the quantized weights as float32 values on the grid (no integer storage).
* Binary and ternary nets additionally get the packed format ``<out>.packed.pt`` (1 bit per binary weight, 2 per
  ternary weight, the quantization callback's ``quantized_training/v1`` dict, saved with ``torch.save``).
  **No runtime executes packed 1- or 2-bit weights natively**: neither onnxruntime (no 1/2-bit weight types in
  its conv/matmul kernels) nor PyTorch (no binary/ternary conv kernels). The packed file is a storage format:
  :func:`load_packed` unpacks it into a float state dict for the plain model (torch only; this function can
  be copied alone), after which it runs as any float model, or is exported again.

The packed format ``quantized_training/v1`` (a dict): ``order`` (state-dict keys in order); ``packed`` (one
uint8 tensor of all quantized weights' codes, ``bits`` per weight, most significant bit first, each layer
starting on a byte); ``quantized`` (rows ``[key, shape, dtype, byte_offset, byte_count, grid]`` with ``grid``
``{step, q_min, q_max, offset, bits}``: the weight is ``step * (code + q_min + offset)``); ``tensors`` (rows
``[key, shape, dtype, start, numel]`` of the other tensors) and ``blobs`` (one flat tensor per dtype holding
them).

Needs the optional packages of the deploy extra: ``pip install -e ".[deploy]"`` (onnx, onnxruntime,
onnxscript). They are imported only when an export runs.

Example::

    from nets.export import export_module
    summary = export_module(model, "model.onnx", "onnx", example_input=torch.zeros(1, 3, 32, 32))
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMATS = ("onnx", "pt2")
DEPLOY_INSTALL = 'pip install -e ".[deploy]"'
DEFAULT_TOLERANCE = 1e-4
PACKED_FORMAT = "quantized_training/v1"
# onnxruntime kernels that compute with integers (what an optimized graph must contain before integer execution
# is claimed)
INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "QGemm",
    "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul", "QAttention", "MatMulNBits", "QLinearGlobalAveragePool",
})
# checkpoint entries written by structural callbacks, and the callback to add when exporting such a checkpoint
_STRUCTURAL = {
    "L1FilterPruning": ("l1_filter_pruning", "L1FilterPruning (callbacks/l1_filter_pruning.py), with the "
                        "settings of the run that pruned the model"),
    "QuantizedTraining": (None, "QuantizedTraining (callbacks/quantized_training.py), with the settings of the "
                          "run that trained the model"),
}


class ExportError(ValueError):
    """An export that cannot be done or failed its check (the message says why and what to do)."""

    user_facing = True


def require_deploy(*names: str) -> list[Any]:
    """Import the optional deploy packages (``onnx``, ``onnxruntime``, ``onnxscript``) or explain how to get them."""
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except ImportError as err:
            raise ExportError(
                f"Exporting needs the optional package {name!r}, which is not installed ({err}). Install the "
                f"deploy extra: {DEPLOY_INSTALL} (onnx, onnxruntime, onnxscript)."
            ) from None
    return mods


# ---------------------------------------------------------------------------------------------- inputs and outputs
def as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, list | tuple) else (x,)


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested tuple/list/dict) output, in order (what the exporters flatten them to)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def repeat_batch(x: Any, batch: int) -> Any:
    """``x`` (a tensor or a tuple of tensors) with its first sample repeated to ``batch`` samples."""
    if isinstance(x, torch.Tensor):
        return x[:1].expand(batch, *x.shape[1:]).contiguous()
    if isinstance(x, list | tuple):
        return type(x)(repeat_batch(v, batch) for v in x)
    return x


def random_like_batch(x: Any, batch: int, seed: int = 0) -> Any:
    """A random batch shaped like ``x`` with ``batch`` samples: normal floats; integers (token ids) drawn in
    ``[0, max(x) + 1)`` (at least {0, 1}), so every id is one the example already uses or 1."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(x, torch.Tensor):
        shape = (batch, *x.shape[1:])
        if x.is_floating_point():
            return torch.randn(shape, generator=g).to(x.dtype)
        if x.dtype == torch.bool:
            return torch.ones(shape, dtype=torch.bool)
        high = max(2, int(x.max()) + 1) if x.numel() else 2
        return torch.randint(0, high, shape, generator=g).to(x.dtype)
    if isinstance(x, list | tuple):
        return type(x)(random_like_batch(v, batch, seed + i + 1) for i, v in enumerate(x))
    return x


def _batch_size(x: Any) -> int:
    for t in as_tuple(x):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    raise ExportError("export: cannot find the batch dimension of the example input (give a tensor or a tuple of "
                      "tensors whose first dimension is the batch)")


def relative_error(artifact: Sequence[torch.Tensor], eager: Sequence[torch.Tensor]) -> tuple[float, float]:
    """(max |a - e|, max |a - e| / max |e|) over all outputs; shapes must agree."""
    if len(artifact) != len(eager):
        raise ExportError(f"export check: the artifact returns {len(artifact)} outputs, eager PyTorch {len(eager)}")
    max_abs, scale = 0.0, 0.0
    for a, e in zip(artifact, eager, strict=True):
        a, e = torch.as_tensor(a).float(), e.detach().float().cpu()
        if tuple(a.shape) != tuple(e.shape):
            raise ExportError(f"export check: output shape {tuple(a.shape)} differs from eager {tuple(e.shape)}")
        if e.numel():
            max_abs = max(max_abs, float((a - e).abs().max()))
            scale = max(scale, float(e.abs().max()))
    return max_abs, max_abs / max(scale, 1e-12)


# ---------------------------------------------------------------------------------------------- quantized weights
@dataclass
class QuantizedWeight:
    """One quantized layer's weight: the parameter's state-dict ``key``, its int8 ``codes`` and ``scale``
    (weight = codes * scale exactly) and the grid it came from."""

    key: str
    codes: torch.Tensor
    scale: float
    grid: str
    bits: int


def _grid_kind(grid: Any) -> str:
    if grid.offset == 0.5 and grid.q_max - grid.q_min == 1:
        return "binary"
    if grid.q_min == -1 and grid.q_max == 1:
        return "ternary"
    return "uniform"


def int8_codes(weight: torch.Tensor, grid: Any) -> tuple[torch.Tensor, float]:
    """Integer codes and scale with ``codes * scale == weight`` for a weight already on ``grid`` (the grid of
    ``QuantizedTraining``: values ``step * (q + offset)``): binary {-d, +d} -> {-1, +1} * d, otherwise q * step."""
    w = weight.detach().float().cpu()
    if grid.offset == 0.5:
        scale = grid.step * 0.5
        codes = torch.where(w >= 0, 1, -1).to(torch.int8)
    else:
        scale = float(grid.step)
        codes = torch.round(w / scale).clamp_(-127, 127).to(torch.int8)
    if not torch.equal(codes.float() * torch.tensor(scale, dtype=torch.float32), w):
        raise ExportError("export: a quantized weight is not on its grid (codes * scale differs from the weight); "
                          "the quantization callback must have projected the weights first")
    return codes, float(torch.tensor(scale, dtype=torch.float32))


def apply_quantized_weights(pl_module: nn.Module, callbacks: Iterable[Any]) -> tuple[list[QuantizedWeight],
                                                                                     dict | None, list[str]]:
    """Put the evaluation-time quantized weights of a quantization callback into ``pl_module`` (in place).

    The callback (duck-typed as ``QuantizedTraining``: ``attach``, ``quantized_weights``, ``layers``,
    ``export_state_dict``, ``detach``) is attached, its packed export taken, its quantized weights (Q_d of
    BinaryConnect's float buffers, or R/SR's stored weights) copied into the layers, and it is detached, so the
    module computes exactly what validation computes, without hooks. Returns the weights, the packed dict (binary
    and ternary grids only, else None) and notes.
    """
    quant = [cb for cb in callbacks if callable(getattr(cb, "quantized_weights", None))
             and callable(getattr(cb, "attach", None)) and hasattr(cb, "layers")]
    if not quant:
        return [], None, []
    if len(quant) > 1:
        names = ", ".join(type(c).__name__ for c in quant)
        raise ExportError(f"export: {len(quant)} quantization callbacks given ({names}); a model is exported with one")
    cb = quant[0]
    cb.attach(pl_module)
    grids = {name: layer.grid for name, layer in cb.layers.items()}
    kinds = {_grid_kind(g) for g in grids.values()}
    packed = cb.export_state_dict(pl_module) if kinds <= {"binary", "ternary"} else None
    weights = cb.quantized_weights()
    cb.detach()
    out = []
    with torch.no_grad():
        for name, w in weights.items():
            module = pl_module.get_submodule(name)
            module.weight.copy_(w)
            codes, scale = int8_codes(module.weight, grids[name])
            out.append(QuantizedWeight(f"{name}.weight" if name else "weight", codes, scale,
                                       _grid_kind(grids[name]), grids[name].bits))
    kind = "/".join(sorted(kinds))
    notes = [f"{len(out)} layers with {kind} quantized weights ({type(cb).__name__}), exported at the weights "
             "validation uses"]
    return out, packed, notes


# ---------------------------------------------------------------------------------------------- packed format loader
def load_packed(source: str | os.PathLike | dict[str, Any]) -> dict[str, torch.Tensor]:
    """A float state dict from the packed low-bit format (see the module docstring), torch only.

    ``source``: the ``.packed.pt`` path (read with ``torch.load(weights_only=True)``) or the dict. The unpacked
    weights equal the quantized weights the model was evaluated with.
    """
    exported = source if isinstance(source, dict) else torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(exported, dict) or exported.get("format") != PACKED_FORMAT:
        raise ExportError(f"load_packed: {source if not isinstance(source, dict) else 'the dict'} is not a "
                          f"{PACKED_FORMAT} packed export (a dict with format={PACKED_FORMAT!r})")
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype, start, numel in exported["tensors"]:
        state[key] = exported["blobs"][dtype][start:start + numel].reshape(shape).clone()
    stream = exported["packed"].reshape(-1).to(torch.uint8)
    for key, shape, dtype, start, nbytes, grid in exported["quantized"]:
        bits, numel = int(grid["bits"]), math.prod(shape)
        chunk = stream[start:start + nbytes]
        bitstream = ((chunk[:, None] >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).reshape(-1)
        if bitstream.numel() < numel * bits:
            raise ExportError(f"load_packed: {key} needs {numel * bits} bits, the file holds {bitstream.numel()}")
        place = 2 ** torch.arange(bits - 1, -1, -1, dtype=torch.int64)
        codes = (bitstream[:numel * bits].reshape(numel, bits).to(torch.int64) * place).sum(dim=1)
        q = codes.to(getattr(torch, dtype)) + grid["q_min"]
        state[key] = (q + grid["offset"]).mul_(grid["step"]).reshape(shape)
    return {k: state[k] for k in exported["order"]}


def load_packed_into(model: nn.Module, source: str | os.PathLike | dict[str, Any], strict: bool = True,
                     prefix: str = "") -> nn.Module:
    """Load a packed export into ``model``; ``prefix`` is stripped from the keys (e.g. ``"net."`` to load a
    LightningModule's export into its plain net)."""
    state = load_packed(source)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=strict)
    return model


# ---------------------------------------------------------------------------------------------- exporting
def _dynamic_shapes(example: tuple) -> tuple:
    batch = torch.export.Dim("batch", min=1, max=4096)
    return tuple({0: batch} if isinstance(t, torch.Tensor) and t.dim() > 0 else None for t in example)


def _quiet():
    """Silence the exporters' progress prints and deprecation warnings (errors still raise)."""
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _first_line(err: BaseException) -> str:
    """``Type: first line`` of the innermost cause (the exporters wrap the error that names the operator)."""
    seen = 0
    while (err.__cause__ or err.__context__) is not None and seen < 8:
        err, seen = err.__cause__ or err.__context__, seen + 1
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:400]


def _export_program(model: nn.Module, example: tuple, dynamic: bool) -> Any:
    with _quiet():
        return torch.export.export(model, example, dynamic_shapes=_dynamic_shapes(example) if dynamic else None,
                                   strict=False)


def _onnx_program(model: nn.Module, example: tuple, dynamic: bool, optimize: bool = True) -> Any:
    with _quiet():
        return torch.onnx.export(model, example, dynamo=True, verbose=False, optimize=optimize,
                                 dynamic_shapes=_dynamic_shapes(example) if dynamic else None)


def _onnx_program_unoptimized(model: nn.Module, example: tuple, dynamic: bool) -> Any:
    # the exporter's optimizer folds BatchNorm into the preceding conv's weight under the weight's own name, so
    # the stored weight would leave the grid; the BatchNorm then stays a separate node (onnxruntime does not fold
    # it into a conv whose weight comes out of a DequantizeLinear)
    return _onnx_program(model, example, dynamic, optimize=False)


def _trace(fn: Any, model: nn.Module, example: tuple, notes: list[str]) -> tuple[Any, bool]:
    """Export with a dynamic batch dimension, else with the example's static shape (noted), else raise."""
    try:
        return fn(model, example, True), True
    except Exception as dyn_err:  # noqa: BLE001 - the exporters raise many kinds; retried, then reported
        try:
            program = fn(model, example, False)
        except Exception as err:  # noqa: BLE001
            raise ExportError(
                f"export: the exporter cannot trace {type(model).__name__} ({_first_line(err)}). With a dynamic "
                f"batch it failed with: {_first_line(dyn_err)}. An operator or Python control flow on tensor "
                "values that the exporter lacks is the usual cause; the message names it."
            ) from err
        notes.append(f"static batch {_batch_size(example)}: the batch dimension could not be exported dynamic "
                     f"({_first_line(dyn_err)[:160]})")
        return program, False


def _add_qdq(model_proto: Any, weights: list[QuantizedWeight]) -> int:
    """Replace each quantized weight's float initializer by int8 codes + scale + DequantizeLinear (in place)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    inits = {init.name: init for init in graph.initializer}
    replaced: set[str] = set()
    new_nodes = []
    for qw in weights:
        old = inits.get(qw.key)
        if old is None or list(old.dims) != list(qw.codes.shape) or old.data_type != TensorProto.FLOAT:
            continue
        value = torch.from_numpy(numpy_helper.to_array(old).copy())
        if not torch.equal(value, qw.codes.float() * torch.tensor(qw.scale, dtype=torch.float32)):
            continue  # the exporter changed this weight (e.g. folded a normalisation into it): left float
        codes = numpy_helper.from_array(qw.codes.numpy(), f"{qw.key}__int8")
        scale = helper.make_tensor(f"{qw.key}__scale", TensorProto.FLOAT, [], [qw.scale])
        zero = helper.make_tensor(f"{qw.key}__zero_point", TensorProto.INT8, [], [0])
        graph.initializer.extend([codes, scale, zero])
        new_nodes.append(helper.make_node("DequantizeLinear", [codes.name, scale.name, zero.name], [qw.key],
                                          name=f"{qw.key}__dequantize"))
        replaced.add(qw.key)
    keep = [init for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for i, node in enumerate(new_nodes):
        graph.node.insert(i, node)
    onnx.checker.check_model(model_proto)
    return len(replaced)


def onnxruntime_session(path: str | os.PathLike, threads: int = 1, optimized_path: str | None = None) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (1 inter-op thread), full optimizations."""
    (ort,) = require_deploy("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if optimized_path:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnxruntime_optimized_ops(path: str | os.PathLike) -> dict[str, int]:
    """Op types (with counts) of onnxruntime's optimized graph of ``path`` (what the CPU session runs)."""
    (onnx,) = require_deploy("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        opt = os.path.join(tmp, "optimized.onnx")
        onnxruntime_session(path, 1, opt)
        graph = onnx.load(opt, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def onnxruntime_integer_ops(path: str | os.PathLike) -> dict[str, int]:
    """Op types (with counts) of onnxruntime's optimized graph of ``path`` that compute with integers."""
    return {op: n for op, n in onnxruntime_optimized_ops(path).items() if op in INTEGER_OPS}


def run_onnx(session: Any, inputs: tuple) -> list[torch.Tensor]:
    names = [i.name for i in session.get_inputs()]
    arrays = [t.detach().cpu().numpy() for t in inputs if isinstance(t, torch.Tensor)]
    if len(names) != len(arrays):
        raise ExportError(f"export check: the ONNX model takes {len(names)} inputs ({names}), the example has "
                          f"{len(arrays)} tensors")
    return [torch.from_numpy(a) for a in session.run(None, dict(zip(names, arrays, strict=True)))]


def _stored_bytes(path: Path) -> int:
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")  # ONNX external data, when the exporter writes it
    if data.exists():
        total += data.stat().st_size
    return total


def _check_out(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ExportError(f"export: the output {path} already exists; choose another output path, delete it, or "
                          "pass overwrite=True (--overwrite on the command line) to replace it")
    if path.exists() and path.is_dir():
        raise ExportError(f"export: the output {path} is a directory; give a file path")


def export_module(model: nn.Module, path: str | os.PathLike, fmt: str = "onnx", example_input: Any = None,
                  quantized: Sequence[QuantizedWeight] = (), tolerance: float = DEFAULT_TOLERANCE,
                  overwrite: bool = False, check_batch: int | None = None, notes: Sequence[str] = ()) -> dict:
    """Export ``model``'s ``forward`` (eval mode) to ``path`` as ``fmt`` and verify it against eager PyTorch.

    Args:
        model: any ``nn.Module`` (a LightningModule included); it is copied, put in eval mode and converted to
            float32 for the export (the caller's model is left as it was).
        example_input: a tensor or tuple of tensors (default ``model.example_input_array``); traced with its
            first sample repeated to batch 2, checked on a random batch of ``check_batch`` (default 3).
        quantized: weights to store as int8 + DequantizeLinear in ONNX (see :func:`apply_quantized_weights`).
        tolerance: largest allowed max |artifact - eager| / max |eager| on the check batch.
    """
    if fmt not in FORMATS:
        raise ExportError(f"export: unsupported format {fmt!r}; choose one of {', '.join(FORMATS)} (ONNX for "
                          "onnxruntime and other ONNX runtimes, pt2 for a torch.export program)")
    path = Path(path)
    _check_out(path, overwrite)
    if fmt == "onnx":
        require_deploy("onnx", "onnxruntime", "onnxscript")
    if example_input is None:
        example_input = getattr(model, "example_input_array", None)
        if example_input is None:
            raise ExportError(f"export: {type(model).__name__} has no example_input_array; pass example_input (a "
                              "tensor or tuple of tensors of one batch)")
    was_training = model.training
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        trainer = model.__dict__.get("_trainer")  # a LightningModule's trainer is not copied
        if trainer is not None:
            model._trainer = None
        try:
            copied = copy.deepcopy(model).float()
        finally:
            if trainer is not None:
                model._trainer = trainer
        model = copied
        was_training = None
    try:
        return _export_eval(model.eval(), path, fmt, example_input, quantized, tolerance, notes, check_batch)
    finally:
        if was_training is not None:
            model.train(was_training)


def _export_eval(model: nn.Module, path: Path, fmt: str, example_input: Any, quantized: Sequence[QuantizedWeight],
                 tolerance: float, notes: Sequence[str], check_batch: int | None) -> dict:
    example = as_tuple(example_input)
    device = next(iter(model.parameters()), torch.empty(0)).device
    example = tuple((t.float() if t.is_floating_point() else t).to(device) if isinstance(t, torch.Tensor) else t
                    for t in example)
    trace_example = repeat_batch(example, 2)
    notes = list(notes)
    with torch.no_grad():
        if fmt == "onnx":
            program, dynamic = _trace(_onnx_program_unoptimized if quantized else _onnx_program, model,
                                      trace_example, notes)
        else:
            program, dynamic = _trace(_export_program, model, trace_example, notes)
    check = random_like_batch(tuple(t.cpu() if isinstance(t, torch.Tensor) else t for t in example),
                              (check_batch or 3) if dynamic else 2)
    check = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in check)
    with torch.no_grad():
        eager = flatten_outputs(model(*check))
    path.parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"path": str(path), "format": fmt, "dynamic_batch": dynamic,
                               "check_batch": _batch_size(check), "tolerance": tolerance}
    if fmt == "onnx":
        proto = program.model_proto
        for node in proto.graph.node:  # the exporter's per-node source locations: not needed to run the model
            del node.metadata_props[:]
        n_int8 = _add_qdq(proto, list(quantized)) if quantized else 0
        if quantized and n_int8 < len(quantized):
            missing = sorted({q.key for q in quantized} - {i.name for i in proto.graph.initializer if
                                                           i.name.endswith("__int8")} - set())
            notes.append(f"{len(quantized) - n_int8} quantized weights were not found as ONNX initializers (the "
                         f"exporter folded them into other constants) and are stored as float: {missing[:4]}")
        import onnx

        tmp = path.with_name(".tmp-" + path.name)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
        session = onnxruntime_session(path, threads=1)
        artifact = run_onnx(session, check)
        import onnxruntime

        summary["runtime"] = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
        summary["int8_weights"] = n_int8
        optimized = onnxruntime_optimized_ops(path)
        integer_ops = {op: n for op, n in optimized.items() if op in INTEGER_OPS}
        summary["integer_ops_in_optimized_graph"] = integer_ops
        summary["integer_execution"] = bool(integer_ops)
        summary["dequantize_nodes_in_optimized_graph"] = optimized.get("DequantizeLinear", 0)
        if n_int8:
            left = optimized.get("DequantizeLinear", 0)
            how = ("integer kernels in onnxruntime's optimized graph: " + ", ".join(integer_ops)) if integer_ops \
                else ("onnxruntime's optimized graph has no integer kernel; " + (
                    f"{left} DequantizeLinear node(s) stay in it and dequantize the weights at every call" if left
                    else "its DequantizeLinear nodes were folded into float32 weights"))
            notes.append(f"weight-only QDQ: integers stored ({n_int8} int8 weight tensors), float execution ({how})")
    else:
        tmp = path.with_name(".tmp-" + path.name)
        with _quiet():
            torch.export.save(program, str(tmp))
        os.replace(tmp, path)
        loaded = torch.export.load(str(path))
        with torch.no_grad():
            artifact = flatten_outputs(loaded.module()(*check))
        summary["runtime"] = f"torch {torch.__version__} (torch.export.load)"
        summary["int8_weights"] = 0
        summary["integer_execution"] = False
        if quantized:
            notes.append("pt2: quantized weights are stored as float32 values on their grid")
    max_abs, max_rel = relative_error(artifact, eager)
    summary.update(stored_bytes=_stored_bytes(path), max_abs_error=max_abs, max_rel_error=max_rel, notes=notes)
    if not max_rel <= tolerance:  # also catches NaN
        raise ExportError(
            f"export check failed: {path} differs from eager PyTorch by {max_rel:.3g} relative (max abs "
            f"{max_abs:.3g}) on a batch of {_batch_size(check)}, above the tolerance {tolerance:g}. The artifact is "
            "left there for inspection; an operator the exporter translates differently is the usual cause."
        )
    return summary


# ---------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint read with ``torch.load(weights_only=True)`` (clear errors for bad files)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ExportError(f"export: the checkpoint {path} does not exist; give the path of a Lightning .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ExportError(f"export: {path} cannot be loaded safely with torch.load(weights_only=True) "
                          f"({_first_line(err)}); give a checkpoint written by Lightning's ModelCheckpoint") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ExportError(f"export: {path} is not a Lightning checkpoint (it has no 'state_dict' entry)")
    return checkpoint


def _missing_structural(checkpoint: dict[str, Any], objects: Sequence[Any]) -> list[str]:
    """Callbacks whose state is in the checkpoint but which are not among ``objects``."""
    saved = [str(k) for k in (checkpoint.get("callbacks") or {})]
    present = {type(o).__name__ for o in objects} | {str(getattr(o, "state_key", "")) for o in objects}
    missing = []
    for name, (top_key, hint) in _STRUCTURAL.items():
        in_ckpt = any(k.startswith(name) for k in saved) or (top_key is not None and top_key in checkpoint)
        if name == "L1FilterPruning":
            state = checkpoint.get(top_key) or next((v for k, v in (checkpoint.get("callbacks") or {}).items()
                                                    if str(k).startswith(name)), None)
            in_ckpt = isinstance(state, dict) and bool(state.get("pruned"))
        if in_ckpt and not any(p.startswith(name) for p in present):
            missing.append(hint)
    return missing


def _restore_callback_states(checkpoint: dict[str, Any], callbacks: Sequence[Any]) -> None:
    """Give quantization callbacks their saved state (per-layer grids), as Lightning does when resuming."""
    saved = checkpoint.get("callbacks") or {}
    for cb in callbacks:
        key = getattr(cb, "state_key", None)
        if callable(getattr(cb, "quantized_weights", None)) and key in saved:
            cb.load_state_dict(saved[key])


def default_output(ckpt_path: str | os.PathLike, fmt: str) -> Path:
    """``<run dir>/export/model.<fmt>`` (run dir: the checkpoint's folder, or its parent for ``checkpoints/``)."""
    ckpt = Path(ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run_dir / "export" / f"model.{fmt}"


def export_checkpoint(pl_module: nn.Module, callbacks: Sequence[Any] | None, ckpt_path: str | os.PathLike,
                      fmt: str = "onnx", out: str | os.PathLike | None = None, overwrite: bool = False,
                      example_input: Any = None, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Export a Lightning checkpoint of ``pl_module`` (see the module docstring); returns the summary dict.

    ``pl_module`` is built as the run built it (its structure is restored here) and is changed in place: the
    checkpoint's weights are loaded and quantized weights written into it. ``callbacks``: the run's callbacks
    (structural ones are needed: a pruned checkpoint needs the pruning callback, a quantized one the
    quantization callback). Binary and ternary nets also get ``<out>.packed.pt`` (see :func:`load_packed`).
    """
    if fmt not in FORMATS:
        raise ExportError(f"export: unsupported format {fmt!r}; choose one of {', '.join(FORMATS)}")
    callbacks = list(callbacks or [])
    out_path = Path(out) if out is not None else default_output(ckpt_path, fmt)
    _check_out(out_path, overwrite)
    packed_path = out_path.with_name(out_path.name + ".packed.pt")
    if packed_path.exists() and not overwrite and any(callable(getattr(c, "quantized_weights", None))
                                                      for c in callbacks):
        raise ExportError(f"export: {packed_path} already exists; pass overwrite=True (--overwrite) to replace it")
    if fmt == "onnx":
        require_deploy("onnx", "onnxruntime", "onnxscript")
    checkpoint = load_checkpoint(ckpt_path)
    missing = _missing_structural(checkpoint, callbacks)
    if missing:
        raise ExportError(
            f"export: the checkpoint {ckpt_path} was written by a run with structural callbacks that are not given "
            f"here; add {' and '.join(missing)} to the callbacks, or its weights cannot be rebuilt correctly"
        )
    for owner in [pl_module] + callbacks:
        fn = getattr(owner, "restore_structure", None)
        if callable(fn):
            fn(pl_module, checkpoint)
    try:
        pl_module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:4]
        raise ExportError(
            f"export: the checkpoint {ckpt_path} does not fit {type(pl_module).__name__} (another architecture, or "
            "a structural callback such as pruning is missing: add the callbacks of the run that wrote it). "
            "Details: " + " | ".join(lines)
        ) from None
    _restore_callback_states(checkpoint, callbacks)
    was_training = pl_module.training
    pl_module.eval()
    try:
        quantized, packed, notes = apply_quantized_weights(pl_module, callbacks)
        summary = export_module(pl_module, out_path, fmt, example_input, quantized, tolerance, overwrite,
                                notes=notes)
    finally:
        pl_module.train(was_training)
    summary["checkpoint"] = str(ckpt_path)
    if packed is not None:
        torch.save(packed, packed_path)
        restored = load_packed(str(packed_path))
        state = pl_module.state_dict()
        if any(not torch.equal(restored[k], state[k]) for k in restored):
            raise ExportError(f"export check failed: unpacking {packed_path} does not give the exported weights")
        summary["packed_path"] = str(packed_path)
        summary["packed_bytes"] = packed_path.stat().st_size
        summary["notes"].append(
            "packed binary/ternary weights written to the .packed.pt file (load with nets.export.load_packed); no "
            "runtime executes 1- or 2-bit weights natively (onnxruntime and PyTorch have no such kernels): "
            "unpack to float to run")
    return summary


def time_onnx(path: str | os.PathLike, example_input: Any, batch_sizes: Sequence[int] = (1,), threads: int = 1,
              repeats: int = 30, warmup: int = 5) -> dict[str, Any]:
    """Latency of an exported ONNX file in onnxruntime's CPU provider (``threads`` intra-op threads, 1 inter-op
    thread, all graph optimizations), at each batch size on random inputs shaped like ``example_input``:
    ``warmup`` untimed calls, then ``repeats`` timed ones; seconds per call as median, interquartile range and
    minimum (``{"b1": {...}, "threads": ..., "runtime": ...}``)."""
    import statistics
    import time

    (ort,) = require_deploy("onnxruntime")
    session = onnxruntime_session(path, threads=threads)
    names = [i.name for i in session.get_inputs()]
    out: dict[str, Any] = {"threads": int(threads), "runtime": f"onnxruntime {ort.__version__} CPU"}
    for b in batch_sizes:
        x = random_like_batch(example_input, int(b))
        arrays = [t.detach().cpu().float().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
                  for t in (x if isinstance(x, tuple | list) else (x,)) if isinstance(t, torch.Tensor)]
        feed = dict(zip(names, arrays, strict=True))
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t0)
        q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
        out[f"b{int(b)}"] = {"median": statistics.median(times), "q25": q[0], "q75": q[2], "min": min(times),
                             "n": len(times)}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the command line."""
    lines = [f"exported {summary['format']} to {summary['path']} ({summary['stored_bytes']:,} bytes)",
             f"check vs eager PyTorch on a batch of {summary['check_batch']} ({summary.get('runtime', '')}): max "
             f"abs error {summary['max_abs_error']:.3g}, max rel error {summary['max_rel_error']:.3g} (tolerance "
             f"{summary['tolerance']:g})"]
    if summary.get("packed_path"):
        lines.append(f"packed low-bit weights: {summary['packed_path']} ({summary['packed_bytes']:,} bytes)")
    for key, value in summary.items():
        if key.startswith("latency_b") and key.endswith("_s") and "iqr" not in key:
            lines.append(f"onnxruntime latency at batch {key[len('latency_b'):-2]} ({summary['latency_threads']} "
                         f"thread(s)): {value * 1e3:.3g} ms (median of {summary['latency_repeats']})")
    lines += [f"note: {n}" for n in summary.get("notes", [])]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_TOLERANCE", "DEPLOY_INSTALL", "ExportError", "FORMATS", "QuantizedWeight", "apply_quantized_weights",
    "default_output", "export_checkpoint", "export_module", "flatten_outputs", "format_summary", "load_checkpoint",
    "load_packed", "load_packed_into", "onnxruntime_integer_ops", "onnxruntime_session", "random_like_batch",
    "relative_error", "require_deploy", "run_onnx", "time_onnx",
]
