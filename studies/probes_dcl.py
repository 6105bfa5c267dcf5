"""Measurements the DCL study (studies/dcl_glyphs.yaml) takes inside a run, as Lightning callbacks: they log
scalars and change nothing in the training."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader


def is_last_training_epoch(trainer: pl.Trainer) -> bool:
    """True in ``on_train_epoch_end`` of the epoch after which ``fit`` stops by ``max_epochs`` or ``max_steps``
    (or a callback already asked it to stop)."""
    if trainer.should_stop:
        return True
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps


class TrainAccuracyAtEnd(pl.Callback):
    """Top-1 accuracy (%) on the training split *as trained on* (after any shift of the datamodule: the
    long-tailed subset, the noisy labels), in eval mode, on the weights of the last training epoch; logged as
    ``key`` at the end of that epoch, so it lands in ``metrics/fit.json`` beside the test metrics of
    ``main.py test`` (the generalization gap of a run is then ``key`` minus its test accuracy).

    The split is read from the datamodule's ``train_set`` (a Dataset of ``(image, label, ...)``) in its stored
    order, without the training sampler, so the measurement draws no random numbers and leaves the batch order of
    a resumed run alone. When the datamodule keeps the labels before a label-noise shift (``train_clean_labels``,
    as ``GlyphsDataModule`` does), the accuracy against them is logged too, as ``clean_key``.
    """

    def __init__(self, key: str = "end/train_acc1", clean_key: str = "end/train_acc1_clean",
                 batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError(f"TrainAccuracyAtEnd: batch_size must be >= 1, got {batch_size!r}")
        self.key, self.clean_key, self.batch_size = key, clean_key, int(batch_size)

    @torch.no_grad()
    def measure(self, pl_module: pl.LightningModule, datamodule: Any) -> dict[str, float]:
        dataset = getattr(datamodule, "train_set", None)
        if dataset is None:
            raise ValueError(
                f"TrainAccuracyAtEnd needs a datamodule with a train_set attribute (the training Dataset after "
                f"setup); {type(datamodule).__name__} has none. Remove the callback from the recipe or give the "
                "datamodule a train_set.")
        was_training = pl_module.training
        pl_module.eval()
        preds, labels = [], []
        try:
            for batch in DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0):
                x, y = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
                preds.append(pl_module(x).argmax(1).cpu())
                labels.append(y.cpu())
        finally:
            pl_module.train(was_training)
        pred, label = torch.cat(preds), torch.cat(labels)
        out = {self.key: 100.0 * int((pred == label).sum()) / len(label)}
        clean = getattr(datamodule, "train_clean_labels", None)
        if isinstance(clean, torch.Tensor) and len(clean) == len(pred):
            out[self.clean_key] = 100.0 * int((pred == clean.cpu()).sum()) / len(pred)
        return out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not is_last_training_epoch(trainer):
            return
        for key, value in self.measure(pl_module, trainer.datamodule).items():
            pl_module.log(key, value, on_step=False, on_epoch=True)
