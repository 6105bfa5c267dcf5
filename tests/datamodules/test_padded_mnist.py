"""MNIST padded to 40x40 (datamodules/padded_mnist.py) on tiny IDX files in torchvision's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.errors import DatasetNotFoundError
from datamodules.padded_mnist import PaddedMNISTDataModule


def _raw(mnist_dir, train=True):
    from torchvision import datasets

    return datasets.MNIST(mnist_dir, train=train, download=False).data


def test_digits_are_zero_padded_to_40(mnist_dir):
    dm = PaddedMNISTDataModule(data_dir=mnist_dir, batch_size=4)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 1, 40, 40) and dm.input_shape == (1, 40, 40)
    raw = _raw(mnist_dir, train=False)[:4].float() / 255
    assert torch.allclose(x[:, 0, 6:34, 6:34], raw)  # the digit, centred, pixels in [0, 1]
    border = torch.ones(40, 40, dtype=torch.bool)
    border[6:34, 6:34] = False
    assert float(x[:, 0][:, border].abs().max()) == 0


def test_rotation_and_affine_poses(mnist_dir):
    plain = PaddedMNISTDataModule(data_dir=mnist_dir)
    rot = PaddedMNISTDataModule(data_dir=mnist_dir, rotation=180, test_rotation=0)
    aff = PaddedMNISTDataModule(data_dir=mnist_dir, rotation=180, max_shear=55, scale_range=(0.75, 1.5))
    for dm in (plain, rot, aff):
        dm.setup()
    xp, xr = plain.train_set.tensors[0], rot.train_set.tensors[0]
    assert not torch.allclose(xp, xr)
    # a rotation keeps the ink (the digits fit in the 40x40 frame under any rotation); up to bilinear blur
    assert torch.allclose(xr.sum((1, 2, 3)), xp.sum((1, 2, 3)), rtol=0.1)
    assert torch.equal(rot.test_set.tensors[0], plain.test_set.tensors[0])  # test_rotation=0
    assert not torch.allclose(aff.train_set.tensors[0], xr)
    again = PaddedMNISTDataModule(data_dir=mnist_dir, rotation=180, test_rotation=0)
    again.setup()
    assert torch.equal(again.train_set.tensors[0], xr)  # poses drawn from the seed


def test_normalize_uses_the_authors_statistics(mnist_dir):
    dm = PaddedMNISTDataModule(data_dir=mnist_dir, normalize=True)
    dm.setup()
    assert float(dm.train_set.tensors[0][0, 0, 0, 0]) == pytest.approx(-0.1307 / 0.3081, rel=1e-5)


def test_missing_data_is_a_clear_error(tmp_path):
    dm = PaddedMNISTDataModule(data_dir=str(tmp_path / "nope"))
    with pytest.raises(DatasetNotFoundError, match="MNIST/raw"):
        dm.setup()
    with pytest.raises(ValueError, match="pad_to must be >= 28"):
        PaddedMNISTDataModule(pad_to=20)
    assert np.isfinite(0.0)
