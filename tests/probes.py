"""Test-only Lightning callbacks that record what a run did (used through main.py's --trainer.callbacks+=)."""

from __future__ import annotations

import hashlib
import json
import os

import torch

import lightning.pytorch as pl


def params_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class LossRecorder(pl.Callback):
    """Keeps the training loss of every global step and the weights' digest at train start."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.start_digest: str | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_digest = params_digest(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses[trainer.global_step - 1] = float(loss)


class NaNInjector(pl.Callback):
    """Makes the first parameter NaN before the training batch of global step ``at_step``."""

    def __init__(self, at_step: int = 3) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        only = os.environ.get("NAN_RANK")  # under DDP: inject on this rank only
        if only is not None and trainer.global_rank != int(only):
            return
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class DataProbe(pl.Callback):
    """Under DDP: each rank writes the digests of the samples it trained on and its final logged metrics."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.samples: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            for x in batch[0]:
                self.samples.append(hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest())

    def on_fit_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"rank": trainer.global_rank, "world_size": trainer.world_size,
                       "samples": self.samples, "metrics": metrics}, f)


class Poison(pl.Callback):
    """Writes NaN/inf into the module at a chosen point, to test what the NonFiniteLossGuard lets reach disk.

    ``what``: ``running_var`` (the first BatchNorm's running variance: the training loss stays finite, the
    evaluation output does not) or ``param`` (the first parameter). ``when``: ``train_epoch_end`` (after the
    epoch's last step, before its checkpoint) or ``train_epoch_start``.
    """

    def __init__(self, at_epoch: int = 1, what: str = "running_var", when: str = "train_epoch_end",
                 value: float = float("inf")) -> None:
        self.at_epoch, self.what, self.when, self.value = at_epoch, what, when, value

    def _poison(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.at_epoch:
            return
        with torch.no_grad():
            if self.what == "running_var":
                bn = next(m for m in pl_module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
                bn.running_var.fill_(self.value)
            else:
                next(pl_module.parameters()).fill_(self.value)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.when == "train_epoch_start":
            self._poison(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.when == "train_epoch_end":
            self._poison(trainer, pl_module)
