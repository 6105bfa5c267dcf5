"""CIFAR10/100 datamodules on tiny files in the real python-pickle format."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets, transforms

from datamodules import CIFAR10DataModule, CIFAR100DataModule, DatasetNotFoundError
from tests import fakedata

CASES = [
    (CIFAR10DataModule, "cifar10_dir", "cifar-10-batches-py", 10, datasets.CIFAR10),
    (CIFAR100DataModule, "cifar100_dir", "cifar-100-python", 100, datasets.CIFAR100),
]


@pytest.mark.parametrize("cls, fixture, folder, n_classes, tv_cls", CASES)
def test_reads_tiny_real_format(cls, fixture, folder, n_classes, tv_cls, request):
    data_dir = request.getfixturevalue(fixture)
    dm = cls(data_dir=data_dir, batch_size=8)
    assert dm.num_classes == n_classes and dm.input_shape == (3, 32, 32)
    dm.setup("fit")
    assert isinstance(dm.train_set, tv_cls)  # torchvision's own reader
    assert len(dm.train_set) == 20 and len(dm.test_set) == 10 and dm.val_set is dm.test_set
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) < n_classes
    assert sum(len(b[1]) for b in dm.train_dataloader()) == 20  # drop_last=False


def test_pixels_match_the_written_pickle(cifar10_dir):
    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, augment=False)
    dm.setup("fit")
    with open(os.path.join(cifar10_dir, "cifar-10-batches-py", "data_batch_1"), "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    raw = torch.from_numpy(batch["data"][0].reshape(3, 32, 32).astype(np.float32) / 255)
    expected = (raw - torch.tensor(dm.mean)[:, None, None]) / torch.tensor(dm.std)[:, None, None]
    x, y = dm.train_set[0]
    assert torch.allclose(x, expected, atol=1e-6) and y == batch["labels"][0]


def test_augmentation_switch(cifar10_dir):
    aug = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4).train_transform().transforms
    assert isinstance(aug[0], transforms.RandomCrop) and aug[0].padding == 4
    assert isinstance(aug[1], transforms.RandomHorizontalFlip)
    plain = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, augment=False).train_transform().transforms
    assert not any(isinstance(t, (transforms.RandomCrop, transforms.RandomHorizontalFlip)) for t in plain)
    assert isinstance(plain[-1], transforms.Normalize)


def test_release_pipeline_autoaugment_and_cutout(cifar10_dir):
    """``autoaugment`` and ``cutout`` (the OSP / DiSK releases' CIFAR pipeline): crop, flip, AutoAugment (CIFAR-10
    policy), ToTensor, Cutout, Normalize, in that order; a loaded training image has a zeroed square (before
    normalisation, so it reads as -mean/std there)."""
    from datamodules.cutout import Cutout

    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, autoaugment=True, cutout=16)
    t = dm.train_transform().transforms
    assert [type(x) for x in t] == [transforms.RandomCrop, transforms.RandomHorizontalFlip, transforms.AutoAugment,
                                    transforms.ToTensor, Cutout, transforms.Normalize]
    assert t[2].policy == transforms.AutoAugmentPolicy.CIFAR10 and t[4].length == 16
    assert [type(x) for x in dm.eval_transform().transforms] == [transforms.ToTensor, transforms.Normalize]
    only = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, augment=False, cutout=16)
    only.setup("fit")
    black = (-torch.tensor(only.mean) / torch.tensor(only.std))[:, None, None]
    for i in range(5):
        n_black = int(torch.isclose(only.train_set[i][0], black, atol=1e-5).all(0).sum())
        assert 64 <= n_black <= 256  # an 8x8 corner at least, a full 16x16 square at most
        assert not torch.isclose(only.test_set[i][0], black, atol=1e-5).all(0).any()
    with pytest.raises(ValueError, match="data.init_args.cutout"):
        CIFAR10DataModule(data_dir=cifar10_dir, cutout=-1)


@pytest.mark.parametrize("cls, folder", [(CIFAR10DataModule, "cifar-10-batches-py"),
                                         (CIFAR100DataModule, "cifar-100-python")])
def test_missing_directory(cls, folder, tmp_path):
    dm = cls(data_dir=str(tmp_path / "nowhere"), batch_size=4)
    assert dm.num_classes in (10, 100)  # available without the data
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert os.path.join(str(tmp_path / "nowhere"), folder) in msg
    assert "cifar.html" in msg and "download: true" in msg


def test_empty_directory_lists_missing_files(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10DataModule(data_dir=str(tmp_path), batch_size=4).setup("fit")
    assert "data_batch_1" in str(info.value) and "batches.meta" in str(info.value)


def test_corrupt_pickle(tmp_path):
    data_dir = fakedata.write_cifar10(tmp_path)
    with open(os.path.join(data_dir, "cifar-10-batches-py", "data_batch_3"), "wb") as f:
        f.write(b"this is not a pickle")
    with pytest.raises(DatasetNotFoundError, match="pickle"):
        CIFAR10DataModule(data_dir=data_dir, batch_size=4).setup("fit")


def test_verify_md5_uses_torchvision_check(cifar100_dir):
    with pytest.raises(DatasetNotFoundError, match="torchvision"):
        CIFAR100DataModule(data_dir=cifar100_dir, batch_size=4, verify_md5=True).setup("fit")


def test_stock_torchvision_rejects_tiny_files(cifar10_dir):
    """Documents why the datamodule skips md5: torchvision's class refuses anything but the official files."""
    with pytest.raises(RuntimeError):
        datasets.CIFAR10(cifar10_dir, train=True, download=False)


def test_worker_pipeline_stays_the_default(cifar10_dir):
    """``device_resident`` is off unless asked for: the training loader is the DataLoader with the epoch-seeded
    sampler and the transforms above (the device-resident path is tested in test_cifar_device.py)."""
    from torch.utils.data import DataLoader

    from datamodules.sampling import EpochShuffleSampler

    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, cutout=16)
    assert dm.device_resident is False and dm.hparams["device_resident"] is False
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader) and isinstance(loader.sampler, EpochShuffleSampler)
    assert isinstance(dm.val_dataloader(), DataLoader) and dm.train_set.transform is not None
