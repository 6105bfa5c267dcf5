"""DigitsDataModule: sklearn's bundled 8x8 digits."""

from __future__ import annotations

import numpy as np
import torch

from datamodules import DigitsDataModule


def _setup(**kw) -> DigitsDataModule:
    dm = DigitsDataModule(**kw)
    dm.setup("fit")
    return dm


def test_contract_before_setup():
    dm = DigitsDataModule(batch_size=32)
    assert dm.num_classes == 10 and dm.input_shape == (1, 8, 8)
    assert dm.train_set is None


def test_batches_shapes_and_normalisation():
    dm = _setup(batch_size=32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.long and 0 <= int(y.min()) and int(y.max()) < 10
    train_x = dm.train_set.tensors[0]
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std()) - 1) < 1e-3
    assert dm.test_set is dm.val_set
    assert len(dm.train_set) + len(dm.val_set) == 1797


def test_raw_pixels_in_unit_range_without_normalize():
    dm = _setup(normalize=False)
    x = dm.train_set.tensors[0]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_split_is_stratified_disjoint_and_deterministic():
    a, b, c = _setup(seed=3), _setup(seed=3), _setup(seed=4)
    assert torch.equal(a.val_idx, b.val_idx) and torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert not torch.equal(a.val_idx, c.val_idx)
    assert set(a.train_idx.tolist()).isdisjoint(a.val_idx.tolist())
    assert len(a.val_idx) == 360  # ceil(0.2 * 1797)
    all_counts = np.bincount(np.concatenate([a.train_set.tensors[1].numpy(), a.val_set.tensors[1].numpy()]))
    val_counts = np.bincount(a.val_set.tensors[1].numpy(), minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * all_counts) <= 1)
