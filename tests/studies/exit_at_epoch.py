"""Test-only callback: kills the process (``os._exit``, no cleanup, like a killed job) when a training epoch starts,
so a study's run is interrupted deterministically after the checkpoint of the previous epoch was written.

Driven by the environment, so the run's configuration (and identity) is the same whether it is killed or not:
``STUDIES_TEST_EXIT_AT_EPOCH=k`` exits when epoch k starts; ``STUDIES_TEST_LOG=path`` appends one line per
training start: ``<run dir> <epoch it starts at>``.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl


class ExitAtEpoch(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log = os.environ.get("STUDIES_TEST_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{trainer.default_root_dir} {trainer.current_epoch}\n")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        at = os.environ.get("STUDIES_TEST_EXIT_AT_EPOCH")
        if at is not None and trainer.current_epoch == int(at):
            os._exit(3)
