"""ModelNet10 occupancy grids (datamodules/modelnet.py) from tiny .npy and .binvox files in the documented layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.errors import DatasetNotFoundError
from datamodules.modelnet import ModelNet10DataModule, read_binvox, write_binvox
from tests.recipes.smoke_data_avae import write_modelnet10


def test_binvox_round_trip_and_axis_order(tmp_path):
    v = np.zeros((8, 8, 8), dtype=bool)
    v[1, 2, 5] = True  # x=1, y=2, z=5
    path = str(tmp_path / "a.binvox")
    write_binvox(path, v)
    raw = open(path, "rb").read()
    assert raw.startswith(b"#binvox 1\ndim 8 8 8\n")
    # in the file y runs fastest, then z, then x: the voxel's run starts at x*64 + z*8 + y
    data = np.frombuffer(raw.split(b"data\n", 1)[1], dtype=np.uint8)
    values, counts = data[::2], data[1::2].astype(int)
    assert int(counts[: int(np.argmax(values))].sum()) == 1 * 64 + 5 * 8 + 2
    assert np.array_equal(read_binvox(path), v)


def test_loads_npy_and_binvox_padded_to_48(tmp_path):
    root = write_modelnet10(tmp_path / "mn", classes=("chair", "sofa"), per_split=2, grid=32)
    dm = ModelNet10DataModule(data_dir=root, classes=["chair", "sofa"], batch_size=2)
    dm.setup()
    assert dm.input_shape == (1, 48, 48, 48) and dm.num_classes == 2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 1, 48, 48, 48)
    assert float(x[..., :8].sum()) == 0 and float(x[..., 40:].sum()) == 0
    labels = torch.cat([b[1] for b in dm.val_dataloader()])
    assert sorted(labels.tolist()) == [0, 0, 1, 1]
    first = np.load(f"{root}/chair/train/chair_0000.npy") != 0
    assert torch.equal(dm.train_set.voxels[0, 8:40, 8:40, 8:40], torch.from_numpy(first).to(torch.uint8))


def test_cube24_pose_keeps_the_voxel_count(tmp_path):
    root = write_modelnet10(tmp_path / "mn", classes=("chair",), per_split=2, grid=16)
    plain = ModelNet10DataModule(data_dir=root, classes=["chair"], grid_size=16, pad_to=24)
    posed = ModelNet10DataModule(data_dir=root, classes=["chair"], grid_size=16, pad_to=24, rotation="cube24", seed=4)
    plain.setup()
    posed.setup()
    assert torch.equal(plain.train_set.voxels.sum((1, 2, 3)), posed.train_set.voxels.sum((1, 2, 3)))


def test_missing_or_wrong_data_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="binvox -d 32"):
        ModelNet10DataModule(data_dir=str(tmp_path / "none")).setup()
    root = write_modelnet10(tmp_path / "mn", classes=("chair",), per_split=1, grid=16)
    with pytest.raises(DatasetNotFoundError, match="sofa/train"):
        ModelNet10DataModule(data_dir=root, classes=["chair", "sofa"], grid_size=16, pad_to=24).setup()
    with pytest.raises(DatasetNotFoundError, match=r"shape \(16, 16, 16\).*grid_size"):
        ModelNet10DataModule(data_dir=root, classes=["chair"]).setup()
    with pytest.raises(ValueError, match="subset"):
        ModelNet10DataModule(classes=["airplane"])
