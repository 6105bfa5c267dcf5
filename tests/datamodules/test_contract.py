"""The contract every datamodule shares: metadata without disk, loader settings, CLI argument linking."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.data import SequentialSampler

import lightning.pytorch as pl
from datamodules import (CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, GlyphsDataModule,
                         ImageNetDataModule, MNISTDataModule)
from datamodules.sampling import EpochShuffleSampler

EXPECTED = {
    CIFAR10DataModule: (10, (3, 32, 32)),
    CIFAR100DataModule: (100, (3, 32, 32)),
    ImageNetDataModule: (1000, (3, 224, 224)),
    MNISTDataModule: (10, (1, 28, 28)),
    DigitsDataModule: (10, (1, 8, 8)),
    GlyphsDataModule: (10, (1, 32, 32)),
}


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_metadata_without_touching_disk(cls, tmp_path):
    kwargs = {"batch_size": 4}
    if "data_dir" in cls.__init__.__code__.co_varnames:
        kwargs["data_dir"] = str(tmp_path / "absent")
    dm = cls(**kwargs)
    num_classes, shape = EXPECTED[cls]
    assert isinstance(dm.num_classes, int) and dm.num_classes == num_classes
    assert isinstance(dm.input_shape, tuple) and dm.input_shape == shape
    assert all(isinstance(s, int) for s in dm.input_shape)
    assert not (tmp_path / "absent").exists()
    for name in ("batch_size", "num_workers", "seed", "pin_memory"):
        assert hasattr(dm, name)


def test_loader_settings():
    dm = DigitsDataModule(batch_size=100, seed=5, pin_memory=False)
    dm.setup()
    train, val, test = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()
    assert isinstance(train.sampler, EpochShuffleSampler) and train.sampler.seed == 5
    assert isinstance(val.sampler, SequentialSampler) and isinstance(test.sampler, SequentialSampler)
    assert not train.drop_last and not val.drop_last and train.num_workers == 0
    assert sum(len(y) for _, y in train) == len(dm.train_set)  # last partial batch kept
    assert torch.equal(torch.cat([y for _, y in val]), dm.val_set.tensors[1])  # not shuffled

    def order(d: DigitsDataModule, epoch: int) -> torch.Tensor:
        loader = d.train_dataloader()
        loader.sampler.set_epoch(epoch)  # what Lightning does at the start of every epoch
        return torch.cat([y for _, y in loader])

    again = DigitsDataModule(batch_size=100, seed=5)
    again.setup()
    other = DigitsDataModule(batch_size=100, seed=6)
    other.setup()
    assert torch.equal(order(dm, 0), order(again, 0)) and torch.equal(order(dm, 3), order(again, 3))
    assert not torch.equal(order(dm, 0), order(dm, 1))  # a new order every epoch ...
    assert not torch.equal(order(dm, 0), order(other, 0))  # ... and per seed
    assert not torch.equal(dm.train_set.tensors[1], order(dm, 0))  # shuffled at all


def test_persistent_workers_with_workers():
    dm = DigitsDataModule(batch_size=16, num_workers=2, pin_memory=True)
    dm.setup()
    loader = dm.train_dataloader()  # not iterated: no worker processes are started
    assert loader.num_workers == 2 and loader.persistent_workers and loader.pin_memory


def test_trainer_fit_smoke():
    class Tiny(pl.LightningModule):
        def __init__(self, num_classes: int, input_shape: tuple[int, ...]):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(torch.tensor(input_shape).prod()),
                                                                              num_classes))

        def training_step(self, batch, _):
            x, y = batch[0], batch[1]
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, _):
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    for dm in (DigitsDataModule(batch_size=64),
               GlyphsDataModule(batch_size=32, train_size=64, test_size=32, return_angle=True)):
        trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(Tiny(dm.num_classes, dm.input_shape), datamodule=dm)


def test_cli_links_num_classes_and_input_shape(monkeypatch):
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.setattr(sys, "argv", ["main.py"])  # LightningCLI warns when pytest's own argv is present

    class Model(pl.LightningModule):
        def __init__(self, num_classes: int = 2, input_shape: tuple[int, ...] = (1,)):
            super().__init__()
            self.num_classes, self.input_shape = num_classes, input_shape

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
            parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")

    cases = [
        ("GlyphsDataModule", ["--data.init_args.num_classes=20", "--data.init_args.scale_range=[0.5,1.0]"], 20,
         (1, 32, 32)),
        ("CIFAR100DataModule", ["--data.init_args.data_dir=/nonexistent/dir"], 100, (3, 32, 32)),
        ("ImageNetDataModule", ["--data.init_args.num_classes=100", "--data.init_args.image_size=128"], 100,
         (3, 128, 128)),
        ("MNISTDataModule", ["--data.init_args.as_sequence=pixel", "--data.init_args.permuted=true"], 10, (784, 1)),
        ("DigitsDataModule", [], 10, (1, 8, 8)),
    ]
    for name, extra, num_classes, shape in cases:
        cli = CLI(Model, pl.LightningDataModule, subclass_mode_data=True, run=False, save_config_callback=None,
                  seed_everything_default=False,
                  args=[f"--data=datamodules.{name}", "--data.init_args.batch_size=8", *extra,
                        "--trainer.logger=false", "--trainer.accelerator=cpu"])
        assert type(cli.datamodule).__name__ == name
        assert cli.model.num_classes == num_classes and tuple(cli.model.input_shape) == shape
