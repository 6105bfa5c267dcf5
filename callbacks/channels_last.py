"""ChannelsLast: train convolutional nets in the NHWC ("channels last") memory format.

Drop-in Lightning callback (imports only torch and lightning). Under mixed precision on a GPU, cuDNN's tensor-core
convolutions want NHWC; with NCHW weights bf16 autocast gains little or nothing. Measured on an H100 with this
repository's nets (results/gpu_plain_loop.md, plain PyTorch loop): ResNet-56 CIFAR at batch 1024, bf16 NCHW 11.1k
images/s vs bf16 NHWC 37.8k (3.4x); SI-MobileNetV3 ImageNet at batch 256, 1.8k vs 3.1k (1.8x). Converting the
weights is enough: a convolution with an NHWC weight returns NHWC activations, so the layout propagates from the
first layer on and the inputs need no change.

The module is converted when fitting starts and again whenever a 4-D parameter is found in the old layout at the
start of a training batch, so it composes with callbacks that replace layers during training (e.g. filter pruning,
which rebuilds convolutions) without knowing about them. Parameters are converted in place (same ``Parameter``
objects), so optimizers keep working. Checkpoints hold ordinary tensors and load into NCHW models unchanged.

On the CPU it only changes the weights' memory layout (oneDNN convolutions take NHWC as well): the same training
to float rounding, with speed that may go either way; the project's bf16-mixed recipes of convolutional nets list
it by default (added by recipes/migrations/channels_last_bf16.py). It composes with ``torch.compile`` of the net
(a new layout is a new input to the compiled graph, which is recompiled once) and with per-step checks: finding
the layout needs no read of tensor values, so it adds no host-device synchronisation.

Example::

    trainer = Trainer(precision="bf16-mixed", callbacks=[ChannelsLast()])

or in a recipe / on the command line: ``--trainer.callbacks+=callbacks.channels_last.ChannelsLast``.
"""

from __future__ import annotations

from typing import Any

import torch

import lightning.pytorch as pl


def _needs_conversion(module: torch.nn.Module) -> bool:
    return any(p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)
               for p in module.parameters())


class ChannelsLast(pl.Callback):
    """Keeps every 4-D parameter (and buffer) of the LightningModule in ``torch.channels_last`` during fit."""

    def __init__(self) -> None:
        self.conversions = 0

    def _convert(self, pl_module: pl.LightningModule) -> None:
        if _needs_conversion(pl_module):
            pl_module.to(memory_format=torch.channels_last)
            self.conversions += 1

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._convert(pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._convert(pl_module)
