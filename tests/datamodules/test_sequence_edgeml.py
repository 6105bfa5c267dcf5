"""EdgeML-format sequence benchmarks (HAR-2, DSA-19, Google-12/30): layout, label shift, normalisation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.errors import DatasetNotFoundError
from datamodules.sequence_edgeml import DSA19DataModule, Google12DataModule, Google30DataModule, HAR2DataModule


def _write(root, name, labels, feats):
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / name, np.column_stack([labels, feats]).astype(np.float32))


def test_har2_reads_steps_in_order_and_normalises_with_train_statistics(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(6, 128 * 9))
    _write(tmp_path, "train.npy", [1, 2, 1, 2, 1, 2], train)  # labels 1..2 shift to 0..1
    _write(tmp_path, "test.npy", [2, 1], train[:2])
    dm = HAR2DataModule(data_dir=str(tmp_path), batch_size=2)
    assert dm.input_shape == (128, 9) and dm.num_classes == 2
    dm.setup()
    x, y = dm.train_set.tensors
    assert x.shape == (6, 128, 9) and y.tolist() == [0, 1, 0, 1, 0, 1]
    mean, std = train.mean(0), train.std(0)
    expected = ((train[4] - mean) / std).reshape(128, 9)  # step t holds features t*9 .. t*9+8
    assert torch.allclose(x[4], torch.tensor(expected, dtype=torch.float32), atol=1e-4)
    assert dm.val_set is dm.test_set
    assert dm.test_set.tensors[1].tolist() == [1, 0]


def test_shapes_of_the_other_benchmarks():
    assert DSA19DataModule().input_shape == (125, 45) and DSA19DataModule.num_classes == 19
    assert Google12DataModule().input_shape == (99, 32) and Google12DataModule.num_classes == 12
    assert Google30DataModule.num_classes == 30


def test_wrong_width_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="test.npy"):
        _write(tmp_path / "a", "train.npy", [0, 1], np.zeros((2, 128 * 9)))
        HAR2DataModule(data_dir=str(tmp_path / "a")).setup()
    _write(tmp_path / "b", "train.npy", [0, 1], np.zeros((2, 10)))
    _write(tmp_path / "b", "test.npy", [0, 1], np.zeros((2, 10)))
    with pytest.raises(DatasetNotFoundError, match=r"expected \[N, 1153\]"):
        HAR2DataModule(data_dir=str(tmp_path / "b")).setup()
