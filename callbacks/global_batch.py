"""Fix the global batch of a run; derive the per-device batch and gradient accumulation from the device count.

A recipe that says "global batch 2048" then means the same optimisation on 1, 8 or 64 devices: with ``W``
processes and a per-device memory limit of ``max_device_batch_size`` images, each process loads
``global_batch_size / W / A`` images per forward pass and accumulates ``A`` of them per optimizer step, with the
smallest ``A`` that keeps the per-device batch within the limit. The learning rate belongs to the global batch,
so it does not change with the device count (if you change ``global_batch_size``, scale the learning rate
yourself, e.g. linearly).

At ``setup`` the callback writes the per-device batch into the datamodule's (or the LightningModule's)
``batch_size`` attribute and the accumulation into ``trainer.accumulate_grad_batches``. At the start of fit it
also checks every learning-rate scheduler that offers ``check_run_length(max_epochs, key)`` (the epoch
schedules of modules/schedules.py do) against ``trainer.max_epochs``, so a schedule that does not fit the run
fails before the first step (not in a ``fast_dev_run``).

What stays different from one big batch: batch-norm statistics are computed over the per-device batch.

Example::

    trainer = Trainer(devices=8, callbacks=[GlobalBatchSize(global_batch_size=2048, max_device_batch_size=256)])

Only torch and lightning are imported: the file works when copied alone into another project.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.parsing import lightning_hasattr, lightning_setattr


def split_global_batch(global_batch_size: int, world_size: int, max_device_batch_size: int | None) -> tuple[int, int]:
    """``(per_device_batch, accumulate_grad_batches)`` for ``world_size`` processes; ValueError when it does not
    divide."""
    if global_batch_size % world_size:
        raise ValueError(
            f"GlobalBatchSize: global_batch_size={global_batch_size} cannot be split evenly over {world_size} "
            f"processes (devices x nodes); use a device count that divides {global_batch_size}, or change "
            "global_batch_size (and scale the learning rate with it).")
    per_rank = global_batch_size // world_size
    limit = per_rank if max_device_batch_size is None else max_device_batch_size
    for accumulate in range(1, per_rank + 1):
        if per_rank % accumulate == 0 and per_rank // accumulate <= limit:
            return per_rank // accumulate, accumulate
    raise AssertionError("unreachable: accumulate = per_rank always fits")


class GlobalBatchSize(Callback):
    """Keeps the global batch fixed (see the module docstring).

    Args:
        global_batch_size: images per optimizer step, summed over all processes and accumulated batches.
        max_device_batch_size: the most images one device may take in a forward pass; None: the ``batch_size``
            the datamodule (or LightningModule) was built with.
        check_schedules: check the learning-rate schedulers against ``trainer.max_epochs`` at the start of fit.
    """

    def __init__(self, global_batch_size: int, max_device_batch_size: int | None = None,
                 check_schedules: bool = True) -> None:
        for key, value in (("global_batch_size", global_batch_size), ("max_device_batch_size", max_device_batch_size)):
            if value is None and key == "max_device_batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GlobalBatchSize: {key} must be an integer >= 1, got {value!r}.")
        self.global_batch_size = global_batch_size
        self.max_device_batch_size = max_device_batch_size
        self.check_schedules = check_schedules
        self.device_batch_size: int | None = None
        self.accumulate_grad_batches: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not lightning_hasattr(pl_module, "batch_size"):
            raise ValueError(
                "GlobalBatchSize: neither the datamodule nor the LightningModule has a batch_size attribute to set "
                "the per-device batch in; give your datamodule a batch_size attribute that its dataloaders read.")
        if stage == "fit" and trainer.accumulate_grad_batches != 1 and self.accumulate_grad_batches is None:
            raise ValueError(
                f"GlobalBatchSize: the Trainer was given accumulate_grad_batches={trainer.accumulate_grad_batches}, "
                "but this callback derives it from global_batch_size and the device count; leave "
                "accumulate_grad_batches at 1.")
        limit = self.max_device_batch_size
        if limit is None:
            from lightning.pytorch.utilities.parsing import lightning_getattr
            limit = self.device_batch_size or int(lightning_getattr(pl_module, "batch_size"))
        batch, accumulate = split_global_batch(self.global_batch_size, trainer.world_size, limit)
        self.device_batch_size, self.accumulate_grad_batches = batch, accumulate
        lightning_setattr(pl_module, "batch_size", batch)
        if stage == "fit":
            trainer.accumulate_grad_batches = accumulate

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.check_schedules or trainer.fast_dev_run:  # a debugging run is not the schedule's run
            return
        for config in trainer.lr_scheduler_configs:
            check = getattr(config.scheduler, "check_run_length", None)
            if callable(check) and config.interval == "epoch":
                check(trainer.max_epochs, "max_epochs")
            elif callable(check):
                raise ValueError(
                    f"{type(config.scheduler).__name__} is written in epochs but is stepped every "
                    f"{config.interval}; step it once per epoch (lr_scheduler interval 'epoch').")
