"""Training batches drawn from an image split that lives on the training device (GPU or CPU), augmented there.

The whole uint8 split ``(N, C, H, W)`` and its labels sit in device memory. At the start of every epoch
:class:`DeviceEpochSampler` draws, from a CPU ``torch.Generator`` seeded with ``seed + epoch``, the epoch's sample
order and every sample's augmentation parameters (crop offsets, flip, Cutout centre), keeps this rank's share and
copies it to the device in one transfer. Each step then slices that plan and gathers, crops, flips, cuts out and
normalises the batch with a handful of batched tensor ops on the device: no per-sample Python, no worker
processes and no device-to-host read per step (no ``.item()``, no boolean-mask indexing).

Determinism and resume: an epoch depends only on ``seed`` and the epoch number, and the sampler's
``state_dict`` holds the epoch and the number of batches already handed out, which Lightning saves in its
checkpoints and restores before iterating (its ``_Stateful`` loader protocol), so a run resumed with
``ckpt_path`` (mid-epoch or at an epoch boundary) sees the batches an uninterrupted run would have seen. The
draws come from the CPU generator, so the same seed gives the same batches on every device type.

Sharding: with ``world_size`` ranks the epoch order is padded by repeating its start to a multiple of
``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``: the split
:class:`torch.utils.data.DistributedSampler` makes (disjoint shards, at most ``world_size - 1`` repeats).
On one process with shuffling the order is exactly that of :class:`datamodules.sampling.EpochShuffleSampler`
(the permutation is the generator's first draw), so the device path visits samples in the worker pipeline's order.

Augmentations: crop with zero padding (torchvision's ``RandomCrop(size, padding)``), horizontal flip with
probability 1/2 (``RandomHorizontalFlip``, applied after the crop) and Cutout (``datamodules.cutout.Cutout``:
a ``length x length`` square around a uniform centre, clipped at the border, zeroed before normalisation), each
drawn per sample. Normalisation is ``x.float().div(255)``, then ``sub(mean).div(std)``: the operations of
``ToTensor`` and ``Normalize``, so unaugmented batches equal the worker pipeline's bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DeviceBatches", "DeviceEpochSampler", "augment_batch"]

# columns of the per-sample parameter table
_OY, _OX, _FLIP, _CY, _CX = range(5)


class DeviceEpochSampler:
    """Epoch order and per-sample augmentation draws of a device-resident split; Lightning-stateful.

    Args:
        num_samples: size of the split.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        shuffle: draw a random permutation per epoch (else the split's order).
        rank, world_size: this process's shard (``DistributedSampler``'s padding and striding).
        image_size: ``(H, W)`` of the images (bounds of the Cutout centre).
        crop_padding: crop offsets are drawn in ``[0, 2 * crop_padding]`` (0: none drawn).
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 image_size: tuple[int, int] = (32, 32), crop_padding: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.crop_padding = int(crop_padding)
        self.epoch = 0
        self.position = 0  # batches of the current pass already handed out by DeviceBatches
        self._restored: int | None = None  # position to start the next pass at, from load_state_dict

    @property
    def shard_size(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start (and once after a restore, with the restored epoch)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.position = 0
            self._restored = None  # a restored position belongs to the restored epoch only

    def start_pass(self) -> int:
        """The batch position a new pass starts at: the restored one once after ``load_state_dict``, else 0."""
        start, self._restored = (self._restored or 0), None
        self.position = start
        return start

    def plan(self, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """This rank's ``(indices (M,), params (M, 5))`` of ``epoch`` (default: the current one), on the CPU.

        ``params`` columns: crop row offset, crop column offset, flip (0/1), Cutout centre row, centre column.
        All draws come from one generator in a fixed order: the permutation, then the five parameter columns
        over the padded epoch (``N`` rounded up to a multiple of ``world_size``), so a sample repeated by the
        padding gets its own augmentation.
        """
        n = self.num_samples
        g = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else int(epoch)))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        total = self.shard_size * self.world_size
        h, w = self.image_size
        span = 2 * self.crop_padding + 1
        params = torch.stack([
            torch.randint(span, (total,), generator=g), torch.randint(span, (total,), generator=g),
            torch.randint(2, (total,), generator=g),
            torch.randint(h, (total,), generator=g), torch.randint(w, (total,), generator=g),
        ], dim=1).to(torch.int16)
        slots = torch.arange(self.rank, total, self.world_size)  # DistributedSampler's striding ...
        return order[slots % n], params[slots]  # ... over the order padded by repeating its start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_samples": self.num_samples, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "position" not in state:  # written by the worker-pipeline fallback, which cannot tell its position
            return
        same = all(state.get(k) == getattr(self, k) for k in ("seed", "num_samples", "world_size"))
        if not same:
            warnings.warn(
                f"device-resident data: the checkpoint's sampler state {dict(state)} was saved with another seed, "
                f"split size or number of processes (now seed={self.seed}, num_samples={self.num_samples}, "
                f"world_size={self.world_size}); the run continues from the same epoch and batch position, but "
                "not with the batches an uninterrupted run would have seen.", stacklevel=2)
        self.epoch = int(state["epoch"])
        self.position = self._restored = int(state["position"])


