"""Procedural long-memory tasks: the adding task and the copy task (any length T, deterministic by seed).

**Adding task** (Hochreiter & Schmidhuber 1997; the FPTT/iRNN/TARNN form, docs/fptt.md#models-and-settings). Each step's
input is ``(value ~ U(0, 1), marker)``; exactly two markers are 1: one at a uniform position of the first half
``[0, T//2)`` and one in the second half ``[T//2, T)``. The target is the sum of the two marked values.
Predicting the constant 1 (the mean) gives MSE Var(U1 + U2) = 1/6, the chance level. ``input_shape = (T, 2)``,
``num_classes = 1`` (one regression output).

**Copy task** (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016 form). Symbols 1..A (``alphabet_size`` A >= 2),
blank 0 and a delimiter A+1. Input: ``copy_length`` (10) random symbols, then T - 1 blanks, the delimiter, then
``copy_length`` blanks (total length T + 2 * copy_length). Target: blanks for the first T + copy_length steps, then
the symbols. Inputs are one-hot ``(L, A + 2)`` floats, targets ``(L,)`` ids; ``num_classes = A + 2``. The
memoryless baseline (blanks, then a uniform guess) has cross-entropy ``copy_length * log(A) / L``.

Example *i* of a split is generated from ``torch.Generator().manual_seed(hash(seed, split, i))`` when it is read,
so nothing is held in memory, any ``train_size`` is free, and two runs with the same seed see the same data.
Train, val and test use disjoint seeds.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from datamodules.base import BaseDataModule

_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


class SequenceTaskError(ValueError):
    """Bad task configuration (user-facing)."""

    user_facing = True


def _generator(seed: int, split: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + _SPLIT_OFFSET[split]) * 10_000_019 + index)


def adding_example(seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One adding-task sequence ``(T, 2)`` and its target ``(1,)``."""
    values = torch.rand(seq_len, generator=gen)
    half = seq_len // 2
    first = int(torch.randint(0, half, (1,), generator=gen))
    second = int(torch.randint(half, seq_len, (1,), generator=gen))
    marks = torch.zeros(seq_len)
    marks[first] = marks[second] = 1.0
    return torch.stack([values, marks], dim=1), (values[first] + values[second]).reshape(1)


def copy_example(seq_len: int, alphabet_size: int, copy_length: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One copy-task input ``(T + 2 n, A + 2)`` (one-hot) and target ``(T + 2 n,)`` ids."""
    n = copy_length
    total = seq_len + 2 * n
    symbols = torch.randint(1, alphabet_size + 1, (n,), generator=gen)
    ids = torch.zeros(total, dtype=torch.long)
    ids[:n] = symbols
    ids[seq_len + n - 1] = alphabet_size + 1  # delimiter: the last blank before the answer window
    target = torch.zeros(total, dtype=torch.long)
    target[seq_len + n:] = symbols
    return torch.nn.functional.one_hot(ids, alphabet_size + 2).float(), target


class _TaskDataset(Dataset):
    def __init__(self, make, size: int, seed: int, split: str) -> None:
        self.make, self.size, self.seed, self.split = make, size, seed, split

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self.make(_generator(self.seed, self.split, index))


class _TaskDataModule(BaseDataModule):
    def __init__(self, batch_size: int, num_workers: int, seed: int, train_size: int, val_size: int,
                 test_size: int) -> None:
        super().__init__(batch_size, num_workers, seed)
        for name, v in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if v < 1:
                raise SequenceTaskError(f"data.init_args.{name} must be >= 1, got {v}")
        self.sizes = {"train": int(train_size), "val": int(val_size), "test": int(test_size)}

    def _example(self, gen: torch.Generator):
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = (
            _TaskDataset(self._example, self.sizes[s], self.seed, s) for s in ("train", "val", "test"))


class AddingTaskDataModule(_TaskDataModule):
    """Adding task of length ``seq_len`` (module docstring). ``train_size`` sequences make one epoch."""

    num_classes = 1

    def __init__(self, seq_len: int = 200, train_size: int = 32_000, val_size: int = 1000, test_size: int = 1000,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed, train_size, val_size, test_size)
        self.save_hyperparameters()
        if seq_len < 2:
            raise SequenceTaskError(f"data.init_args.seq_len must be >= 2 for the adding task (one marker in each "
                                    f"half), got {seq_len}")
        self.seq_len = int(seq_len)
        self.input_shape = (self.seq_len, 2)

    def _example(self, gen: torch.Generator):
        return adding_example(self.seq_len, gen)


class CopyTaskDataModule(_TaskDataModule):
    """Copy task with delay ``seq_len`` (module docstring); sequences are ``seq_len + 2 * copy_length`` long."""

    def __init__(self, seq_len: int = 100, alphabet_size: int = 8, copy_length: int = 10, train_size: int = 32_000,
                 val_size: int = 1000, test_size: int = 1000, batch_size: int = 32, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed, train_size, val_size, test_size)
        self.save_hyperparameters()
        if alphabet_size < 2:
            raise SequenceTaskError(f"data.init_args.alphabet_size must be >= 2 (with one symbol there is nothing to "
                                    f"remember), got {alphabet_size}")
        if copy_length < 1 or seq_len < 1:
            raise SequenceTaskError(f"data.init_args.copy_length and seq_len must be >= 1, got {copy_length}, "
                                    f"{seq_len}")
        self.seq_len, self.alphabet_size, self.copy_length = int(seq_len), int(alphabet_size), int(copy_length)
        self.num_classes = self.alphabet_size + 2
        self.input_shape = (self.seq_len + 2 * self.copy_length, self.num_classes)

    def _example(self, gen: torch.Generator):
        return copy_example(self.seq_len, self.alphabet_size, self.copy_length, gen)
