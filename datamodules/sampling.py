"""Epoch-seeded shuffling, so that a run resumed from a checkpoint sees the same batches as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch drawn from ``seed + epoch``.

    Lightning calls ``set_epoch`` at the start of every epoch, so epoch ``e``'s order depends only on ``seed`` and
    ``e``, never on how many epochs this process has run: ``--ckpt_path`` resumes with exactly the batches an
    uninterrupted run would have seen. Under DDP Lightning wraps this sampler in its ``DistributedSamplerWrapper``,
    which splits the same permutation between the ranks and passes ``set_epoch`` through.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.data_source)