def augment_batch(images: Tensor, params: Tensor, mean: Tensor, std: Tensor, crop_padding: int = 0,
                  flip: bool = False, cutout: int = 0) -> Tensor:
    """Crop (zero padding), flip, Cutout and normalise a uint8 batch with per-sample ``params``, batched.

    Args:
        images: ``(B, C, H, W)`` uint8 on the device.
        params: ``(B, 5)`` integer table of :meth:`DeviceEpochSampler.plan` on the same device.
        mean, std: ``(C, 1, 1)`` float32 on the device.
        crop_padding: padding of the random crop (0: no crop).
        flip: apply the drawn horizontal flips.
        cutout: side of the Cutout square (0: none).

    Returns:
        ``(B, C, H, W)`` float32 normalised images.
    """
    b, c, h, w = images.shape
    dev = images.device
    if crop_padding or flip:
        p = int(crop_padding)
        src = F.pad(images, (p, p, p, p)) if p else images
        offsets = params.long()
        rows = torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev)
        oy = offsets[:, _OY:_OY + 1] if p else 0
        ox = offsets[:, _OX:_OX + 1] if p else 0
        rows = rows + oy  # (B, H) or (H,)
        if flip:  # crop first, then flip the crop: column j of the result is column W-1-j of the crop
            cols = torch.where(offsets[:, _FLIP:_FLIP + 1].bool(), (w - 1) - cols, cols) + ox
        else:
            cols = cols + ox
        rows = rows.expand(b, h).reshape(b, 1, h, 1)
        cols = cols.expand(b, w).reshape(b, 1, 1, w)
        batch_idx = torch.arange(b, device=dev).view(b, 1, 1, 1)
        chan_idx = torch.arange(c, device=dev).view(1, c, 1, 1)
        images = src[batch_idx, chan_idx, rows, cols]  # one gather: (B, C, H, W)
    x = images.float().div(255)  # ToTensor's conversion
    if cutout:
        half = int(cutout) // 2
        centres = params.long()
        ii = torch.arange(h, device=dev)
        jj = torch.arange(w, device=dev)
        cy, cx = centres[:, _CY:_CY + 1], centres[:, _CX:_CX + 1]
        in_rows = (ii >= cy - half) & (ii < cy + half)  # (B, H): Cutout's rows max(cy-half, 0):min(cy+half, H)
        in_cols = (jj >= cx - half) & (jj < cx + half)
        x = x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)
    return x.sub(mean).div(std)  # Normalize's operations


class DeviceBatches:
    """An iterable of ``(x, y)`` training or evaluation batches from a device-resident uint8 split.

    Not a ``DataLoader``: Lightning uses it as given (no worker processes, no sampler injection) and calls
    ``sampler.set_epoch``, ``state_dict`` and ``load_state_dict`` on it. Under DDP pass ``rank`` and
    ``world_size`` (each rank then yields its own shard).

    Args:
        images: ``(N, C, H, W)`` uint8 on the device.
        labels: ``(N,)`` int64 on the same device.
        batch_size: samples per batch (the last batch may be smaller).
        mean, std: per-channel normalisation constants.
        shuffle: new order each epoch (training) or the split's order (evaluation).
        seed: base seed (epoch ``e`` draws from ``seed + e``).
        crop_padding, flip, cutout: augmentations (see :func:`augment_batch`); all off for evaluation.
        rank, world_size: this process's shard.
    """

    batch_sampler = None  # read by Lightning's dataloader checks, like DataLoader's attribute

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], shuffle: bool = True, seed: int = 0, crop_padding: int = 0,
                 flip: bool = False, cutout: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        dev = images.device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=dev).view(-1, 1, 1)
        self.sampler = DeviceEpochSampler(images.shape[0], seed=seed, shuffle=shuffle, rank=rank,
                                          world_size=world_size, image_size=tuple(images.shape[-2:]),
                                          crop_padding=self.crop_padding)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return math.ceil(self.sampler.shard_size / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self._batches()

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        # a generator: the plan is drawn at the first next(), after Lightning has restored the state and set the
        # epoch (it calls iter() before set_epoch when resuming). Every pass starts at batch 0, except the first
        # one after load_state_dict, which continues the interrupted epoch.
        sampler = self.sampler
        indices, params = sampler.plan()
        indices = indices.to(self.device, non_blocking=True)  # one host-to-device copy per epoch
        params = params.to(self.device, non_blocking=True)
        for b in range(sampler.start_pass(), len(self)):
            start = b * self.batch_size
            sampler.position = b + 1
            yield self._make(indices[start:start + self.batch_size], params[start:start + self.batch_size])

    def _make(self, idx: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x = augment_batch(self.images.index_select(0, idx), params, self.mean, self.std,
                          crop_padding=self.crop_padding, flip=self.flip, cutout=self.cutout)
        return x, self.labels.index_select(0, idx)
