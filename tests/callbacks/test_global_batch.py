"""callbacks/global_batch.py GlobalBatchSize: per-device batch and accumulation follow the device count, a count
that does not divide is refused, and an epoch schedule that does not fit the run fails before training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from callbacks.global_batch import GlobalBatchSize, split_global_batch
from modules.schedules import WarmupStepDecayLR


@pytest.mark.parametrize("world, expected", [(1, (256, 8)), (2, (256, 4)), (8, (256, 1)), (64, (32, 1))])
def test_global_batch_2048_on_1_to_64_devices(world, expected):
    batch, accumulate = split_global_batch(2048, world, 256)
    assert (batch, accumulate) == expected and batch * accumulate * world == 2048


def test_device_count_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="global_batch_size=2048 cannot be split evenly over 3 processes"):
        split_global_batch(2048, 3, 256)


class Data(pl.LightningDataModule):
    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)),
                          batch_size=self.batch_size)


class Model(pl.LightningModule):
    def __init__(self, warmup_epochs: int = 0) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.warmup_epochs = warmup_epochs
        self.batch_sizes: list[int] = []

    def training_step(self, batch, batch_idx):
        self.batch_sizes.append(batch[0].shape[0])
        return nn.functional.mse_loss(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": WarmupStepDecayLR(opt, decay_epochs=1, decay_rate=0.5,
                                                                    warmup_epochs=self.warmup_epochs)}


def _fit(model, cb, epochs=1, **kw):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb], **kw)
    trainer.fit(model, datamodule=Data(batch_size=4))
    return trainer


def test_one_device_accumulates_to_the_global_batch():
    model = Model()
    trainer = _fit(model, GlobalBatchSize(global_batch_size=16, max_device_batch_size=4), epochs=2)
    assert trainer.accumulate_grad_batches == 4 and set(model.batch_sizes) == {4}
    assert trainer.global_step == 2 * 32 // 16  # one optimizer step per 16 images


def test_accumulation_given_twice_is_refused():
    with pytest.raises(ValueError, match="leave accumulate_grad_batches at 1"):
        _fit(Model(), GlobalBatchSize(global_batch_size=16), accumulate_grad_batches=2)


def test_schedule_longer_than_the_run_is_refused_before_training():
    model = Model(warmup_epochs=3)
    with pytest.raises(ValueError, match="warmup_epochs=3 does not fit a run of max_epochs=2"):
        _fit(model, GlobalBatchSize(global_batch_size=8), epochs=2)
    assert model.batch_sizes == []


def test_both_callback_files_work_copied_alone(tmp_path):
    """callbacks/global_batch.py and callbacks/ema.py import nothing from this project."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for name in ("global_batch.py", "ema.py"):
        shutil.copy(repo / "callbacks" / name, tmp_path / name)
    script = (
        "import torch, lightning.pytorch as pl\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "from global_batch import GlobalBatchSize\nfrom ema import WeightEMA\n"
        "class D(pl.LightningDataModule):\n"
        "    batch_size = 4\n"
        "    def train_dataloader(self):\n"
        "        return DataLoader(TensorDataset(torch.randn(16, 3), torch.randn(16, 1)), batch_size=self.batch_size)\n"
        "class M(pl.LightningModule):\n"
        "    def __init__(self):\n        super().__init__(); self.l = torch.nn.Linear(3, 1)\n"
        "    def training_step(self, b, i):\n        return torch.nn.functional.mse_loss(self.l(b[0]), b[1])\n"
        "    def configure_optimizers(self):\n        return torch.optim.SGD(self.parameters(), lr=0.1)\n"
        "t = pl.Trainer(max_epochs=1, accelerator='cpu', logger=False, enable_checkpointing=False,\n"
        "               enable_progress_bar=False, enable_model_summary=False,\n"
        "               callbacks=[GlobalBatchSize(global_batch_size=8), WeightEMA(decay=0.9)])\n"
        "t.fit(M(), datamodule=D())\nassert t.global_step == 2 and t.accumulate_grad_batches == 2\nprint('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
