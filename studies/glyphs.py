"""Data for the CPU-scale glyph studies: the procedural glyphs (``datamodules.glyphs``) average-pooled to a small
resolution, held in memory, with a shuffle that a resumed run replays exactly.

``PooledGlyphsDataModule`` gives the same tensors and the same batch order as the in-script ``PooledGlyphs`` the
benchmarks/ scripts used (a ``DataLoader(shuffle=True)`` whose generator is seeded once with ``shuffle_seed``),
so a study and the script it replaces train on identical batches. Unlike that loader, epoch ``e``'s order is
recomputed from ``shuffle_seed`` and ``e`` alone (:class:`StreamShuffleSampler`), so ``--ckpt_path`` resumes with
the batches an uninterrupted run sees.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sized

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, Sampler, TensorDataset


class StreamShuffleSampler(Sampler[int]):
    """Epoch ``e`` yields the ``e``-th permutation of one ``torch.Generator`` seeded once with ``seed``, exactly
    as ``DataLoader(dataset, shuffle=True, generator=torch.Generator().manual_seed(seed))`` orders its epochs
    (each epoch that loader's iterator first draws its base seed from the generator, then the sampler draws).

    The state is the seed and the epoch (Lightning calls ``set_epoch``), so a resumed run replays the stream.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        for _ in range(self.epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader iterator's base seed
            order = list(RandomSampler(self.data_source, generator=generator))
        return iter(order)

    def __len__(self) -> int:
        return len(self.data_source)


@functools.lru_cache(maxsize=4)
def pooled_glyph_tensors(train_size: int, test_size: int, difficulty: float, num_classes: int, pool: int,
                         data_seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Generated glyphs (train, test), average-pooled by ``pool``; the same arguments give identical tensors."""
    from datamodules.glyphs import GlyphsDataModule

    dm = GlyphsDataModule(num_classes=num_classes, difficulty=difficulty, train_size=train_size,
                          test_size=test_size, seed=data_seed)
    dm.setup()

    def prep(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, pool) if pool > 1 else x

    return (TensorDataset(prep(dm.train_images), dm.train_labels),
            TensorDataset(prep(dm.test_images), dm.test_labels))


class PooledGlyphsDataModule(pl.LightningDataModule):
    """Glyphs at ``32 // pool`` pixels a side, in memory; validation uses the test split.

    Args:
        train_size, test_size: images generated for each split (from ``data_seed``).
        difficulty: augmentation strength in [0, 1] (``datamodules.glyphs.difficulty_defaults``).
        num_classes: characters used (2-34).
        pool: average-pooling factor of the 32x32 renders (4 gives 8x8 inputs).
        data_seed: seed of the generated images (the same for every training seed).
        batch_size: training batch size.
        shuffle_seed: seed of the training order (a study sets it to the run's seed).
        eval_batch_size: batch size of validation and test (does not change any metric).
    """

    def __init__(self, train_size: int = 3000, test_size: int = 2000, difficulty: float = 0.8, num_classes: int = 10,
                 pool: int = 4, data_seed: int = 0, batch_size: int = 64, shuffle_seed: int = 0,
                 eval_batch_size: int = 500) -> None:
        super().__init__()
        if pool < 1 or 32 % pool:
            raise ValueError(f"PooledGlyphsDataModule: pool must divide 32 (1, 2, 4, 8, 16), got {pool}")
        self.save_hyperparameters()
        self.num_classes = int(num_classes)
        self.input_shape = (1, 32 // pool, 32 // pool)
        self.train_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            h = self.hparams
            self.train_set, self.test_set = pooled_glyph_tensors(h.train_size, h.test_size, float(h.difficulty),
                                                                 self.num_classes, h.pool, h.data_seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size,
                          sampler=StreamShuffleSampler(self.train_set, self.hparams.shuffle_seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.hparams.eval_batch_size)
