"""Measurements a study takes inside a run, as Lightning callbacks (no training changes)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class TestAccuracyAtStart(pl.Callback):
    """Top-1 accuracy (%) on the datamodule's test split when training starts, after every ``setup`` hook (so
    after a pruning callback removed its filters), logged as ``key`` at the end of every training epoch.

    Measured only on a fresh start (global step 0) and kept in the checkpoint, so a resumed run reports the value
    of its first start, not of the weights it resumed from.
    """

    def __init__(self, key: str = "start/test_acc1") -> None:
        self.key = key
        self.value: float | None = None

    @torch.no_grad()
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step > 0 or self.value is not None:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "test_dataloader"):
            raise ValueError(f"{type(self).__name__} needs a datamodule with a test_dataloader")
        was_training = pl_module.training
        pl_module.eval()
        correct = total = 0
        for batch in datamodule.test_dataloader():
            c, n = self.count_correct(pl_module, batch)
            correct, total = correct + c, total + n
        pl_module.train(was_training)
        self.value = 100.0 * correct / max(1, total)

    def count_correct(self, pl_module: pl.LightningModule, batch: Any) -> tuple[int, int]:
        """(correct top-1 predictions, examples) of one test batch ``(x, y, ...)``; override for other batches."""
        x, y = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
        return int((pl_module(x).argmax(1) == y).sum()), len(y)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.value is not None:
            pl_module.log(self.key, self.value, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.value = state_dict.get("value")
