"""scikit-learn's bundled 8x8 digits (1797 real images, 10 classes): the quickstart dataset, no download."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from datamodules.base import BaseDataModule, stratified_split


class DigitsDataModule(BaseDataModule):
    """``sklearn.datasets.load_digits`` as in-memory ``TensorDataset``s of shape (1, 8, 8).

    Pixels are scaled to [0, 1] (divided by 16) and, with ``normalize``, standardised with the scalar
    mean/std of the training split. A stratified train/val split of ``val_fraction`` is drawn from ``seed``;
    there is no separate test set, so val and test are the same held-out split.
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.2,
        normalize: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        self.val_fraction = float(val_fraction)
        self.normalize = bool(normalize)
        self.mean: float | None = None
        self.std: float | None = None
        self.train_idx = self.val_idx = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        images = torch.as_tensor(x, dtype=torch.float32).reshape(-1, *self.input_shape) / 16.0
        labels = torch.as_tensor(y, dtype=torch.long)
        train_idx, val_idx = stratified_split(labels.numpy(), self.val_fraction, self.seed)
        self.train_idx, self.val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
        if self.normalize:
            train = images[self.train_idx]
            self.mean, self.std = float(train.mean()), float(train.std())
            images = (images - self.mean) / self.std
        self.train_set = TensorDataset(images[self.train_idx], labels[self.train_idx])
        self.val_set = TensorDataset(images[self.val_idx], labels[self.val_idx])
        self.test_set = self.val_set
