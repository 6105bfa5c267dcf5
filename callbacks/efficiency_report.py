"""EfficiencyReport: parameters, MACs, FLOPs, latency, training memory and sizes of a model.

Drop-in Lightning callback (imports only torch and lightning; onnx, onnxruntime and onnxscript only when
``deployed_latency=True``). Counting conventions (docs/README.md#counting-compute):

* ``li2017``: multiply-accumulates of ``Conv*d`` and ``Linear`` layers only, per input, as in Li et al.,
  "Pruning Filters for Efficient ConvNets" (ICLR 2017): n_out * n_in/groups * k^2 * H_out * W_out per conv and
  in * out per linear. BatchNorm, activations, pooling, biases and additions are not counted, and neither are
  1x1 projection shortcuts (convs inside a module whose name contains ``downsample`` or ``shortcut``); with that
  rule torchvision's ResNet-34 is 3.64e9 MACs and 2.16e7 parameters, the paper's numbers.
* ``all``: ``torch.utils.flop_counter.FlopCounterMode`` FLOPs divided by 2, per input. Covers every matmul,
  convolution and attention op, hence recurrent cells, attention and PDE iterations.

Example::

    from efficiency_report import EfficiencyReport  # this file, copied alone into your project
    trainer = Trainer(callbacks=[EfficiencyReport(convention="li2017", batch_size=64)])

A technique that changes the exported form of the model (e.g. packed low-bit weights) exposes
``export_state_dict(pl_module) -> dict`` on the LightningModule or on any of the trainer's callbacks; the
report measures the serialised size of that instead of the plain ``state_dict``.

Deployed latency (opt-in, ``deployed_latency=True``): the model is exported to ONNX (dynamic batch) and timed in
onnxruntime's CPU provider at batch 1 and at ``batch_size``: ``deployed_warmup`` untimed calls, then the median
and interquartile range of ``deployed_repeats`` timed calls, with ``deployed_threads`` intra-op threads (stated
in the table), beside the eager latency, the counts and the ONNX file's size.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lightning.pytorch as pl

Convention = Literal["li2017", "all"]
_SHORTCUT_PATTERN = re.compile(r"(downsample|shortcut)", re.IGNORECASE)


def _is_projection_shortcut(name: str, module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d | nn.Conv3d | nn.Conv1d)
        and all(k == 1 for k in module.kernel_size)
        and bool(_SHORTCUT_PATTERN.search(name))
    )


def count_params(model: nn.Module, convention: Convention = "all") -> int:
    """Parameter count.

    ``all``: every parameter. ``li2017``: weights of conv and linear layers only, without 1x1 projection
    shortcuts (BN and biases do not change the paper's printed precision).
    """
    if convention == "all":
        return sum(p.numel() for p in model.parameters())
    if convention != "li2017":
        raise ValueError(f"convention must be 'li2017' or 'all', got {convention!r}")
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            if _is_projection_shortcut(name, module):
                continue
            total += module.weight.numel()
    return total


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _batch_of(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    if isinstance(x, list | tuple) and x:
        return _batch_of(x[0])
    if isinstance(x, dict) and x:
        return _batch_of(next(iter(x.values())))
    raise ValueError("cannot infer the batch size of the example input")


@torch.no_grad()
def _rnn_macs(rnn: nn.RNNBase, x: Any) -> float:
    """Multiply-accumulates of one call of an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` on the padded tensor ``x`` (all
    time steps, all samples): gates x hidden x (layer input + hidden) per step, layer and direction."""
    if not isinstance(x, torch.Tensor):
        return 0.0  # a PackedSequence: its lengths vary, left uncounted
    steps_and_batch = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    directions = 2 if rnn.bidirectional else 1
    hidden, out = rnn.hidden_size, getattr(rnn, "proj_size", 0) or rnn.hidden_size
    total, width = 0, rnn.input_size
    for _ in range(rnn.num_layers):
        total += directions * gates * hidden * (width + out) + directions * (hidden * out if out != hidden else 0)
        width = out * directions
    return float(steps_and_batch * total)


def count_macs(model: nn.Module, example_input: Any, convention: Convention = "li2017") -> float:
    """Multiply-accumulates per input (the example's batch dimension is divided out)."""
    batch = _batch_of(example_input)
    example_input = _for_model(example_input, model)
    was_training = model.training
    model.eval()
    try:
        if convention == "all":
            # torch's flop counter sees inside nn.LSTM / nn.GRU / nn.RNN only where the op is decomposed into
            # matmuls (on CPU it misses the fused LSTM): their gate matmuls are counted from the input's shape at
            # every time step, in place of whatever the counter saw inside them
            counter = FlopCounterMode(display=False)
            correction, seen = [0.0], {}

            def before(mod: nn.Module, inp: Any) -> None:
                seen[id(mod)] = counter.get_total_flops()

            def after(mod: nn.Module, inp: Any, out: Any) -> None:
                correction[0] += _rnn_macs(mod, inp[0]) - (counter.get_total_flops() - seen.pop(id(mod))) / 2

            rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
            hooks = [m.register_forward_pre_hook(before) for m in rnns] + [m.register_forward_hook(after) for m in rnns]
            try:
                with counter:
                    model(*_as_tuple(example_input))
            finally:
                for h in hooks:
                    h.remove()
            return (counter.get_total_flops() / 2 + correction[0]) / batch
        if convention != "li2017":
            raise ValueError(f"convention must be 'li2017' or 'all', got {convention!r}")
        total = [0]

        def conv_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            k = 1
            for s in module.kernel_size:
                k *= s
            total[0] += output.numel() * (module.in_channels // module.groups) * k

        def linear_hook(module: nn.Linear, inputs: Any, output: torch.Tensor) -> None:
            total[0] += output.numel() * module.in_features

        handles = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                if not _is_projection_shortcut(name, module):
                    handles.append(module.register_forward_hook(conv_hook))
            elif isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(linear_hook))
        try:
            model(*_as_tuple(example_input))
        finally:
            for h in handles:
                h.remove()
        return total[0] / batch
    finally:
        model.train(was_training)


@torch.no_grad()
def count_flops(model: nn.Module, example_input: Any) -> float:
    """torch flop-counter FLOPs (2 per MAC) of one forward pass, per input."""
    batch = _batch_of(example_input)
    example_input = _for_model(example_input, model)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(*_as_tuple(example_input))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / batch


def _repeat_batch(x: Any, batch: int) -> Any:
    if isinstance(x, torch.Tensor):
        one = x[:1]
        return one.expand(batch, *one.shape[1:]).contiguous()
    if isinstance(x, tuple):
        return tuple(_repeat_batch(v, batch) for v in x)
    if isinstance(x, list):
        return [_repeat_batch(v, batch) for v in x]
    if isinstance(x, dict):
        return {k: _repeat_batch(v, batch) for k, v in x.items()}
    return x


def _to_device(x: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """``x`` on ``device``; floating tensors also cast to ``dtype`` when given (integer ids are left alone)."""
    if isinstance(x, torch.Tensor):
        if dtype is not None and x.is_floating_point():
            return x.to(device=device, dtype=dtype)
        return x.to(device)
    if isinstance(x, tuple | list):
        return type(x)(_to_device(v, device, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device, dtype) for k, v in x.items()}
    return x


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (bfloat16 under ``precision="bf16-true"``)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _for_model(x: Any, model: nn.Module) -> Any:
    """``x`` on the model's device, floating inputs in the model's parameter dtype."""
    p = next(iter(model.parameters()), None)
    return x if p is None else _to_device(x, p.device, _float_dtype(model))


@torch.no_grad()
def measure_latency(
    model: nn.Module, example_input: Any, batch_size: int = 1, repeats: int = 10, warmup: int = 2
) -> float:
    """Median wall-clock seconds of one eval-mode forward pass at ``batch_size``, on the model's device."""
    device = next(model.parameters()).device
    x = _for_model(_repeat_batch(example_input, batch_size), model)
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    try:
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            model(*_as_tuple(x))
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times)


def time_calls(fn: Any, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Wall-clock seconds of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones; the median, the
    interquartile range (q25, q75), the minimum and the count."""
    if repeats < 1:
        raise ValueError(f"time_calls: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "q25": q[0], "q75": q[2], "min": min(times), "n": len(times)}


_DEPLOY_HINT = ("install onnx, onnxruntime and onnxscript (pip install onnx onnxruntime onnxscript; in the "
                'efficient-recipes repository: pip install -e ".[deploy]")')


def _import_deploy() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(f"EfficiencyReport(deployed_latency=True) needs the ONNX packages ({err}); "
                          f"{_DEPLOY_HINT}, or set deployed_latency=False.") from None
    return onnxruntime


def _float32_eval_copy(model: nn.Module) -> tuple[nn.Module, bool]:
    """The model itself (eval mode) when it is float32, else a float32 copy (its trainer reference not copied)."""
    if all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point()):
        return model, False
    trainer = model.__dict__.get("_trainer")
    if trainer is not None:
        model._trainer = None
    try:
        copied = copy.deepcopy(model).float()
    finally:
        if trainer is not None:
            model._trainer = trainer
    return copied, True


def measure_onnxruntime_latency(model: nn.Module, example_input: Any, batch_sizes: tuple[int, ...] = (1,),
                                threads: int = 1, repeats: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Export ``model`` (eval mode, float32, CPU) to ONNX with a dynamic batch and time onnxruntime's CPU
    execution at each batch size with ``threads`` intra-op threads (one inter-op thread, all graph
    optimizations); returns ``{"b<N>": time_calls(...) dict, "bytes": ONNX file size, "threads", "runtime"}``.
    """
    ort = _import_deploy()
    import tempfile
    import warnings
    from contextlib import redirect_stdout

    was_training = model.training
    target, copied = _float32_eval_copy(model)
    device = next(target.parameters()).device
    if device.type != "cpu":
        target, copied = copy.deepcopy(target).cpu(), True
    target.eval()
    x = _to_device(_repeat_batch(example_input, 2), torch.device("cpu"), torch.float32)
    args = _as_tuple(x)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
    result: dict[str, Any] = {"threads": int(threads), "runtime": f"onnxruntime {ort.__version__} CPU"}
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            path = os.path.join(tmp, "model.onnx")
            with torch.no_grad():
                torch.onnx.export(target, args, dynamo=True, verbose=False, dynamic_shapes=dynamic).save(path)
            result["bytes"] = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            for b in batch_sizes:
                feed = {n: a.numpy() for n, a in zip(names, _as_tuple(_repeat_batch(x, b)), strict=True)}
                result[f"b{b}"] = time_calls(lambda feed=feed: session.run(None, feed), repeats, warmup)
    finally:
        if not copied:
            model.train(was_training)
    return result


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_training_memory(model: nn.Module, example_input: Any, batch_size: int) -> dict[str, int]:
    """Bytes of tensors saved for backward in one training step, and process (or CUDA) memory growth.

    The step runs forward, sums the output and runs backward. The model is left as it was: gradients and
    buffers (e.g. BatchNorm running statistics, which a train-mode forward updates) are restored afterwards.
    """
    device = next(model.parameters()).device
    x = _for_model(_repeat_batch(example_input, batch_size), model)
    saved = [0]
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = id(t.untyped_storage()) if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            saved[0] += t.untyped_storage().nbytes()
        return t

    grads_before = {n: p.grad for n, p in model.named_parameters()}
    buffers_before = {n: b.detach().clone() for n, b in model.named_buffers()}
    was_training = model.training
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*_as_tuple(x))
            if isinstance(out, tuple | list):
                out = out[0]
            if isinstance(out, dict):
                out = next(iter(out.values()))
        out.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            growth = torch.cuda.max_memory_allocated(device) - base
        else:
            growth = max(0, _rss_bytes() - base)
    finally:
        for n, p in model.named_parameters():
            p.grad = grads_before.get(n)
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers_before:
                    b.copy_(buffers_before[n])
        model.train(was_training)
    return {"saved_tensor_bytes": saved[0], "memory_growth_bytes": int(growth)}


def serialized_size(state: dict) -> int:
    """Bytes of ``torch.save(state)``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


@dataclass
class EfficiencyNumbers:
    """One row of the report; ``None`` marks a figure that was not measured."""

    convention: str
    params: int
    macs: float
    flops: float | None = None
    latency_batch1_s: float | None = None
    latency_batch_s: float | None = None
    latency_batch: int | None = None
    saved_tensor_bytes: int | None = None
    memory_growth_bytes: int | None = None
    checkpoint_bytes: int | None = None
    export_bytes: int | None = None
    deployed_latency_batch1_s: float | None = None
    deployed_latency_batch_s: float | None = None
    deployed_latency_iqr_batch1_s: tuple[float, float] | None = None
    deployed_latency_iqr_batch_s: tuple[float, float] | None = None
    deployed_threads: int | None = None
    deployed_bytes: int | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def format_table(numbers: EfficiencyNumbers, title: str = "Efficiency report") -> str:
    def human(v: Any, unit: str = "") -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and unit == "s":
            return f"{v * 1e3:.3f} ms"
        if unit == "B":
            return f"{v / 2**20:.3f} MiB"
        return f"{v:.4g}" if isinstance(v, float) else f"{v:,}"

    rows = [
        ("parameters", human(numbers.params)),
        (f"MACs per input ({numbers.convention})", human(float(numbers.macs))),
        ("FLOPs per input (torch flop counter)", human(numbers.flops)),
        ("latency, batch 1", human(numbers.latency_batch1_s, "s")),
        (f"latency, batch {numbers.latency_batch}", human(numbers.latency_batch_s, "s")),
        ("saved tensors for backward", human(numbers.saved_tensor_bytes, "B")),
        ("memory growth in a training step", human(numbers.memory_growth_bytes, "B")),
        ("checkpoint size", human(numbers.checkpoint_bytes, "B")),
        ("export size", human(numbers.export_bytes, "B")),
    ]
    if numbers.deployed_latency_batch1_s is not None:
        def spread(iqr: tuple[float, float] | None) -> str:
            return "" if iqr is None else f" (IQR {iqr[0] * 1e3:.3f}-{iqr[1] * 1e3:.3f} ms)"

        threads = f"{numbers.deployed_threads} thread{'s' if numbers.deployed_threads != 1 else ''}"
        rows += [
            (f"onnxruntime CPU latency, batch 1, {threads}",
             human(numbers.deployed_latency_batch1_s, "s") + spread(numbers.deployed_latency_iqr_batch1_s)),
            (f"onnxruntime CPU latency, batch {numbers.latency_batch}, {threads}",
             human(numbers.deployed_latency_batch_s, "s") + spread(numbers.deployed_latency_iqr_batch_s)),
            ("ONNX model size", human(numbers.deployed_bytes, "B")),
        ]
    rows += [(k, human(v)) for k, v in numbers.extra.items()]
    width = max(len(r[0]) for r in rows)
    lines = [title, "-" * (width + 20)]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def _example_input(pl_module: pl.LightningModule) -> Any:
    x = pl_module.example_input_array
    if x is None:
        raise ValueError(
            f"EfficiencyReport needs `example_input_array` on {type(pl_module).__name__}: set it in the "
            "module's __init__ to a tensor of one input batch (e.g. torch.zeros(1, 3, 32, 32))."
        )
    return x


class EfficiencyReport(pl.Callback):
    """Prints and logs an efficiency table at fit start and fit end.

    Args:
        convention: ``"li2017"`` (conv/linear MACs, Li et al. 2017) or ``"all"`` (torch flop counter / 2).
        batch_size: second batch size for latency and the training-memory measurement.
        latency_repeats: timed repeats per latency figure (the median is reported); 0 disables latency.
        measure_memory: run one extra forward/backward to measure training memory.
        log_prefix: prefix of the keys logged to the logger's summary.
        deployed_latency: also export the model to ONNX and time onnxruntime's CPU execution at batch 1 and at
            ``batch_size`` (median and interquartile range of ``deployed_repeats`` calls after ``deployed_warmup``
            untimed ones, ``deployed_threads`` intra-op threads), with the ONNX file's size. Needs the optional
            packages onnx, onnxruntime and onnxscript (imported only when this is on). A model that cannot be
            exported gets a warning and no figure; under bf16/fp16 weights a float32 copy is exported.
        deployed_threads: onnxruntime intra-op threads for ``deployed_latency``.
        deployed_repeats / deployed_warmup: timed and untimed onnxruntime calls per batch size.

    Latency and FLOPs run in the trainer's precision context (autocast under ``bf16-mixed``/``16-mixed``);
    under ``bf16-true``/``16-true`` the example input is cast to the weights' dtype.

    Example::

        trainer = Trainer(callbacks=[EfficiencyReport(convention="all", batch_size=32)])
    """

    def __init__(
        self,
        convention: Convention = "li2017",
        batch_size: int = 32,
        latency_repeats: int = 10,
        measure_memory: bool = True,
        log_prefix: str = "efficiency",
        deployed_latency: bool = False,
        deployed_threads: int = 1,
        deployed_repeats: int = 20,
        deployed_warmup: int = 3,
    ) -> None:
        if convention not in ("li2017", "all"):
            raise ValueError(f"EfficiencyReport: convention must be 'li2017' or 'all', got {convention!r}")
        self.convention = convention
        self.batch_size = batch_size
        self.latency_repeats = latency_repeats
        self.measure_memory = measure_memory
        self.log_prefix = log_prefix
        if deployed_threads < 1 or deployed_repeats < 1 or deployed_warmup < 0:
            raise ValueError(
                "EfficiencyReport: deployed_threads and deployed_repeats must be >= 1 and deployed_warmup >= 0, got "
                f"{deployed_threads}, {deployed_repeats}, {deployed_warmup}"
            )
        self.deployed_latency = bool(deployed_latency)
        self.deployed_threads = int(deployed_threads)
        self.deployed_repeats = int(deployed_repeats)
        self.deployed_warmup = int(deployed_warmup)
        if self.deployed_latency:
            _import_deploy()  # fail at construction, not after a run
        self.start: EfficiencyNumbers | None = None
        self.end: EfficiencyNumbers | None = None

    # ------------------------------------------------------------------ measuring
    def export_size(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> int:
        """Serialised size of the exported model (see the module docstring for the override hook)."""
        providers = [pl_module] + (list(trainer.callbacks) if trainer is not None else [])
        for p in providers:
            fn = getattr(p, "export_state_dict", None)
            if callable(fn) and p is not self:
                return serialized_size(fn(pl_module))
        return serialized_size(pl_module.state_dict())

    def measure(
        self, pl_module: pl.LightningModule, trainer: pl.Trainer | None = None, timing: bool = True
    ) -> EfficiencyNumbers:
        x = _for_model(_example_input(pl_module), pl_module)
        one = _repeat_batch(x, 1)
        context = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
        with context:
            numbers = EfficiencyNumbers(
                convention=self.convention,
                params=count_params(pl_module, self.convention),
                macs=count_macs(pl_module, one, self.convention),
                flops=count_flops(pl_module, one),
            )
            if timing and self.latency_repeats > 0:
                numbers.latency_batch1_s = measure_latency(pl_module, x, 1, self.latency_repeats)
                numbers.latency_batch = self.batch_size
                numbers.latency_batch_s = measure_latency(pl_module, x, self.batch_size, self.latency_repeats)
            if timing and self.measure_memory:
                mem = measure_training_memory(pl_module, x, self.batch_size)
                numbers.saved_tensor_bytes = mem["saved_tensor_bytes"]
                numbers.memory_growth_bytes = mem["memory_growth_bytes"]
        if timing and self.deployed_latency:
            self._measure_deployed(pl_module, x, numbers)
        numbers.export_bytes = self.export_size(trainer, pl_module)
        if trainer is not None:
            ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
                trainer.checkpoint_callback, "best_model_path", ""
            )
            if ckpt and os.path.exists(ckpt):
                numbers.checkpoint_bytes = os.path.getsize(ckpt)
        return numbers

    def _measure_deployed(self, pl_module: nn.Module, x: Any, numbers: EfficiencyNumbers) -> None:
        try:
            result = measure_onnxruntime_latency(pl_module, x, (1, self.batch_size), self.deployed_threads,
                                                 self.deployed_repeats, self.deployed_warmup)
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001 - an exporter failure must not end a training run
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
            warnings.warn(f"EfficiencyReport: deployed latency not measured: {type(pl_module).__name__} could not "
                          f"be exported to ONNX or run in onnxruntime ({reason}). Set deployed_latency=False to "
                          "skip it.", stacklevel=2)
            numbers.extra["deployed_latency_error"] = reason
            return
        numbers.latency_batch = self.batch_size
        numbers.deployed_threads = result["threads"]
        numbers.deployed_bytes = result["bytes"]
        numbers.deployed_latency_batch1_s = result["b1"]["median"]
        numbers.deployed_latency_iqr_batch1_s = (result["b1"]["q25"], result["b1"]["q75"])
        numbers.deployed_latency_batch_s = result[f"b{self.batch_size}"]["median"]
        numbers.deployed_latency_iqr_batch_s = (result[f"b{self.batch_size}"]["q25"],
                                                result[f"b{self.batch_size}"]["q75"])

    # ------------------------------------------------------------------ hooks
    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str) -> EfficiencyNumbers:
        # under fast_dev_run (smoke tests) only the counts are measured, not latency and memory
        numbers = self.measure(pl_module, trainer, timing=not trainer.fast_dev_run)
        if trainer.is_global_zero:
            print("\n" + format_table(numbers, f"Efficiency report ({when})"), flush=True)
            summary = {f"{self.log_prefix}/{when}/{k}": v for k, v in numbers.as_dict().items() if v is not None}
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "summary") and hasattr(experiment.summary, "update"):
                    experiment.summary.update(summary)  # W&B run summary
                else:
                    numeric = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
                    logger.log_metrics(numeric, step=trainer.global_step)
        return numbers

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self._report(trainer, pl_module, "fit_start")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = self._report(trainer, pl_module, "fit_end")
