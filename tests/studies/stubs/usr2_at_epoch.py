"""Test-only callback: sends SIGUSR2 to its own process when training epoch ``STUDIES_TEST_USR2_AT_EPOCH`` starts,
on the job's first attempt only (``SLURM_RESTART_COUNT`` 0), as SLURM does ``signal_delay_s`` before a time limit.
Driven by the environment, so the run's configuration (identity) does not change."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class Usr2AtEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        at = os.environ.get("STUDIES_TEST_USR2_AT_EPOCH")
        if at is not None and trainer.current_epoch == int(at) and os.environ.get("SLURM_RESTART_COUNT") == "0":
            os.kill(os.getpid(), signal.SIGUSR2)
