"""SequenceModel: trains any recurrent net of ``nets.rnn_cells`` by full BPTT or truncated BPTT.

Manual optimisation (Lightning >= 2.0 has no ``truncated_bptt_steps``; docs/README.md#truncated-sequences-in-lightning): one
``manual_backward``, explicit ``clip_gradients`` and one optimizer step per window, the recurrent state detached at
each window boundary, schedulers stepped here. **One batch counts as one global step** whatever the number of
windows (the inner windows step the raw optimizer, the last one steps Lightning's wrapper), so ``max_steps``
and the step axis of the logs count batches and BPTT/TBPTT/FPTT runs can be compared at equal batches.

Tasks (``task``):

* ``"regression"`` -- terminal MSE on the output after the last step (adding task); ``num_classes`` outputs.
* ``"classification"`` -- terminal cross-entropy (pixel MNIST, sequential CIFAR, HAR-2, ...).
* ``"sequence"`` -- cross-entropy at every step on ``(B, T)`` targets (copy task, language modelling);
  logs ``bpc`` (bits per character) and ``ppl`` (perplexity) beside the loss.

Training (``truncation``): ``None`` is full BPTT; an integer k is truncated BPTT with windows ``x.split(k, dim=1)``
(fixed length k, the last one shorter, not ``tensor_split``: docs/README.md#truncated-sequences-in-lightning). With a terminal loss only
the last window carries a loss, so the earlier windows just run forward without a graph.

``num_classes`` and ``input_shape`` = ``(T, F)`` (floats) or ``(T,)`` (token ids; the net then embeds the
``num_classes`` tokens) are linked from the datamodule by main.py.

**Your own net** (``net``). By default the module builds a ``nets.rnn_cells.SequenceNet`` from ``cell``,
``hidden_size`` and the other net arguments. Pass ``net=`` an ``nn.Module`` instead and those are ignored. The
module trains any net that follows this *recurrent-net protocol*:

* ``net(x, state)`` (or ``net(x, state, t0=t0)`` if ``forward`` takes ``t0``) runs the net over batch-first
  ``x`` -- ``(B, T, F)`` floats or ``(B, T)`` token ids, as the datamodule yields them -- starting from ``state``
  (``None`` for a fresh sequence) and returns ``(hidden, state)``: ``hidden`` of shape ``(B, T, H)`` and a
  ``state`` which, passed back with the next chunk of the same sequences, continues them; ``t0`` is the time
  index of ``x[:, 0]``;
* ``net.readout(hidden)`` maps ``(..., H)`` to ``(..., num_classes)`` outputs;
* ``net.detach_state(state)`` (optional) cuts the graph at a window boundary; by default every tensor of a state
  made of tensors, tuples, lists and dicts is detached.

An ``nn.LSTM``/``nn.GRU``/``nn.RNN`` or a torch cell (``nn.LSTMCell``, ...) is wrapped for you
(``nets.rnn_cells.RNNAdapter`` / ``CellAdapter`` with a ``Linear(H, num_classes)`` readout); wrap your own per-step
cell with ``nets.rnn_cells.CellAdapter(cell, output_size=num_classes)``. From YAML, give ``net`` as
``class_path``/``init_args`` (LightningCLI builds it). The net is never pickled: its weights are in the state dict
and the hyperparameters keep the ``class_path``/``init_args`` description when the CLI built it, otherwise a note
naming its class -- then load with ``Model.load_from_checkpoint(path, net=TheSameNet(...))``.

**Gradient accumulation** (``accumulate_grad_batches`` = k, on the module or on the ``Trainer``: manual
optimisation cannot use Lightning's own, so the module takes the Trainer's value over and sets the Trainer's to 1).
The module keeps the k batches of a group (inputs only) and, at the k-th, trains on their union window by
window: for each window it back-propagates each batch's window loss (weighted by its share of the group's
examples, i.e. the loss of the concatenated batch) one batch at a time, carrying each batch's own recurrent
state, and takes one optimizer step. One accumulated step is therefore exactly the step on one batch of k times
the size (up to dropout draws), with the activation memory of one batch. The epoch's last batch closes a
shorter group. A global step is then one group (Lightning's convention: ``max_steps`` counts optimizer steps).
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

import lightning.pytorch as pl
from modules.step_logging import log_train_value
from nets.rnn_cells import SequenceNet, as_sequence_net, detach_state

try:  # the config LightningCLI passes to save_hyperparameters (its class_path/init_args description of `net`)
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover - other Lightning versions: no description, load with net=...
    _given_hyperparameters = None

TASKS = ("regression", "classification", "sequence")


class SequenceError(ValueError):
    """Bad sequence/window configuration (user-facing: main.py prints it as one paragraph)."""

    user_facing = True


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def window_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """FPTT windows (docs/fptt.md#algorithm and docs/fptt.md#in-this-project): ``parts`` windows of floor(T/P) steps, then one window with
    the remaining ``T - P*floor(T/P)`` steps if any. Raises :class:`SequenceError` if ``T < P``."""
    if parts < 1:
        raise SequenceError(f"the number of windows (parts) must be >= 1, got {parts}")
    if length < parts:
        raise SequenceError(f"a sequence of length {length} cannot be cut into {parts} windows (parts): every "
                            f"window needs at least one step; lower parts to at most {length} or use longer "
                            f"sequences")
    size = length // parts
    bounds = [(p * size, (p + 1) * size) for p in range(parts)]
    if parts * size < length:
        bounds.append((parts * size, length))
    return bounds


def truncation_bounds(length: int, window: int | None) -> list[tuple[int, int]]:
    """Truncated-BPTT windows of ``window`` steps (the last one shorter); one window for full BPTT (``None``)."""
    if window is None:
        return [(0, length)]
    if window < 1:
        raise SequenceError(f"truncation must be a window length >= 1 or null (full BPTT), got {window}")
    return [(a, min(a + window, length)) for a in range(0, length, window)]


NET_NOT_SAVED = "not saved: pass net= again; class "


def _net_description(net: Any) -> Any:
    """What the hyperparameters keep for ``net``: ``None``, the CLI's class_path/init_args dict, or a note."""
    if net is None:
        return None
    given = _given_hyperparameters.get() if _given_hyperparameters is not None else None
    desc = given.get("net") if isinstance(given, dict) else None
    if isinstance(desc, dict) and "class_path" in desc:
        return copy.deepcopy(desc)
    return f"{NET_NOT_SAVED}{type(net).__module__}.{type(net).__qualname__}"


class SequenceModel(pl.LightningModule):
    """A ``nets.rnn_cells.SequenceNet`` trained by BPTT or truncated BPTT.

    Args:
        net: your own recurrent ``nn.Module`` (module docstring: the protocol); ``None`` builds a ``SequenceNet``
            from ``cell`` and the net arguments below, which are ignored otherwise.
        cell: ``irnn``, ``tarnn``, ``lstm`` or ``gru``.
        hidden_size, num_layers, cell_kwargs, head_hidden, dropout, embedding_dim, tie_weights: the net
            (see ``SequenceNet``).
        task: ``regression``, ``classification`` or ``sequence`` (see module docstring).
        num_classes: outputs (classes, regression targets, or vocabulary size); linked from the datamodule.
        input_shape: ``(T, F)`` or ``(T,)``; linked from the datamodule.
        truncation: ``None`` (full BPTT) or the truncated-BPTT window length.
        gradient_clip_val: gradient-norm clip per optimizer step (``None``: no clipping); manual optimisation
            ignores the Trainer's ``gradient_clip_val``.
        optimizer, lr_scheduler, lr_scheduler_interval: as in ``ImageClassifier``; the scheduler is stepped here.
        accumulate_grad_batches: k batches per optimizer step (module docstring); ``None`` takes the Trainer's.
    """

    def __init__(
        self,
        cell: Literal["irnn", "tarnn", "lstm", "gru"] = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        task: Literal["regression", "classification", "sequence"] = "classification",
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (784, 1),
        cell_kwargs: dict[str, Any] | None = None,
        head_hidden: int | None = None,
        dropout: float = 0.0,
        embedding_dim: int | None = None,
        tie_weights: bool = False,
        truncation: int | None = None,
        gradient_clip_val: float | None = 1.0,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        net: nn.Module | None = None,
        accumulate_grad_batches: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "net"])
        self._record_net(net)
        if task not in TASKS:
            raise SequenceError(f"task must be one of {TASKS}, got {task!r}")
        if len(input_shape) not in (1, 2):
            raise SequenceError(f"input_shape must be (T, F) or (T,) for a sequence model, got {tuple(input_shape)}")
        self.automatic_optimization = False
        self.task = task
        self.seq_len = int(input_shape[0])
        tokens = len(input_shape) == 1
        self.net = self._build_net(net, cell, tokens, input_shape, hidden_size, num_classes, num_layers,
                                   cell_kwargs, embedding_dim, head_hidden, dropout, tie_weights)
        self._net_takes_t0 = _takes_t0(self.net)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.truncation = truncation
        self.accumulate = self._check_accumulate(accumulate_grad_batches, "accumulate_grad_batches")
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.example_input_array = (torch.zeros(1, self.seq_len, dtype=torch.long) if tokens
                                    else torch.zeros(1, *input_shape))

    # ------------------------------------------------------------------ the net
    def _record_net(self, net: Any) -> None:
        """Keep a description of ``net`` (never the module) in the hyperparameters; refuse the note left by a
        checkpoint whose net could not be described."""
        if isinstance(net, str) and net.startswith(NET_NOT_SAVED):
            raise SequenceError(
                f"this checkpoint was trained with your own net ({net[len(NET_NOT_SAVED):]}), which is not pickled "
                f"into checkpoints; pass it again: load_from_checkpoint(path, net=<the same net, built the same "
                f"way>)")
        if net is not None and not isinstance(net, nn.Module):
            raise SequenceError(f"net must be an nn.Module (or None to build one from cell), got "
                                f"{type(net).__name__}")
        self.hparams["net"] = _net_description(net)
        self._hparams_initial = copy.deepcopy(self._hparams)

    @staticmethod
    def _build_net(net: nn.Module | None, cell: Any, tokens: bool, input_shape: tuple[int, ...], hidden_size: int,
                   num_classes: int, num_layers: int, cell_kwargs: dict[str, Any] | None, embedding_dim: int | None,
                   head_hidden: int | None, dropout: float, tie_weights: bool) -> nn.Module:
        if net is not None:
            try:
                return as_sequence_net(net, num_classes, argument="net")
            except (TypeError, ValueError) as err:
                raise SequenceError(str(err)) from None
        if isinstance(cell, nn.Module):
            raise SequenceError(f"cell takes the name of a built-in cell ('irnn', 'tarnn', 'lstm', 'gru'); pass your "
                                f"{type(cell).__name__} module as net=... instead (nn.LSTM/nn.GRU and torch cells are "
                                f"wrapped for you)")
        return SequenceNet(
            cell, input_size=1 if tokens else int(input_shape[1]), hidden_size=hidden_size,
            output_size=num_classes, num_layers=num_layers, seq_len=int(input_shape[0]), cell_kwargs=cell_kwargs,
            vocab_size=num_classes if tokens else None, embedding_dim=embedding_dim, head_hidden=head_hidden,
            dropout=dropout, tie_weights=tie_weights,
        )

    def _run_net(self, x: torch.Tensor, state: Any = None, t0: int = 0) -> tuple[torch.Tensor, Any]:
        if self._net_takes_t0:
            return self.net(x, state, t0=t0)
        return self.net(x, state)

    def _detach(self, state: Any) -> Any:
        fn = getattr(self.net, "detach_state", None)
        return fn(state) if callable(fn) else detach_state(state)

    # ------------------------------------------------------------------ gradient accumulation
    @staticmethod
    def _check_accumulate(k: Any, where: str) -> int | None:
        if k is None:
            return None
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SequenceError(f"{where} must be an integer >= 1 (batches per optimizer step), got {k!r}")
        return int(k)

    def configure_callbacks(self) -> list:
        """Takes the Trainer's ``accumulate_grad_batches`` over (Lightning refuses it with manual optimisation, and
        checks it right after this hook) and sets the Trainer's to 1; this module accumulates itself."""
        trainer = self._trainer
        k = getattr(trainer, "accumulate_grad_batches", 1) if trainer is not None else 1
        if isinstance(k, int) and k != 1:
            k = self._check_accumulate(k, "Trainer(accumulate_grad_batches=...)")
            if self.accumulate is not None and self.accumulate != k:
                raise SequenceError(f"accumulate_grad_batches is {self.accumulate} on the model but {k} on the "
                                    f"Trainer; set it in one place")
            self.accumulate = k
            trainer.accumulate_grad_batches = 1
        return []

    @property
    def accumulate_grad_batches(self) -> int:
        return self.accumulate or 1

    def on_train_epoch_start(self) -> None:
        self._pending = []

    def _collect(self, batch: Any, batch_idx: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The group of batches to train on now, or ``None`` while a group is still being collected."""
        x, y = batch[0], batch[1]
        self._check_batch(x)
        self._pending.append((x, y))
        if len(self._pending) < self.accumulate_grad_batches and not self._is_last_batch(batch_idx):
            return None
        group, self._pending = self._pending, []
        lengths = {int(g[0].shape[1]) for g in group}
        if len(lengths) > 1:
            raise SequenceError(f"gradient accumulation needs equal sequence lengths within a group of "
                                f"accumulate_grad_batches={self.accumulate_grad_batches} batches, got lengths "
                                f"{sorted(lengths)}")
        return group

    def _is_last_batch(self, batch_idx: int) -> bool:
        n = self.trainer.num_training_batches
        return isinstance(n, int) and batch_idx == n - 1

    # ------------------------------------------------------------------ forward and losses
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs after the last step ``(B, C)`` for terminal tasks, at every step ``(B, T, C)`` otherwise."""
        hidden, _ = self._run_net(x)
        return self.net.readout(hidden if self.task == "sequence" else hidden[:, -1])

    def _terminal_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
        return F.cross_entropy(out, y)

    def _sequence_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def _log_metrics(self, stage: str, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        batch = y.shape[0]
        sync = stage != "train"
        if stage == "train":  # the step value only at logging steps: no device read per step
            log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=batch)
        else:
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch)
        if self.task == "regression":
            self.log(f"{stage}/mse", loss, on_step=False, on_epoch=True, sync_dist=sync, batch_size=batch)
            return
        acc = (out.argmax(-1) == y).float().mean()
        self.log(f"{stage}/acc1", acc, on_step=False, on_epoch=True, prog_bar=True, sync_dist=sync,
                 batch_size=batch)
        if self.task == "sequence":
            self.log(f"{stage}/bpc", loss / math.log(2), on_step=False, on_epoch=True, sync_dist=sync,
                     batch_size=batch)
            self.log(f"{stage}/ppl", torch.exp(loss.detach().clamp(max=50)), on_step=False, on_epoch=True,
                     sync_dist=sync, batch_size=batch)

    # ------------------------------------------------------------------ training
    def _check_batch(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise SequenceError(f"expected batched sequences (B, T[, F]), got shape {tuple(x.shape)}")

    def _opt_step(self, opt: Any, last: bool) -> None:
        """Inner windows step the raw optimizer; the last window steps Lightning's wrapper, so one batch is one
        global step (Lightning counts ``LightningOptimizer.step`` calls in manual optimisation)."""
        if last:
            opt.step()
        else:
            opt.optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        group = self._collect(batch, batch_idx)
        if group is None:
            return None
        opt = self.optimizers()
        n_all = sum(int(x.shape[0]) for x, _ in group)
        shares = [x.shape[0] / n_all for x, _ in group]
        bounds = truncation_bounds(group[0][0].shape[1], self.truncation)
        states: list[Any] = [None] * len(group)
        total = group[0][0].new_zeros((), dtype=torch.float32)
        outs: list[torch.Tensor] = []
        for i, (a, b) in enumerate(bounds):
            last = i == len(bounds) - 1
            if self.task != "sequence" and not last:
                with torch.no_grad():
                    for j, (x, _) in enumerate(group):
                        states[j] = self._detach(self._run_net(x[:, a:b], states[j], t0=a)[1])
                continue
            opt.zero_grad()
            outs = []
            for j, (x, y) in enumerate(group):
                hidden, state = self._run_net(x[:, a:b], states[j], t0=a)
                if self.task == "sequence":
                    out = self.net.readout(hidden)
                    loss = self._sequence_loss(out, y[:, a:b])
                else:
                    out = self.net.readout(hidden[:, -1])
                    loss = self._terminal_loss(out, y)
                self.manual_backward(loss * shares[j])
                states[j] = self._detach(state)
                total = total + loss.detach().float() * shares[j] * (b - a if self.task == "sequence" else 1)
                outs.append(out.detach())
            if self.hparams.gradient_clip_val:
                self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val,
                                    gradient_clip_algorithm="norm")
            self._opt_step(opt, last)
        if self.task == "sequence":
            total = total / group[0][0].shape[1]
            y_log = torch.cat([y[:, bounds[-1][0]:] for _, y in group])
        else:
            y_log = torch.cat([y for _, y in group])
        self._log_metrics("train", total, torch.cat(outs), y_log)
        self._step_scheduler("step")
        return total

    def _step_scheduler(self, when: str) -> None:
        """Steps the scheduler at its interval; ``ReduceLROnPlateau`` steps on the epoch's
        ``val/loss`` at the end of the training epoch (validation has run by then)."""
        if self.scheduler_factory is None:
            return
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if plateau and when == "validation":
            metric = self.trainer.callback_metrics.get("val/loss")
            if metric is not None:
                scheduler.step(float(metric))
        elif not plateau and self.hparams.lr_scheduler_interval == when:
            scheduler.step()


    def on_train_epoch_end(self) -> None:
        self._pending = []
        self._step_scheduler("epoch")
        self._step_scheduler("validation")

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y = batch[0], batch[1]
        self._check_batch(x)
        out = self(x)
        loss = self._sequence_loss(out, y) if self.task == "sequence" else self._terminal_loss(out, y)
        self._log_metrics(stage, loss, out, y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}


def _takes_t0(net: nn.Module) -> bool:
    try:
        params = inspect.signature(net.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "t0" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
