"""Per-step training values logged without a host-device synchronisation on every step.

Lightning converts every value logged with ``on_step=True, prog_bar=True`` to a Python number after each batch
(for the progress bar), and keeps converting the last one until the epoch ends even when it is not logged again.
On a GPU each conversion waits for all queued work: one stall per step. :func:`log_train_value` gives the user the
same keys as ``self.log(name, value, on_step=True, on_epoch=True, prog_bar=...)`` while reading nothing between
logging steps:

* ``<name>_epoch`` (logger and progress bar) and ``<name>`` (callbacks, e.g. a ``monitor``) are epoch means
  accumulated on the device (``on_step=False, on_epoch=True``): read once, when the epoch ends;
* ``<name>_step`` goes to the logger and the progress bar only at the steps the trainer writes logs
  (``Trainer(log_every_n_steps=...)``); between them its cached value is dropped, so the progress bar keeps
  showing the last logged number without reading the device again.

Used by every LightningModule in ``modules/``; works for your own module the same way::

    from modules.step_logging import log_train_value
    log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=x.shape[0])
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

__all__ = ["at_logging_step", "log_train_value"]


def at_logging_step(module: pl.LightningModule) -> bool:
    """True when the trainer writes this training step's values to its loggers (every ``log_every_n_steps``
    optimizer steps, every step under ``fast_dev_run``, and when the run is stopping); True without a trainer."""
    trainer = module._trainer
    if trainer is None:
        return True
    if trainer.fast_dev_run or trainer.should_stop:
        return True
    every = trainer.log_every_n_steps
    if not every:
        return False
    # the count the trainer's own logging decision uses (+1: it is read before this step's count is increased)
    stepped = trainer.fit_loop.epoch_loop._batches_that_stepped
    return (stepped + 1) % every == 0


def _drop_step_cache(module: pl.LightningModule, key: str) -> None:
    """Marks the stored ``key`` of the current hook as reset, so Lightning stops converting its stale value."""
    results = getattr(module._trainer, "_results", None)
    if results is None:
        return
    item = results.get(f"{module._current_fx_name}.{key}")
    if item is not None and not getattr(item, "has_reset", True):
        item.reset()


def log_train_value(module: pl.LightningModule, name: str, value: Any, prog_bar: bool = False,
                    batch_size: int | None = None, sync_dist: bool = False, **kwargs: Any) -> None:
    """Logs a training-step value as ``<name>_step`` (at logging steps), ``<name>_epoch`` and ``<name>`` (epoch
    means); see the module docstring. ``kwargs`` go to ``LightningModule.log``."""
    module.log(f"{name}_epoch", value, on_step=False, on_epoch=True, prog_bar=prog_bar, batch_size=batch_size,
               sync_dist=sync_dist, **kwargs)
    module.log(name, value, on_step=False, on_epoch=True, logger=False, batch_size=batch_size,
               sync_dist=sync_dist, **kwargs)
    if at_logging_step(module):
        module.log(f"{name}_step", value, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=batch_size,
                   **kwargs)
    elif module._trainer is not None:
        _drop_step_cache(module, f"{name}_step")
