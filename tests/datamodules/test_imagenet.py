"""ImageNetDataModule on tiny JPEG class folders."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torchvision import datasets

from datamodules import DatasetNotFoundError, ImageNetDataModule
from tests import fakedata


def test_contract_before_setup(tmp_path):
    dm = ImageNetDataModule(data_dir=str(tmp_path / "nowhere"), batch_size=4)
    assert dm.num_classes == 1000 and dm.input_shape == (3, 224, 224) and dm.num_workers == 8
    dm = ImageNetDataModule(data_dir=str(tmp_path / "nowhere"), batch_size=4, num_classes=100, image_size=160,
                            resize_size=182)
    assert dm.num_classes == 100 and dm.input_shape == (3, 160, 160)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("image_size, resize_size", [(224, 256), (48, 56)])
def test_reads_tiny_image_folders(imagenet_dir, image_size, resize_size):
    dm = ImageNetDataModule(data_dir=imagenet_dir, batch_size=4, num_workers=0, num_classes=3,
                            image_size=image_size, resize_size=resize_size)
    dm.setup("fit")
    assert isinstance(dm.train_set, datasets.ImageFolder)
    assert len(dm.train_set) == 6 and len(dm.val_set) == 6 and dm.test_set is dm.val_set
    assert dm.classes == [f"n{c:08d}" for c in range(3)]
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (4, 3, image_size, image_size) and x.dtype == torch.float32
        assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) < 3


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        ImageNetDataModule(data_dir=str(tmp_path / "nowhere"), batch_size=4).setup("fit")
    assert str(tmp_path / "nowhere") in str(info.value) and "image-net.org" in str(info.value)


def test_missing_val_split(tmp_path):
    data_dir = fakedata.write_imagenet(tmp_path, num_classes=2, per_class=1)
    shutil.rmtree(os.path.join(data_dir, "val"))
    with pytest.raises(DatasetNotFoundError) as info:
        ImageNetDataModule(data_dir=data_dir, batch_size=4, num_classes=2).setup("fit")
    assert "Missing: val/." in str(info.value) and str(tmp_path) in str(info.value)


def test_flat_val_folder(tmp_path):
    data_dir = fakedata.write_imagenet(tmp_path, num_classes=2, per_class=1)
    val = os.path.join(data_dir, "val")
    for cls in os.listdir(val):
        for f in os.listdir(os.path.join(val, cls)):
            os.replace(os.path.join(val, cls, f), os.path.join(val, f))
        os.rmdir(os.path.join(val, cls))
    with pytest.raises(DatasetNotFoundError, match="no class sub-folders"):
        ImageNetDataModule(data_dir=data_dir, batch_size=4, num_classes=2).setup("fit")


def test_class_count_mismatch(imagenet_dir):
    with pytest.raises(DatasetNotFoundError) as info:
        ImageNetDataModule(data_dir=imagenet_dir, batch_size=4).setup("fit")
    assert "3 class folders but num_classes=1000" in str(info.value)
    assert "num_classes: 3" in str(info.value)


def test_train_val_class_folders_differ(tmp_path):
    data_dir = fakedata.write_imagenet(tmp_path, num_classes=2, per_class=1)
    os.rename(os.path.join(data_dir, "val", "n00000001"), os.path.join(data_dir, "val", "n99999999"))
    with pytest.raises(DatasetNotFoundError, match="different class folders"):
        ImageNetDataModule(data_dir=data_dir, batch_size=4, num_classes=2).setup("fit")


def test_class_folder_without_images(tmp_path):
    data_dir = fakedata.write_imagenet(tmp_path, num_classes=2, per_class=1)
    for f in os.listdir(os.path.join(data_dir, "train", "n00000001")):
        os.remove(os.path.join(data_dir, "train", "n00000001", f))
    with pytest.raises(DatasetNotFoundError, match="ImageFolder"):
        ImageNetDataModule(data_dir=data_dir, batch_size=4, num_classes=2).setup("fit")
