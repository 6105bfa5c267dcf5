"""MNISTDataModule on tiny IDX files (plain and gzipped), as images and as sequences."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

from datamodules import DatasetNotFoundError, MNISTDataModule
from datamodules.mnist import MNIST_MEAN, MNIST_STD, RAW_FILES
from tests import fakedata


def _raw_images(data_dir: str, prefix: str = "train") -> torch.Tensor:
    path = os.path.join(data_dir, "MNIST", "raw", f"{prefix}-images-idx3-ubyte")
    opener = gzip.open if not os.path.exists(path) else open
    with opener(path if os.path.exists(path) else path + ".gz", "rb") as f:
        data = f.read()
    assert int.from_bytes(data[:4], "big") == 2051
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28).copy())


@pytest.mark.parametrize("mode, shape, seq_len, input_size", [
    ("none", (1, 28, 28), None, None), ("row", (28, 28), 28, 28), ("pixel", (784, 1), 784, 1)])
def test_shapes(mnist_dir, mode, shape, seq_len, input_size):
    dm = MNISTDataModule(data_dir=mnist_dir, batch_size=8, as_sequence=mode)
    assert dm.num_classes == 10 and dm.input_shape == shape
    assert dm.seq_len == seq_len and dm.input_size == input_size
    dm.setup("fit")
    assert len(dm.train_set) == 40 and len(dm.test_set) == 10 and dm.val_set is dm.test_set
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (8, *shape) and x.dtype == torch.float32
        assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) < 10


def test_values_are_the_written_pixels_normalised(mnist_dir):
    dm = MNISTDataModule(data_dir=mnist_dir, batch_size=8)
    dm.setup()
    expected = (_raw_images(mnist_dir).float() / 255 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(dm.train_set.tensors[0][:, 0], expected, atol=1e-6)
    assert dm.train_set.tensors[1].tolist() == [i % 10 for i in range(40)]
    pixel = MNISTDataModule(data_dir=mnist_dir, batch_size=8, as_sequence="pixel")
    pixel.setup()
    assert torch.equal(pixel.train_set.tensors[0][:, :, 0], expected.reshape(40, 784))


def test_gzipped_files_are_decompressed_locally(tmp_path):
    data_dir = fakedata.write_mnist(tmp_path, compress=True)
    raw = os.path.join(data_dir, "MNIST", "raw")
    assert not any(os.path.exists(os.path.join(raw, f)) for f in RAW_FILES)
    dm = MNISTDataModule(data_dir=data_dir, batch_size=4)
    dm.prepare_data()
    assert all(os.path.exists(os.path.join(raw, f)) for f in RAW_FILES)
    dm.setup()
    assert len(dm.train_set) == 20 and len(dm.test_set) == 10


def test_permutation_fixed_by_seed(mnist_dir):
    a = MNISTDataModule(data_dir=mnist_dir, batch_size=4, as_sequence="pixel", permuted=True, seed=1)
    b = MNISTDataModule(data_dir=mnist_dir, batch_size=4, as_sequence="pixel", permuted=True, seed=2)
    c = MNISTDataModule(data_dir=mnist_dir, batch_size=4, as_sequence="pixel", permuted=True, permutation_seed=1)
    assert torch.equal(a.permutation, b.permutation)  # independent of the training seed
    assert not torch.equal(a.permutation, c.permutation)
    assert sorted(a.permutation.tolist()) == list(range(784))
    plain = MNISTDataModule(data_dir=mnist_dir, batch_size=4, as_sequence="pixel")
    assert plain.permutation is None
    for dm in (a, plain):
        dm.setup()
    assert torch.equal(a.train_set.tensors[0][:, :, 0], plain.train_set.tensors[0][:, a.permutation, 0])
    rows = MNISTDataModule(data_dir=mnist_dir, batch_size=4, as_sequence="row", permuted=True)
    rows.setup()
    assert torch.equal(rows.train_set.tensors[0].reshape(40, 784), a.train_set.tensors[0][:, :, 0])


def test_val_fraction_split(mnist_dir):
    dm = MNISTDataModule(data_dir=mnist_dir, batch_size=4, val_fraction=0.25, seed=3)
    dm.setup()
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10 and dm.val_set is not dm.test_set
    assert sorted(dm.val_set.tensors[1].tolist()) == list(range(10))


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(data_dir=str(tmp_path / "nowhere"), batch_size=4).setup()
    msg = str(info.value)
    assert os.path.join(str(tmp_path / "nowhere"), "MNIST", "raw") in msg and "download: true" in msg


def test_empty_raw_directory_lists_missing_files(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(data_dir=str(tmp_path), batch_size=4).setup()
    assert all(f in str(info.value) for f in RAW_FILES)


def test_bad_magic_number(tmp_path):
    data_dir = fakedata.write_mnist(tmp_path)
    with open(os.path.join(data_dir, "MNIST", "raw", "train-images-idx3-ubyte"), "r+b") as f:
        f.write(b"\x00\x00\x00\x00")
    with pytest.raises(DatasetNotFoundError, match="IDX"):
        MNISTDataModule(data_dir=data_dir, batch_size=4).setup()


def test_invalid_sequence_mode():
    with pytest.raises(ValueError):
        MNISTDataModule(batch_size=4, as_sequence="column")
