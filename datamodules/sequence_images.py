"""Images read as sequences: sequential CIFAR-10, noise-padded CIFAR-10 and noisy MNIST.

* **Sequential CIFAR-10** (FPTT, docs/fptt.md#models-and-settings): the 1024 pixels of a CIFAR-10 image in raster order,
  3 channels per step: ``input_shape = (1024, 3)`` (``as_sequence="pixel"``). ``as_sequence="row"`` gives 32 rows
  of 96 values (the 32 pixels of a row, channels interleaved per pixel).
* **Noise-padded CIFAR-10** (Chang et al. 2019, used by iRNN and TARNN; docs/irnn.md#published-numbers): the 32 rows (96 values)
  followed by i.i.d. N(0, ``noise_std``^2) vectors up to ``pad_to`` = 1000 steps: ``input_shape = (1000, 96)``.
* **Noisy MNIST** (iRNN/TARNN): the 28 rows of 28 pixels followed by noise up to 1000 steps: ``(1000, 28)``.
* Pixel and permuted pixel MNIST need nothing new: ``datamodules.mnist.MNISTDataModule`` with
  ``as_sequence: pixel`` (and ``permuted: true``).

The pixels are normalised as in the image datamodules (CIFAR per-channel mean/std, MNIST 0.1307/0.3081); no
augmentation. The padding noise of example i of a split is drawn from a generator seeded by (``seed``, split, i),
so it is fixed per example and identical across runs, ranks and workers. CIFAR files are read through
``datamodules.cifar.CIFAR10DataModule`` (torchvision's python pickle batches), MNIST through
``datamodules.mnist.MNISTDataModule`` (IDX files); their missing-data errors apply unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import Dataset

from datamodules.cifar import CIFAR10DataModule
from datamodules.mnist import MNISTDataModule
from datamodules.sequence_tasks import SequenceTaskError

_SPLITS = {"train": 0, "val": 1, "test": 2}


class NoisePadded(Dataset):
    """Wraps a dataset of ``(x (T0, F), y)``: appends ``pad_to - T0`` noise steps fixed per (seed, split, index)."""

    def __init__(self, base: Dataset, pad_to: int, noise_std: float, seed: int, split: str) -> None:
        self.base, self.pad_to, self.noise_std, self.seed, self.split = base, pad_to, noise_std, seed, split

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        x, y = self.base[index]
        steps, features = x.shape
        if steps > self.pad_to:
            raise SequenceTaskError(f"pad_to={self.pad_to} is shorter than the {steps} data steps of one example")
        gen = torch.Generator().manual_seed((self.seed * 7 + _SPLITS[self.split]) * 1_000_003 + index)
        noise = torch.randn(self.pad_to - steps, features, generator=gen) * self.noise_std
        return torch.cat([x, noise.to(x.dtype)], dim=0), y


class _ToSequence:
    """(3, 32, 32) tensor -> (1024, 3) pixels or (32, 96) rows."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        hwc = img.permute(1, 2, 0)
        return hwc.reshape(1024, 3) if self.mode == "pixel" else hwc.reshape(32, 96)


class SequentialCIFAR10DataModule(CIFAR10DataModule):
    """CIFAR-10 as a sequence (module docstring). ``pad_to`` (e.g. 1000 with ``as_sequence="row"``) appends noise:
    noise-padded CIFAR-10. Validation is the test split, as in ``CIFAR10DataModule``."""

    def __init__(self, data_dir: str = "data/cifar10", batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False, as_sequence: Literal["pixel", "row"] = "pixel", pad_to: int | None = None,
                 noise_std: float = 1.0, verify_md5: bool = False) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed, pin_memory, download=False, augment=False,
                         verify_md5=verify_md5)
        self.save_hyperparameters()
        if as_sequence not in ("pixel", "row"):
            raise SequenceTaskError(f"data.init_args.as_sequence must be 'pixel' or 'row', got {as_sequence!r}")
        self.as_sequence = as_sequence
        steps, features = (1024, 3) if as_sequence == "pixel" else (32, 96)
        if pad_to is not None and pad_to < steps:
            raise SequenceTaskError(f"data.init_args.pad_to={pad_to} is shorter than the {steps} steps of a "
                                    f"{as_sequence} sequence")
        self.pad_to, self.noise_std = pad_to, float(noise_std)
        self.seq_len = pad_to or steps
        self.input_shape = (self.seq_len, features)

    def eval_transform(self):
        base = super().eval_transform()
        base.transforms.append(_ToSequence(self.as_sequence))
        return base

    def train_transform(self):
        return self.eval_transform()

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.pad_to is None:
            return
        if self.train_set is not None and not isinstance(self.train_set, NoisePadded):
            self.train_set = NoisePadded(self.train_set, self.pad_to, self.noise_std, self.seed, "train")
        if not isinstance(self.test_set, NoisePadded):
            self.test_set = NoisePadded(self.test_set, self.pad_to, self.noise_std, self.seed, "test")
        self.val_set = self.test_set


class NoisyMNISTDataModule(MNISTDataModule):
    """Noisy MNIST: 28 rows then noise up to ``pad_to`` (1000) steps, ``input_shape = (pad_to, 28)``."""

    def __init__(self, data_dir: str = "data/mnist", batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False, pad_to: int = 1000, noise_std: float = 1.0,
                 val_fraction: float = 0.0) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed, pin_memory, download=False, as_sequence="row",
                         val_fraction=val_fraction)
        if pad_to < 28:
            raise SequenceTaskError(f"data.init_args.pad_to must be >= 28 (the image rows), got {pad_to}")
        self.pad_to, self.noise_std = int(pad_to), float(noise_std)
        self.seq_len = self.pad_to
        self.input_shape = (self.pad_to, 28)

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        shape, self.input_shape = self.input_shape, (28, 28)  # the parent reshapes to input_shape: rows first
        try:
            return super()._load(train)
        finally:
            self.input_shape = shape

    def setup(self, stage: str | None = None) -> None:
        if isinstance(self.train_set, NoisePadded):
            return
        super().setup(stage)
        same = self.val_set is self.test_set
        self.train_set = NoisePadded(self.train_set, self.pad_to, self.noise_std, self.seed, "train")
        self.test_set = NoisePadded(self.test_set, self.pad_to, self.noise_std, self.seed, "test")
        self.val_set = self.test_set if same else NoisePadded(self.val_set, self.pad_to, self.noise_std, self.seed,
                                                              "val")
