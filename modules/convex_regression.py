"""RidgeRegression: a linear model trained on a ridge-regression objective, the strongly convex problem on which
Li et al. (NeurIPS 2017, docs/quantized_training.md) compare quantized-training rules.

The model is one ``nn.Linear(d, 1, bias=False)`` (``self.linear``), initialised uniformly in
``[-init_scale, init_scale]``; the loss of a minibatch (x, y) is

    1/2 mean((x w - y)^2) + mu/2 ||w||^2,

an unbiased estimate of the datamodule's objective F(w) (datamodules/convex_regression.py). The penalty ``mu``
belongs to the problem, so by default it is read from the datamodule when fitting starts. Everything a study needs
for quantized training comes from the project's callback (callbacks/quantized_training.py) on ``self.linear``:
under BC the data term is evaluated at the quantized weights (the callback's forward hook) while the penalty reads
``self.linear.weight`` directly, i.e. the float buffer.

Example (YAML)::

    model:
      class_path: modules.convex_regression.RidgeRegression
      init_args:
        optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.4}}
        lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 1, gamma: 0.5}}
    data:
      class_path: datamodules.convex_regression.RidgeRegressionDataModule
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

import lightning.pytorch as pl
from modules.step_logging import log_train_value


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1)


class RidgeRegression(pl.LightningModule):
    """Linear least squares with a ridge penalty (see the module docstring).

    Args:
        input_shape: ``(d,)``, linked from the datamodule.
        num_classes: outputs of the model, linked from the datamodule; must be 1 (one regression target).
        penalty: the ridge penalty mu; ``None`` (default) reads the datamodule's ``mu`` when fitting starts (a
            value that differs from the datamodule's is refused).
        init_scale: initial weights uniform in ``[-init_scale, init_scale]``.
        optimizer: optimizer factory taking the parameters.
        lr_scheduler: optional scheduler factory taking the optimizer.
        lr_scheduler_interval: ``epoch`` or ``step``: how often the scheduler steps.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (10,),
        num_classes: int = 1,
        penalty: float | None = None,
        init_scale: float = 1.0,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__()
        if len(tuple(input_shape)) != 1:
            raise ValueError(f"RidgeRegression: input_shape must be (d,) (one feature vector per row), got "
                             f"{tuple(input_shape)}; use it with a tabular datamodule such as "
                             "datamodules.convex_regression.RidgeRegressionDataModule")
        if num_classes != 1:
            raise ValueError(f"RidgeRegression: one regression target only (num_classes 1), got {num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.linear = nn.Linear(int(input_shape[0]), 1, bias=False)
        nn.init.uniform_(self.linear.weight, -init_scale, init_scale)
        self.mu = None if penalty is None else float(penalty)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(1)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data_mu = getattr(datamodule, "mu", None)
        if self.mu is None:
            if data_mu is None:
                raise ValueError("RidgeRegression: penalty is not set and the datamodule has no 'mu' (the ridge "
                                 "penalty of its problem); set model.init_args.penalty, or use "
                                 "datamodules.convex_regression.RidgeRegressionDataModule")
            self.mu = float(data_mu)
        elif data_mu is not None and float(data_mu) != self.mu:
            raise ValueError(f"RidgeRegression: model.init_args.penalty is {self.mu} but the datamodule's problem has "
                             f"mu {data_mu}; leave model.init_args.penalty unset to use the datamodule's")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        r = self(x) - y
        loss = 0.5 * (r * r).mean() + 0.5 * self.mu * (self.linear.weight.float() ** 2).sum()
        log_train_value(self, "train/loss", loss, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.lr_scheduler_interval}}
