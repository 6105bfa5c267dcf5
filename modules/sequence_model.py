"""SequenceModel: trains any recurrent net of ``nets.rnn_cells`` by full BPTT or truncated BPTT.

Manual optimisation (Lightning >= 2.0 has no ``truncated_bptt_steps``; REFERENCE.md section 15.2): one
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
(fixed length k, the last one shorter, not ``tensor_split``: REFERENCE.md section 15.2). With a terminal loss only
the last window carries a loss, so the earlier windows just run forward without a graph.

``num_classes`` and ``input_shape`` = ``(T, F)`` (floats) or ``(T,)`` (token ids; the net then embeds the
``num_classes`` tokens) are linked from the datamodule by main.py.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

import lightning.pytorch as pl
from nets.rnn_cells import SequenceNet

TASKS = ("regression", "classification", "sequence")


class SequenceError(ValueError):
    """Bad sequence/window configuration (user-facing: main.py prints it as one paragraph)."""

    user_facing = True


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def window_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """FPTT windows (REFERENCE.md section 6.2/6.7): ``parts`` windows of floor(T/P) steps, then one window with
    the remaining ``T - P*floor(T/P)`` steps if any. Raises :class:`SequenceError` if ``T < P``."""
    if parts < 1:
        raise SequenceError(f"the number of windows (parts) must be >= 1, got {parts}")
    if length < parts:
        raise SequenceError(f"a sequence of length {length} cannot be cut into {parts} windows (parts): every "
                            f"window needs at least one step; lower model.init_args.parts to at most {length} or "
                            f"use longer sequences")
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


class SequenceModel(pl.LightningModule):
    """A ``nets.rnn_cells.SequenceNet`` trained by BPTT or truncated BPTT.

    Args:
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if task not in TASKS:
            raise SequenceError(f"model.init_args.task must be one of {TASKS}, got {task!r}")
        if len(input_shape) not in (1, 2):
            raise SequenceError(f"input_shape must be (T, F) or (T,) for a sequence model, got {tuple(input_shape)}")
        self.automatic_optimization = False
        self.task = task
        self.seq_len = int(input_shape[0])
        tokens = len(input_shape) == 1
        self.net = SequenceNet(
            cell, input_size=1 if tokens else int(input_shape[1]), hidden_size=hidden_size,
            output_size=num_classes, num_layers=num_layers, seq_len=self.seq_len, cell_kwargs=cell_kwargs,
            vocab_size=num_classes if tokens else None, embedding_dim=embedding_dim, head_hidden=head_hidden,
            dropout=dropout, tie_weights=tie_weights,
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.truncation = truncation
        self.example_input_array = (torch.zeros(1, self.seq_len, dtype=torch.long) if tokens
                                    else torch.zeros(1, *input_shape))

    # ------------------------------------------------------------------ forward and losses
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs after the last step ``(B, C)`` for terminal tasks, at every step ``(B, T, C)`` otherwise."""
        hidden, _ = self.net(x)
        return self.net.readout(hidden if self.task == "sequence" else hidden[:, -1])

    def _terminal_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
        return F.cross_entropy(out, y)

    def _sequence_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def _log_metrics(self, stage: str, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        batch = y.shape[0]
        on_step = stage == "train"
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=sync,
                 batch_size=batch)
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

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        self._check_batch(x)
        opt = self.optimizers()
        bounds = truncation_bounds(x.shape[1], self.truncation)
        state = None
        total = x.new_zeros(())
        out_last = None
        for i, (a, b) in enumerate(bounds):
            last = i == len(bounds) - 1
            if self.task != "sequence" and not last:
                with torch.no_grad():
                    _, state = self.net(x[:, a:b], state, t0=a)
                continue
            hidden, state = self.net(x[:, a:b], state, t0=a)
            if self.task == "sequence":
                out = self.net.readout(hidden)
                loss = self._sequence_loss(out, y[:, a:b])
            else:
                out = self.net.readout(hidden[:, -1])
                loss = self._terminal_loss(out, y)
            opt.zero_grad()
            self.manual_backward(loss)
            if self.hparams.gradient_clip_val:
                self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val,
                                    gradient_clip_algorithm="norm")
            self._opt_step(opt, last)
            state = self.net.detach_state(state)
            total = total + loss.detach() * (b - a if self.task == "sequence" else 1)
            out_last = out
        if self.task == "sequence":
            total = total / x.shape[1]
            y_log = y[:, bounds[-1][0]:]
        else:
            y_log = y
        self._log_metrics("train", total, out_last.detach(), y_log)
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
