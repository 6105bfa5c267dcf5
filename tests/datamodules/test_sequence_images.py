"""Sequential and noise-padded CIFAR-10 and noisy MNIST, read from tiny files in the real on-disk formats."""

from __future__ import annotations

import pytest
import torch

from datamodules.cifar import CIFAR10DataModule
from datamodules.errors import DatasetNotFoundError
from datamodules.mnist import MNISTDataModule
from datamodules.sequence_images import NoisyMNISTDataModule, SequentialCIFAR10DataModule
from datamodules.sequence_tasks import SequenceTaskError


def _image(cifar10_dir, i):
    dm = CIFAR10DataModule(data_dir=cifar10_dir, augment=False)
    dm.setup("fit")
    return dm.train_set[i]


def test_pixel_sequence_is_the_raster_order_of_the_image(cifar10_dir):
    dm = SequentialCIFAR10DataModule(data_dir=cifar10_dir, as_sequence="pixel")
    assert dm.input_shape == (1024, 3) and dm.num_classes == 10
    dm.setup("fit")
    x, y = dm.train_set[3]
    img, label = _image(cifar10_dir, 3)
    assert x.shape == (1024, 3) and y == label
    assert torch.equal(x[5 * 32 + 7], img[:, 5, 7])  # step r*32+c holds pixel (r, c), 3 channels


def test_noise_padded_rows_are_fixed_per_example(cifar10_dir):
    dm = SequentialCIFAR10DataModule(data_dir=cifar10_dir, as_sequence="row", pad_to=1000)
    assert dm.input_shape == (1000, 96)
    dm.setup("fit")
    x, _ = dm.train_set[2]
    img, _ = _image(cifar10_dir, 2)
    assert x.shape == (1000, 96)
    assert torch.equal(x[4], img[:, 4, :].T.reshape(96))  # row 4: 32 pixels x 3 channels
    noise = x[32:]
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1.0) < 0.05
    assert torch.equal(dm.train_set[2][0], x)  # same noise on every read
    assert not torch.equal(dm.train_set[1][0][32:], noise)
    assert dm.val_set is dm.test_set


def test_noisy_mnist_rows_then_noise(mnist_dir):
    dm = NoisyMNISTDataModule(data_dir=mnist_dir, pad_to=100)
    assert dm.input_shape == (100, 28)
    dm.setup("fit")
    x, y = dm.train_set[0]
    rows = MNISTDataModule(data_dir=mnist_dir, as_sequence="row")
    rows.setup("fit")
    r, label = rows.train_set[0]
    assert x.shape == (100, 28) and y == label
    assert torch.equal(x[:28], r)
    assert x[28:].std() > 0.5


def test_bad_configuration_and_missing_files(tmp_path):
    with pytest.raises(SequenceTaskError, match="pad_to"):
        SequentialCIFAR10DataModule(as_sequence="pixel", pad_to=500)
    with pytest.raises(SequenceTaskError, match="pad_to"):
        NoisyMNISTDataModule(pad_to=10)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        SequentialCIFAR10DataModule(data_dir=str(tmp_path / "none")).setup("fit")
