"""Adding and copy tasks: the defining structure, determinism by seed, chance levels, bad configuration."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.sequence_tasks import AddingTaskDataModule, CopyTaskDataModule, SequenceTaskError


def _split(dm, name):
    dm.setup()
    return {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}[name]


def test_adding_task_structure():
    dm = AddingTaskDataModule(seq_len=11, train_size=50, val_size=5, test_size=5, seed=3)
    assert dm.input_shape == (11, 2) and dm.num_classes == 1
    train = _split(dm, "train")
    for i in range(50):
        x, y = train[i]
        values, marks = x[:, 0], x[:, 1]
        assert ((values >= 0) & (values < 1)).all()
        where = torch.nonzero(marks).flatten().tolist()
        assert len(where) == 2 and where[0] < 11 // 2 <= where[1]
        assert y.item() == pytest.approx((values[where[0]] + values[where[1]]).item(), abs=1e-6)


def test_adding_task_is_deterministic_by_seed_and_split():
    a = _split(AddingTaskDataModule(seq_len=20, train_size=4, seed=1), "train")
    b = _split(AddingTaskDataModule(seq_len=20, train_size=4, seed=1), "train")
    c = _split(AddingTaskDataModule(seq_len=20, train_size=4, seed=2), "train")
    v = _split(AddingTaskDataModule(seq_len=20, train_size=4, val_size=4, seed=1), "val")
    assert torch.equal(a[2][0], b[2][0])
    assert not torch.equal(a[2][0], c[2][0])
    assert not torch.equal(a[2][0], v[2][0])


def test_constant_predictor_has_mse_close_to_one_sixth():
    """Var(U1 + U2) = 1/6: predicting the mean 1 is the chance level the FPTT paper's plots refer to."""
    test = _split(AddingTaskDataModule(seq_len=6, test_size=4000, seed=0), "test")
    y = torch.stack([test[i][1] for i in range(len(test))])
    mse = ((y - 1.0) ** 2).mean().item()
    # std of (S - 1)^2 is sqrt(1/15 - 1/36) = 0.197: 4 standard errors at n = 4000 is 0.0125
    assert abs(mse - 1 / 6) < 0.0125


def test_copy_task_structure_and_baseline():
    dm = CopyTaskDataModule(seq_len=7, alphabet_size=3, copy_length=4, train_size=3)
    assert dm.num_classes == 5 and dm.input_shape == (15, 5)
    x, y = _split(dm, "train")[1]
    ids = x.argmax(-1)
    assert torch.all(x.sum(-1) == 1)
    symbols = ids[:4]
    assert ((symbols >= 1) & (symbols <= 3)).all()
    assert torch.all(ids[4:10] == 0) and ids[10] == 4 and torch.all(ids[11:] == 0)  # blanks, delimiter, blanks
    assert torch.all(y[:11] == 0) and torch.equal(y[11:], symbols)


def test_copy_task_needs_two_symbols():
    with pytest.raises(SequenceTaskError, match="alphabet_size must be >= 2") as err:
        CopyTaskDataModule(alphabet_size=1)
    assert getattr(err.value, "user_facing", False)
    with pytest.raises(SequenceTaskError, match="seq_len must be >= 2"):
        AddingTaskDataModule(seq_len=1)


def test_loaders_batch_sequences():
    dm = AddingTaskDataModule(seq_len=9, train_size=10, batch_size=4)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 9, 2) and y.shape == (4, 1)
    assert math.isfinite(float(x.sum()))
