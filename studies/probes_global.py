"""Measurements of the Global-layer and SI-CNN glyph studies (studies/global_illustrative.yaml,
studies/sicnn_glyphs.yaml), as Lightning callbacks that change nothing in training.

* :class:`ModelCounts`: the counts ``main.py report`` does not write to its JSON: every parameter
  (``counts/params_all``, BN and biases included, the convention of the papers' illustrative model) and the
  element-wise multiply-adds of the PDE iteration (:meth:`nets.global_layer.GlobalLayer.pde_macs`,
  :meth:`nets.global_layer.IllustrativeNet.pde_macs`) and of the SI blocks' interpolation and mask
  (:meth:`nets.sicnn.SIBlock.elementwise_macs`), which conv/linear MAC counters do not see
  (``counts/elementwise_macs``, per input of the module's ``example_input_array``).
* :class:`ConfusionAndTrainAccuracy`: at the end of a test, the number of test images of class ``a`` predicted as
  ``b`` plus those of ``b`` predicted as ``a`` (``test/confusions_<a>_<b>``; the Global-layer poster's 3<->5
  confusions; ``pair: null`` skips it), and the top-1 accuracy (%) on the first ``train_images`` images of the training split in eval mode
  (``test/train_acc1_first<n>``: beside the test accuracy, whether a net is capacity-bound).

Both log from ``on_test_epoch_end``, so their values land in the run's ``metrics/test.json`` (the study's
``main.py test`` on ``last.ckpt``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn


def elementwise_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Element-wise multiply-adds per input of every PDE iteration (Global layer, illustrative PDE backbone) and
    every SI block's interpolation and mask, measured at the shapes ``example_input`` gives (eval mode, no grad;
    the model's mode is restored)."""
    from nets.global_layer import GlobalLayer, IllustrativeNet
    from nets.sicnn import SIBlock

    total = [0]

    def size(t: Any) -> tuple[int, int]:
        t = t[0] if isinstance(t, tuple | list) else t
        return int(t.shape[-2]), int(t.shape[-1])

    def on_pde_layer(module: GlobalLayer, inputs: Any, output: torch.Tensor) -> None:
        total[0] += module.pde_macs(*output.shape[-2:])  # the PDE runs at the layer's output size

    def on_si_block(module: SIBlock, inputs: Any, output: torch.Tensor) -> None:
        total[0] += module.elementwise_macs(*size(inputs))

    def on_illustrative(module: IllustrativeNet, inputs: Any, output: torch.Tensor) -> None:
        total[0] += module.pde_macs(*size(inputs))  # conv_f keeps the size: the PDE runs at the input's

    hooks = {GlobalLayer: on_pde_layer, SIBlock: on_si_block, IllustrativeNet: on_illustrative}
    handles = [m.register_forward_hook(fn) for m in model.modules() for cls, fn in hooks.items()
               if isinstance(m, cls)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


def _items(dataset: Any, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels ``start:stop`` of a dataset (sliced directly from a ``TensorDataset``)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0][start:stop], tensors[1][start:stop]
    items = [dataset[j] for j in range(start, stop)]
    return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])


class ModelCounts(pl.Callback):
    """Logs ``counts/params_all`` (every parameter) and ``counts/elementwise_macs`` (see the module docstring)
    at the end of a test."""

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x = pl_module.example_input_array
        if x is None:
            raise ValueError(f"ModelCounts needs example_input_array on {type(pl_module).__name__}")
        params = sum(p.numel() for p in pl_module.parameters())
        ew = elementwise_macs(pl_module, x.to(pl_module.device))
        pl_module.log("counts/params_all", float(params), on_step=False, on_epoch=True)
        pl_module.log("counts/elementwise_macs", float(ew), on_step=False, on_epoch=True)


class ConfusionAndTrainAccuracy(pl.Callback):
    """Logs ``test/confusions_<a>_<b>`` and ``test/train_acc1_first<train_images>`` at the end of a test (see the
    module docstring). Reads the datamodule's ``test_dataloader()`` and ``train_set``."""

    def __init__(self, pair: tuple[int, int] | None = (3, 5), train_images: int = 5000, batch_size: int = 500) -> None:
        if pair is not None and (len(pair) != 2 or pair[0] == pair[1]):
            raise ValueError("ConfusionAndTrainAccuracy: pair must be two different class indices (or null for no "
                             f"confusion count), got {pair!r}")
        if train_images < 0 or batch_size < 1:
            raise ValueError("ConfusionAndTrainAccuracy: train_images must be >= 0 and batch_size >= 1, got "
                             f"{train_images}, {batch_size}")
        self.pair = None if pair is None else (int(pair[0]), int(pair[1]))
        self.train_images = int(train_images)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is None or getattr(dm, "train_set", None) is None:
            raise ValueError("ConfusionAndTrainAccuracy needs a datamodule whose train_set is set up")
        was_training = pl_module.training
        pl_module.eval()
        if self.pair is not None:
            a, b = self.pair
            confusions = 0
            for batch in dm.test_dataloader():
                x, y = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
                pred = pl_module(x).argmax(1)
                confusions += int(((y == a) & (pred == b)).sum() + ((y == b) & (pred == a)).sum())
            pl_module.log(f"test/confusions_{a}_{b}", float(confusions), on_step=False, on_epoch=True)
        correct = total = 0
        n = min(self.train_images, len(dm.train_set))
        for i in range(0, n, self.batch_size):
            x, y = _items(dm.train_set, i, min(i + self.batch_size, n))
            correct += int((pl_module(x.to(pl_module.device)).argmax(1) == y.to(pl_module.device)).sum())
            total += len(y)
        pl_module.train(was_training)
        if total:
            pl_module.log(f"test/train_acc1_first{self.train_images}", 100.0 * correct / total, on_step=False,
                          on_epoch=True)
