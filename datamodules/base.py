"""Shared DataLoader plumbing for the recipe datamodules."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import lightning.pytorch as pl
from datamodules.sampling import EpochShuffleSampler


class BaseDataModule(pl.LightningDataModule):
    """Builds the three DataLoaders from ``self.train_set`` / ``val_set`` / ``test_set``.

    Training batches are shuffled by :class:`~datamodules.sampling.EpochShuffleSampler`: a ``torch.Generator``
    seeded from ``seed + epoch``, so a resumed run sees the same batches as an uninterrupted one (under DDP
    Lightning wraps it in its ``DistributedSamplerWrapper``, which shards it and forwards ``set_epoch``);
    val/test are not shuffled. ``drop_last=False`` everywhere and ``persistent_workers`` whenever
    ``num_workers > 0``. Subclasses set ``num_classes`` and ``input_shape`` in ``__init__`` (no disk access)
    and fill the datasets in ``setup``.
    """

    num_classes: int
    input_shape: tuple[int, ...]

    def __init__(self, batch_size: int, num_workers: int = 0, seed: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.pin_memory = bool(pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, split: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: the {split} split is not set up; call setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(dataset, seed=self.seed) if shuffle else None,
            shuffle=False,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", shuffle=False)


def stratified_split(labels: torch.Tensor | np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified (train_idx, val_idx) split of ``labels``; both index arrays sorted."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)
