"""Distributionally constrained learning (DCL): classification trained as a constrained problem.

**The project's design.** Anil Kag's thesis names DCL as a training algorithm that enforces several
distributional constraints during training for better generalization; no paper or code is public
(docs/dcl.md), so this is a principled method matching that description, not a reproduction:

    minimise_theta  E[loss]   subject to   g_k(P_theta) <= eps_k,  k = 1..K

solved by primal-dual updates on the Lagrangian ``E[loss] + sum_k lambda_k (g_k - eps_k)``: one optimizer step
on theta per batch (on the Lagrangian divided by ``1 + sum_k lambda_k`` with ``normalize_lagrangian``, the default), then
projected dual ascent ``lambda_k <- max(0, lambda_k + dual_lr (g_k - eps_k))``
(``modules.constraints.Constraint`` in mode ``dual_ascent``, the engine OSP, the hybrid router and DiSK share).
A multiplier grows while its constraint is violated and decays to zero once it holds, so a satisfied constraint
stops pulling. The constraints g_k (``modules.dcl_constraints``: worst-class loss, loss CVaR, predicted-label
prior KL, calibration gap, a floor on the mean training loss) are estimated from running averages over batches,
so they describe the distribution rather than one batch.

Example (YAML)::

    model:
      class_path: modules.dcl.DCLClassifier
      init_args:
        net: resnet20
        constraints:
          worst_class_loss: {eps: 0.6}
          label_prior_kl: {eps: 0.01, prior: uniform}
        dual_lr: 0.05

With ``constraints: {}`` it trains exactly like :class:`modules.image_classifier.ImageClassifier`. Logged:
``train/loss`` (the mean loss), ``train/lagrangian``, ``constraints/<name>/{value,lambda,bound,violation}``
and, at validation and test, ``{val,test}/acc_worst_class`` (the lowest per-class accuracy).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from modules.constraints import Constraint
from modules.dcl_constraints import DCLConfigError, build_constraint
from modules.image_classifier import ImageClassifier, _default_optimizer
from modules.net_args import store_net_hparams
from modules.step_logging import log_train_value

__all__ = ["DCLClassifier"]


class DCLClassifier(ImageClassifier):
    """ImageClassifier trained by DCL primal-dual updates (see the module docstring).

    Args (beyond :class:`ImageClassifier`'s; ``net`` is an ``nn.Module``, a registry name or a class_path
    description, as there):
        constraints: ``{name: {eps: bound, ...options}}``; names and options in ``modules.dcl_constraints``.
        dual_lr: dual ascent step size of every multiplier.
        dual_max: upper clamp of the multipliers (``None``: unbounded).
        momentum: EMA momentum of the running statistics (per constraint ``momentum`` overrides it).
        normalize_lagrangian: take the primal step on ``L / (1 + sum_k lambda_k)`` (same stationary points, but the step
            size stays bounded while multipliers grow: the objective becomes a convex combination of the mean
            loss and the constraints, as in group-DRO style updates); ``False`` steps on ``L`` itself.
    """

    def __init__(
        self,
        net: str | nn.Module | None = "resnet20",
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (3, 32, 32),
        net_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        label_smoothing: float = 0.0,
        warmup_steps: int = 0,
        warmup_factor: float = 0.1,
        log_images: bool = True,
        compile: bool | str = False,
        constraints: dict[str, dict[str, Any]] | None = None,
        dual_lr: float = 0.05,
        dual_max: float | None = None,
        momentum: float = 0.9,
        normalize_lagrangian: bool = True,
    ) -> None:
        super().__init__(net, num_classes, input_shape, net_kwargs, optimizer, lr_scheduler, lr_scheduler_interval,
                         label_smoothing, warmup_steps, warmup_factor, log_images, compile)
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        store_net_hparams(self, {"net": net})
        if not dual_lr > 0:
            raise DCLConfigError(
                f"DCLClassifier: dual_lr must be > 0 (the multipliers' ascent step), got {dual_lr!r}.")
        if constraints is not None and not isinstance(constraints, dict):
            raise DCLConfigError("DCLClassifier: constraints must be a mapping {name: {eps: ..., ...}}, got "
                                 f"{type(constraints).__name__}.")
        self.dcl_constraints = nn.ModuleDict()
        self.multipliers = nn.ModuleDict()
        for name, options in (constraints or {}).items():
            options = {"momentum": momentum, **(options or {})}
            g = build_constraint(name, num_classes, options)
            self.dcl_constraints[name] = g
            self.multipliers[name] = Constraint(name, mode="dual_ascent", bound=g.eps, lr=dual_lr,
                                                max_value=dual_max, hinge=False)
        self._last_values: dict[str, torch.Tensor] = {}
        self.class_metrics = nn.ModuleDict({
            stage: MulticlassAccuracy(num_classes=num_classes, average="none") for stage in ("val", "test")
        })

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.maybe_log_input_grid(batch[0])
        x, y = batch[0], batch[1]
        logits = self(x)
        losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.hparams.label_smoothing)
        loss = losses.mean()
        lagrangian = loss
        total_lambda = 1.0  # a device tensor once a multiplier is added: no read per step
        for name, g in self.dcl_constraints.items():
            value = g(logits, y, losses)
            lagrangian = lagrangian + self.multipliers[name].penalty(value)
            total_lambda = total_lambda + self.multipliers[name].multiplier.detach().sum()
            self._last_values[name] = value.detach()
        if self.hparams.normalize_lagrangian:
            lagrangian = lagrangian / total_lambda
        n = x.shape[0]
        log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/lagrangian", lagrangian, on_step=True, on_epoch=False, batch_size=n)
        for key, metric in self.metrics.items():
            if key.startswith("train"):
                metric.update(logits.detach(), y)
                self.log(f"train/acc{key.split('_acc')[1]}", metric, on_step=False, on_epoch=True, batch_size=n)
        return lagrangian

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Projected dual ascent on every multiplier with the running constraint value (same on every rank)."""
        for name, multiplier in self.multipliers.items():
            if name in self._last_values:
                multiplier.update(value=self._last_values[name])
                self.log_dict(multiplier.log_dict(), on_step=True, on_epoch=False)

    def update_extra_metrics(self, logits: torch.Tensor, targets: torch.Tensor, stage: str) -> None:
        if stage in self.class_metrics:
            self.class_metrics[stage].update(logits, targets)

    def _log_worst_class(self, stage: str) -> None:
        per_class = self.class_metrics[stage].compute()
        self.log(f"{stage}/acc_worst_class", per_class.min(), sync_dist=True)
        self.class_metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_worst_class("val")

    def on_test_epoch_end(self) -> None:
        self._log_worst_class("test")
