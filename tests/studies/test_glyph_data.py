"""studies/glyphs.py: the pooled glyphs replay the benchmarks' DataLoader order exactly, and resume by epoch."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from studies.glyphs import PooledGlyphsDataModule, StreamShuffleSampler


def _epochs(loader: DataLoader, n: int, set_epoch: bool) -> list[list[int]]:
    out = []
    for e in range(n):
        if set_epoch:
            loader.sampler.set_epoch(e)
        out.append(torch.cat([b[0] for b in loader]).tolist())
    return out


def test_stream_sampler_replays_a_seeded_shuffling_loader_and_any_epoch_alone() -> None:
    data = TensorDataset(torch.arange(37))
    reference = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    ours = DataLoader(data, batch_size=8, sampler=StreamShuffleSampler(data, seed=5))
    expected = _epochs(reference, 4, set_epoch=False)
    assert _epochs(ours, 4, set_epoch=True) == expected
    assert len({tuple(e) for e in expected}) == 4  # the epochs really differ
    # a resumed process starts at epoch 2 with a fresh sampler and sees the uninterrupted epoch 2
    fresh = StreamShuffleSampler(data, seed=5)
    fresh.set_epoch(2)
    assert list(fresh) == expected[2]


def test_pooled_glyphs_shapes_and_determinism() -> None:
    dm = PooledGlyphsDataModule(train_size=60, test_size=30, pool=4, batch_size=16)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.input_shape == (1, 8, 8) and x.shape == (16, 1, 8, 8) and dm.num_classes == 10
    again = PooledGlyphsDataModule(train_size=60, test_size=30, pool=4, batch_size=16)
    again.setup()
    assert torch.equal(dm.train_set.tensors[0], again.train_set.tensors[0])
