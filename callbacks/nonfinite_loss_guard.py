"""NonFiniteLossGuard: no checkpoint is ever written with non-finite weights, and a NaN/inf loss stops the run.

Drop-in Lightning callback (imports only torch, lightning and the standard library). What it guarantees:

* **Every checkpoint it lets through is finite.** Before each save (``on_save_checkpoint``, called by every
  ``ModelCheckpoint`` and by ``trainer.save_checkpoint``) it checks all parameters and buffers of the module in
  one reduction (one host-device sync per save, not per step). If any value is NaN or inf the save is aborted
  and the run stops with :class:`NonFiniteLossError`. Weights can go non-finite through finite losses (a huge
  learning rate, an ``inf`` BatchNorm running variance), so this check does not rely on the loss.
* **The check is recorded in the checkpoint** (``checkpoint["nonfinite_guard"]``: the run token, the step, the
  number of values checked), and a resume verifies it: a checkpoint without the record is checked value by value
  before training continues.
* **A NaN/inf training loss stops the run.** The flag is accumulated on the device at every backward pass
  (no sync) and read every ``check_every_n_steps`` optimizer steps (default: the Trainer's
  ``log_every_n_steps``, when Lightning syncs for logging anyway) and before every save. Under DDP the flag is
  all-reduced (max) at each read, so every rank stops together. Up to ``check_every_n_steps`` steps may run
  after the first non-finite loss; none of them reaches a checkpoint.
* **A NaN/inf validation loss stops the run too** (any logged validation metric whose name contains ``loss``,
  or the names given in ``val_metrics``), before the checkpoint callbacks see it; in a ``fast_dev_run`` (which
  writes no checkpoint) it is a warning.
* **The stop message names the newest checkpoint of this run that passed the check**: files written by another
  run (another token) are never named.

Example::

    trainer = Trainer(callbacks=[NonFiniteLossGuard()])
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterable
from typing import Any

import torch

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

RECORD_KEY = "nonfinite_guard"


class NonFiniteLossError(RuntimeError):
    """Raised when the loss, a validation loss or the weights about to be saved are NaN or infinite."""


def nonfinite_count(tensors: Iterable[torch.Tensor]) -> int:
    """Number of non-finite values in floating-point ``tensors`` (one device sync)."""
    counts = [(~torch.isfinite(t.detach())).sum() for t in tensors if torch.is_floating_point(t) and t.numel()]
    if not counts:
        return 0
    return int(torch.stack([c.to(counts[0].device) for c in counts]).sum().item())


def _module_tensors(pl_module: torch.nn.Module) -> list[torch.Tensor]:
    return [*pl_module.parameters(), *pl_module.buffers()]


class NonFiniteLossGuard(pl.Callback):
    """Stops the run at a non-finite loss and refuses to save non-finite weights.

    Args:
        check_every_n_steps: read the on-device loss flag every n optimizer steps (``None``: the Trainer's
            ``log_every_n_steps``; 1 reads it at every step, which costs one host-device sync per step). It is
            always read before a checkpoint is saved and at the end of every training epoch.
        val_metrics: validation metrics that stop the run when non-finite (default: every logged metric whose
            name starts with ``val`` and contains ``loss``).
    """

    def __init__(self, check_every_n_steps: int | None = None, val_metrics: list[str] | None = None) -> None:
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(f"NonFiniteLossGuard: check_every_n_steps must be >= 1 or None, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self.val_metrics = list(val_metrics) if val_metrics else None
        self.token = secrets.token_hex(8)  # identifies this run's checkpoints; kept across resumes
        self._flag: torch.Tensor | None = None  # on-device: 1 once a non-finite loss was seen
        self._first_step: torch.Tensor | None = None  # on-device: global step of the first one (-1: none)
        self._first_value: torch.Tensor | None = None
        self._last_read_step = -1
        self.saved_steps: list[int] = []  # global steps of this run's saves that passed the check

    # ------------------------------------------------------------------ state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(check_every_n_steps=self.check_every_n_steps)

    def state_dict(self) -> dict[str, Any]:
        return {"token": self.token, "saved_steps": list(self.saved_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.token = state_dict.get("token", self.token)
        self.saved_steps = list(state_dict.get("saved_steps", []))

    # ------------------------------------------------------------------ loss flag (no sync per step)
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        bad = ~torch.isfinite(loss).all()
        if self._flag is None or self._flag.device != loss.device:
            self._flag = torch.zeros((), dtype=torch.bool, device=loss.device)
            self._first_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_value = torch.zeros((), dtype=torch.float32, device=loss.device)
        new = bad & ~self._flag
        self._first_step = torch.where(new, torch.full_like(self._first_step, trainer.global_step), self._first_step)
        value = loss.float().reshape(-1)[0] if loss.numel() else torch.zeros((), device=loss.device)
        self._first_value = torch.where(new, value.to(self._first_value.device), self._first_value)
        self._flag = self._flag | bad

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        n = self.check_every_n_steps or max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
        step = trainer.global_step
        if step != self._last_read_step and step % n == 0:
            self._last_read_step = step
            self._read_flag(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._read_flag(trainer, pl_module)

    def _read_flag(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One sync: the all-reduced (max) flag; raises on every rank when any rank saw a non-finite loss."""
        if self._flag is None:
            return
        flag = self._flag.float()
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="max")
        if float(flag) == 0.0:
            return
        step = int(self._first_step) if self._first_step is not None else -1
        value = float(self._first_value) if self._first_value is not None and step >= 0 else math.nan
        where = f"first at global step {step} ({value})" if step >= 0 else "on another rank"
        raise NonFiniteLossError(
            f"The training loss of {type(pl_module).__name__} became NaN or infinite, {where}; the run was "
            f"stopped at epoch {trainer.current_epoch}, global step {trainer.global_step}. {self._good_ckpt(trainer)}"
            f" Lower the learning rate, enable gradient clipping (Trainer gradient_clip_val) or check the inputs "
            f"for NaN, then resume from that checkpoint or start again."
        )

    # ------------------------------------------------------------------ validation loss
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # only a fit is stopped, not an evaluation
            return
        bad = {}
        for name, value in trainer.callback_metrics.items():
            wanted = name in self.val_metrics if self.val_metrics else (name.startswith("val") and "loss" in name)
            if wanted and isinstance(value, torch.Tensor) and value.numel() == 1:
                v = float(value)
                if not math.isfinite(v):
                    bad[name] = v
        if bad:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            if trainer.fast_dev_run:  # a smoke run writes no checkpoint: say it, do not stop it
                rank_zero_warn(f"NonFiniteLossGuard: the validation loss is not finite ({shown}) in this "
                               f"fast_dev_run (after {trainer.global_step} step(s) the BatchNorm running statistics "
                               f"of a deep net may not describe the data yet); a real run would stop here.")
                return
            raise NonFiniteLossError(
                f"The validation loss of {type(pl_module).__name__} is not finite ({shown}) at epoch "
                f"{trainer.current_epoch}, global step {trainer.global_step}: the weights or the running "
                f"statistics have diverged, so the run was stopped before this epoch's checkpoint. "
                f"{self._good_ckpt(trainer)} Lower the learning rate or enable gradient clipping "
                f"(Trainer gradient_clip_val), then resume from that checkpoint or start again."
            )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._read_flag(trainer, pl_module)
        tensors = _module_tensors(pl_module)
        bad = nonfinite_count(tensors)
        if trainer.world_size > 1:
            bad = int(trainer.strategy.reduce(torch.tensor(float(bad), device=pl_module.device), reduce_op="max"))
        if bad:
            names = [n for n, t in [*pl_module.named_parameters(), *pl_module.named_buffers()]
                     if torch.is_floating_point(t) and not torch.isfinite(t.detach()).all()]
            raise NonFiniteLossError(
                f"The weights of {type(pl_module).__name__} hold {bad} NaN/inf values at epoch "
                f"{trainer.current_epoch}, global step {trainer.global_step} (in {', '.join(names[:4])}"
                f"{', ...' if len(names) > 4 else ''}), although every checked loss was finite; the checkpoint "
                f"was not written. {self._good_ckpt(trainer)} Lower the learning rate or enable gradient "
                f"clipping (Trainer gradient_clip_val), then resume from that checkpoint or start again."
            )
        checkpoint[RECORD_KEY] = {"finite": True, "token": self.token, "global_step": trainer.global_step,
                                  "values_checked": int(sum(t.numel() for t in tensors))}
        if trainer.global_step not in self.saved_steps:
            self.saved_steps.append(trainer.global_step)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get(RECORD_KEY)
        if isinstance(record, dict) and record.get("finite") is True:
            return
        state = checkpoint.get("state_dict", {})
        bad = nonfinite_count(t for t in state.values() if isinstance(t, torch.Tensor))
        if bad:
            raise NonFiniteLossError(
                f"The checkpoint being resumed holds {bad} NaN/inf values in its state_dict (it was not written "
                f"or checked by NonFiniteLossGuard), so training cannot continue from it. Resume from an earlier "
                f"checkpoint or start again."
            )

    # ------------------------------------------------------------------ the message
    def _good_ckpt(self, trainer: pl.Trainer) -> str:
        path = self.last_good_checkpoint(trainer)
        if path:
            return f"The newest checkpoint of this run that passed the finiteness check is {path}."
        return "No checkpoint of this run had passed the finiteness check yet."

    def last_good_checkpoint(self, trainer: pl.Trainer) -> str | None:
        """The newest checkpoint file of this run (same token) whose record says it was checked finite."""
        candidates: set[str] = set()
        for cb in trainer.checkpoint_callbacks:
            for attr in ("last_model_path", "best_model_path"):
                path = getattr(cb, attr, "") or ""
                if path:
                    candidates.add(str(path))
            candidates.update(str(p) for p in getattr(cb, "best_k_models", {}) or {})
            dirpath = getattr(cb, "dirpath", None)
            if dirpath and os.path.isdir(dirpath):
                candidates.update(os.path.join(dirpath, f) for f in os.listdir(dirpath) if f.endswith(".ckpt"))
        best: tuple[int, float, str] | None = None
        for path in candidates:
            record = _read_record(path)
            if record and record.get("finite") is True and record.get("token") == self.token:
                key = (int(record.get("global_step", -1)), os.path.getmtime(path), path)
                if best is None or key > best:
                    best = key
        return best[2] if best else None


def _read_record(path: str) -> dict[str, Any] | None:
    """The guard's record in a checkpoint file, or None (memory-mapped, weights-only load)."""
    if not os.path.isfile(path):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a truncated or foreign file is simply not a good checkpoint of this run
        return None
    record = checkpoint.get(RECORD_KEY) if isinstance(checkpoint, dict) else None
    return record if isinstance(record, dict) else None
