"""Exponential moving average (EMA) of the weights, as the timm ImageNet trainer keeps it (``--model-ema``).

After every optimizer step each parameter and floating-point buffer (batch-norm statistics included) of the
average becomes ``ema = decay * ema + (1 - decay) * w``. The average starts from the weights at the start of
training, so the first step is already a moving-average step (timm's ``ModelEmaV2``; Lightning's
``EMAWeightAveraging`` would copy the weights at the first step instead).

Built on Lightning's ``EMAWeightAveraging`` (``lightning.pytorch.callbacks``), which gives:

* validation runs with the averaged weights (they are swapped in for each validation epoch);
* a checkpoint's ``state_dict`` holds the averaged weights -- so ``load_from_checkpoint`` and any export of
  ``state_dict`` get the average -- and the training weights go under ``current_model_state``; resuming with
  ``trainer.fit(ckpt_path=...)`` restores both;
* at the end of training the averaged weights are copied into the model.

This callback adds: a checked ``decay``, the average kept on each process's own device (not on the CPU where
the model sits when ``setup`` runs), and the timm start described above.

Example::

    trainer = Trainer(callbacks=[WeightEMA(decay=0.999)])

Only torch and lightning are imported: the file works when copied alone into another project.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging


class WeightEMA(EMAWeightAveraging):
    """EMA of the weights with timm's start (see the module docstring).

    Args:
        decay: the EMA decay, strictly between 0 and 1 (e.g. 0.999 or 0.9999).
        start_from_initial_weights: True (timm): the average starts at the weights training starts from, and the
            first optimizer step already blends them; False: Lightning's behaviour (the first step copies).
        use_buffers: average the buffers (batch-norm running statistics) too, as timm does.
        device: where the average lives; None: the device each process trains on.
        update_every_n_steps, update_starting_at_step, update_starting_at_epoch: as in ``EMAWeightAveraging``.
    """

    def __init__(self, decay: float = 0.9998, start_from_initial_weights: bool = True, use_buffers: bool = True,
                 device: str | None = None, update_every_n_steps: int = 1,
                 update_starting_at_step: int | None = None, update_starting_at_epoch: int | None = None) -> None:
        try:
            d = float(decay)
        except (TypeError, ValueError):
            d = math.nan
        if not (0.0 < d < 1.0):
            raise ValueError(f"WeightEMA: decay must be strictly between 0 and 1 (e.g. 0.999), got {decay!r}; "
                             "0 would copy the weights and 1 would never move the average.")
        if isinstance(update_every_n_steps, bool) or not isinstance(update_every_n_steps, int) \
                or update_every_n_steps < 1:
            raise ValueError(f"WeightEMA: update_every_n_steps must be an integer >= 1, got {update_every_n_steps!r}.")
        super().__init__(device=device, use_buffers=use_buffers, decay=d, update_every_n_steps=update_every_n_steps,
                         update_starting_at_step=update_starting_at_step,
                         update_starting_at_epoch=update_starting_at_epoch)
        self.decay = d
        self.start_from_initial_weights = bool(start_from_initial_weights)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._device is None:
            self._device = trainer.strategy.root_device
            try:
                super().setup(trainer, pl_module, stage)
            finally:
                self._device = None
        else:
            super().setup(trainer, pl_module, stage)
        if stage == "fit" and self._average_model is not None and self.start_from_initial_weights:
            # the average already holds the initial weights: count them as one average, so that the first
            # update blends (timm) rather than copies
            self._average_model.n_averaged.fill_(1)

    @property
    def average_model(self) -> Any:
        """The ``torch.optim.swa_utils.AveragedModel`` holding the average (None outside fit)."""
        return self._average_model
