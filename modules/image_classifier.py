"""ImageClassifier: supervised training of any registered net with cross-entropy.

Cross-entropy with optional label smoothing (Szegedy et al., 2016), torchmetrics top-1/top-5 accuracy, the
optimizer and LR schedule from YAML (LightningCLI ``OptimizerCallable`` / ``LRSchedulerCallable``).

Example (YAML)::

    model:
      class_path: modules.ImageClassifier
      init_args:
        net: resnet56
        net_kwargs: {shortcut: A}
        optimizer:
          class_path: torch.optim.SGD
          init_args: {lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
        lr_scheduler:
          class_path: torch.optim.lr_scheduler.MultiStepLR
          init_args: {milestones: [80, 120], gamma: 0.1}

``num_classes`` and ``input_shape`` are linked from the datamodule by main.py.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import lightning.pytorch as pl
from nets import create_net


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


class ImageClassifier(pl.LightningModule):
    """Classifies images with a net from ``nets.create_net``.

    Args:
        net: a name from ``nets.list_nets()`` (``torchvision.<name>`` for any torchvision classifier).
        num_classes: number of classes (linked from the datamodule).
        input_shape: (C, H, W) of one input (linked from the datamodule); sets ``example_input_array``.
        net_kwargs: extra constructor arguments of the net (e.g. ``shortcut``, ``block_widths``, ``cfg``).
        optimizer: optimizer factory taking the parameters.
        lr_scheduler: optional scheduler factory taking the optimizer.
        lr_scheduler_interval: ``epoch`` or ``step``: how often the scheduler steps.
        label_smoothing: label smoothing of the cross-entropy.
        warmup_steps: optimizer steps at the start run at ``warmup_factor`` times the scheduled learning rate
            (He et al. 2016 train ResNet-110 at lr 0.01 for the first ~400 iterations, then 0.1).
        warmup_factor: learning-rate multiplier during warm-up.
        log_images: log a grid of the first training batch's inputs to loggers that take images (W&B).
    """

    def __init__(
        self,
        net: str = "resnet20",
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net = create_net(net, num_classes=num_classes, in_channels=input_shape[0], **(net_kwargs or {}))
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, *input_shape)
        self.best_val_acc1: float | None = None  # running max, logged as val/acc1_best (saved in checkpoints)
        top5 = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_acc{k}": MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test")
                for k in sorted({1, top5})
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        on_step = stage == "train"
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=sync,
                 batch_size=x.shape[0])
        for name, metric in self.metrics.items():
            if name.startswith(stage):
                metric.update(logits, y)  # epoch-level only: no per-batch compute
                k = name.split("_acc")[1]
                self.log(f"{stage}/acc{k}", metric, on_step=False, on_epoch=True, prog_bar=(k == "1"),
                         batch_size=x.shape[0])
        self.update_extra_metrics(logits.detach(), y, stage)
        return loss

    def update_extra_metrics(self, logits: torch.Tensor, targets: torch.Tensor, stage: str) -> None:
        """Hook for subclasses that track more metrics from the same forward pass (no-op here)."""

    def on_validation_epoch_end(self) -> None:
        """Logs ``val/acc1_best``, the best top-1 so far: papers such as Li et al. (2017) report the best
        accuracy seen during (re)training, so recipes log it beside the final one."""
        if self.trainer.sanity_checking:
            return
        acc = float(self.metrics["val_acc1"].compute())
        self.best_val_acc1 = acc if self.best_val_acc1 is None else max(self.best_val_acc1, acc)
        self.log("val/acc1_best", self.best_val_acc1, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["best_val_acc1"] = self.best_val_acc1

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_acc1 = checkpoint.get("best_val_acc1")
        # a net pruned by callbacks/l1_filter_pruning.py that hparams cannot rebuild (e.g. a torchvision model)
        # is reshaped from the structure stored in the checkpoint before the weights are loaded
        state = checkpoint.get("l1_filter_pruning")
        if state and state.get("pruned"):
            from callbacks.l1_filter_pruning import layer_widths, rebuild_pruned_model

            if layer_widths(self.net) != state.get("widths", layer_widths(self.net)):
                rebuild_pruned_model(self, checkpoint, load_weights=False)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.log_images and batch_idx == 0 and self.current_epoch == 0:
            self._log_input_grid(batch[0])
        return self._step(batch, "train")

    def _log_input_grid(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            return
        loggers = [lg for lg in self.loggers if hasattr(lg, "log_image")]
        if not loggers or not self.trainer.is_global_zero:
            return
        from torchvision.utils import make_grid

        grid = make_grid(x[:16].detach().float().cpu(), nrow=8, normalize=True, scale_each=True)
        for logger in loggers:
            logger.log_image(key="inputs/train_batch", images=[grid], step=self.global_step)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        if self.trainer.global_step >= self.hparams.warmup_steps:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= self.hparams.warmup_factor
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in zip(optimizer.param_groups, scheduled):
                group["lr"] = lr

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.lr_scheduler_interval},
        }
