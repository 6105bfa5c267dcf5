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


def test_timm_runner_augmentation_objects(imagenet_dir):
    """rand-m9-mstd0.5 RandAugment, pixel random erasing, random bilinear/bicubic crops, bicubic eval resize."""
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms import InterpolationMode

    dm = ImageNetDataModule(data_dir=imagenet_dir, batch_size=2, num_workers=0, num_classes=3, image_size=48,
                            resize_size=56, interpolation="bicubic", train_interpolation="random",
                            auto_augment="rand-m9-mstd0.5", re_prob=0.2, re_mode="pixel")
    ops = {type(t): t for t in dm.train_transform().transforms}
    ra, re_, crop = ops[RandAugment], ops[RandomErasing], ops[RandomResizedCropAndInterpolation]
    assert ra.num_layers == 2 and {op.magnitude for op in ra.ops} == {9}
    assert {op.magnitude_std for op in ra.ops} == {0.5}
    assert re_.probability == 0.2 and re_.mode == "pixel"
    assert set(crop.interpolation) == {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC}
    resize = dm.eval_transform().transforms[0]
    assert resize.interpolation == InterpolationMode.BICUBIC and resize.size == 56
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 48, 48) and x.dtype == torch.float32


@pytest.mark.parametrize("kwargs, key", [
    ({"auto_augment": "rand-m9-msdt0.5"}, "auto_augment"),
    ({"auto_augment": "autoaugment"}, "auto_augment"),
    ({"interpolation": "lanczos3"}, "interpolation"),
    ({"train_interpolation": "cubic"}, "train_interpolation"),
    ({"re_prob": 1.5}, "re_prob"),
    ({"re_mode": "noise"}, "re_mode"),
])
def test_bad_augmentation_arguments_name_the_key(tmp_path, kwargs, key):
    with pytest.raises(ValueError, match=f"data.init_args.{key}"):
        ImageNetDataModule(data_dir=str(tmp_path), batch_size=2, **kwargs)
