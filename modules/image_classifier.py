"""ImageClassifier: supervised training of any image classification net with cross-entropy.

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

``num_classes`` and ``input_shape`` are linked from the datamodule by main.py. Your own network class works the
same way (LightningCLI builds it; the hyperparameters keep this description, so ``load_from_checkpoint`` rebuilds
it)::

        net:
          class_path: my_project.nets.MiniVGG
          init_args: {num_classes: 10}

In Python, pass your own network (any ``nn.Module`` mapping images to logits)::

    model = ImageClassifier(net=MyNet(num_classes=10), num_classes=10, input_shape=(3, 32, 32))
    ...
    model = ImageClassifier.load_from_checkpoint(path, net=MyNet(num_classes=10))  # the net is not pickled

A checkpoint of a filter-pruned net (callbacks/l1_filter_pruning.py) loads through ``load_from_checkpoint`` and
``trainer.validate/test/fit(ckpt_path=...)`` without the pruning callback: :meth:`ImageClassifier.on_load_checkpoint`
narrows the freshly built net to the saved widths before the weights are loaded.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import lightning.pytorch as pl
from modules.net_args import store_net_hparams
from modules.step_logging import at_logging_step, log_train_value
from nets.registry import resolve_net
from nets.resize import ResizeError, conv_widths, resize_to_state_dict

PRUNING_KEY = "l1_filter_pruning"  # the checkpoint entry callbacks/l1_filter_pruning.py writes
PRUNED_MARK = "_l1_filter_pruning_state"  # set on a narrowed module: that callback then never prunes it again


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


class ImageClassifier(pl.LightningModule):
    """Classifies images with any network.

    Args:
        net: the network: an ``nn.Module`` mapping ``(B, *input_shape)`` to ``(B, num_classes)`` logits, a
            ``{class_path, init_args}`` description of one, or a name from ``nets.list_nets()``
            (``torchvision.<name>`` for any torchvision classifier). Only names and descriptions are stored in
            the hyperparameters: give a module again to ``load_from_checkpoint(path, net=...)``.
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
        log_images: log a grid of training inputs to loggers that take images (W&B), once, at the first step whose
            values are logged (``Trainer(log_every_n_steps=...)``), so that reading the images back from the device
            costs no extra synchronisation.
        compile: compile the net in place with ``torch.compile`` (``nn.Module.compile``) when fitting starts:
            ``True`` for the default backend (inductor), or a backend name (e.g. ``aot_eager``). The state-dict keys
            stay those of the eager net, so checkpoints load, resume and export without it (``load_from_checkpoint``
            returns an eager module); layers replaced during training (filter pruning, quantized training) are
            recompiled on their next use. Compiling takes a while at the first steps (and inductor needs a C
            compiler on the CPU).
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        store_net_hparams(self, {"net": net})
        self.net = resolve_net(net, arg="net", num_classes=num_classes, in_channels=input_shape[0],
                               kwargs=net_kwargs, owner=type(self).__name__)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, *input_shape)
        self.best_val_acc1: float | None = None  # running max, logged as val/acc1_best (saved in checkpoints)
        top5 = min(5, num_classes)
        # training batches skip torchmetrics' input checks: they read the device (torch.unique) on every step
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_acc{k}": MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro",
                                                      validate_args=stage != "train")
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
        if stage == "train":  # the step value only at logging steps: no device read per step
            log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        else:
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=x.shape[0])
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
        self.restore_pruned_widths(checkpoint)

    def restore_pruned_widths(self, checkpoint: dict[str, Any]) -> None:
        """Narrows ``self.net`` to the layer widths of a filter-pruned checkpoint before its weights are loaded.

        Runs from ``on_load_checkpoint``, so ``load_from_checkpoint`` and ``trainer.fit/validate/test(ckpt_path=)``
        load a pruned checkpoint without the pruning callback. The widths come from the saved tensors' shapes and
        are checked against those the pruning callback recorded (its ``l1_filter_pruning`` entry). A checkpoint
        without that entry is left alone.
        """
        state = checkpoint.get(PRUNING_KEY)
        if not state or not state.get("pruned"):
            return
        target = state.get("target", "net")
        if target not in ("net", ""):
            return  # pruned some other submodule: only its own callback knows how to rebuild it
        widths = {k[len("net."):] if target == "" and k.startswith("net.") else k: int(v)
                  for k, v in (state.get("widths") or {}).items()}
        self.__dict__[PRUNED_MARK] = {**state, "pruned": True}
        if conv_widths(self.net) == widths:
            return  # built pruned already (e.g. the widths are in net_kwargs)
        try:
            resize_to_state_dict(self.net, checkpoint["state_dict"], prefix="net.")
        except ResizeError as err:
            raise ResizeError(f"{type(self).__name__}: cannot rebuild the pruned net of this checkpoint: {err}") \
                from None
        now = conv_widths(self.net)
        wrong = [n for n, w in widths.items() if now.get(n) != w]
        if wrong:
            raise ResizeError(
                f"{type(self).__name__}: the checkpoint was saved from a pruned net whose layers "
                f"{', '.join(wrong[:4])} do not exist or have other widths in the net given ({type(self.net).__name__}); "
                "pass the same architecture the pruned run started from (net=...)."
            )

    def setup(self, stage: str) -> None:
        backend = self.hparams.get("compile")
        if stage == "fit" and backend and not getattr(self.net, "_compiled_call_impl", None):
            # in place: parameter names and state-dict keys are unchanged
            self.net.compile(**({} if backend is True else {"backend": str(backend)}))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.maybe_log_input_grid(batch[0])
        return self._step(batch, "train")

    def maybe_log_input_grid(self, x: torch.Tensor) -> None:
        """Logs the input grid once, at the first logging step of the run (see ``log_images``)."""
        if not self.hparams.get("log_images") or getattr(self, "_input_grid_logged", False):
            return
        if at_logging_step(self):
            self._input_grid_logged = True
            self._log_input_grid(x)

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
