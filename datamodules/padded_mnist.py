"""MNIST zero-padded to 40x40, optionally rotated or affinely warped: the data of the Affine VAE paper (Bidart and
Wong 2019; docs/affine_vae.md).

Reads torchvision's raw IDX files (``<data_dir>/MNIST/raw/``, as :class:`datamodules.mnist.MNISTDataModule`, whose
checks and ``.gz`` handling it reuses), scales pixels to [0, 1] and pads each 28x28 digit with zeros to
``pad_to`` x ``pad_to`` (centred). Optional transforms, drawn once per sample from ``seed`` (so every epoch sees the
same poses; the authors drew a fresh integer angle per epoch):

* ``rotation`` (degrees): a uniform angle in +-rotation (180 = every orientation);
* ``max_shear`` (degrees) and ``scale_range``: a general affine map R(angle) Shear(s) Scale(k) (the paper's affine
  experiment: shear up to 55 degrees, scale 0.75-1.5).

``test_rotation`` / ``test_affine`` apply to the test split (default: the same as training). Pixels stay in [0, 1]
(background 0): the authors normalised with (0.1307, 0.3081), which puts the padding at -0.42 and does not match
their sigmoid decoder; ``normalize=True`` restores their normalisation for classifiers.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from torchvision import datasets

from datamodules.base import BaseDataModule
from datamodules.mnist import MNIST_MEAN, MNIST_STD, MNISTDataModule
from nets.affine_warp import warp


def random_affine_theta(n: int, rotation: float, max_shear: float, scale_range: tuple[float, float],
                        generator: torch.Generator) -> torch.Tensor:
    """``affine_grid`` matrices (N, 2, 3) of content maps F = R(t) Shear(s) diag(k, k), t ~ U(+-rotation deg),
    s ~ U(+-max_shear deg), k ~ U(scale_range); the grid samples the input at F^-1 p."""
    t = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotation)
    s = torch.tan((torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_shear))
    lo, hi = scale_range
    k = torch.rand(n, generator=generator) * (hi - lo) + lo
    c, si = torch.cos(t), torch.sin(t)
    rot = torch.stack([torch.stack([c, si], -1), torch.stack([-si, c], -1)], -2)  # CCW as displayed (y down)
    shear = torch.eye(2).repeat(n, 1, 1)
    shear[:, 0, 1] = s
    fwd = rot @ shear * k[:, None, None]
    inv = torch.linalg.inv(fwd)
    return torch.cat([inv, torch.zeros(n, 2, 1)], -1)


class PaddedMNISTDataModule(BaseDataModule):
    """MNIST in [0, 1], zero-padded to (1, ``pad_to``, ``pad_to``), with optional per-sample rotation/affine maps.

    Samples are ``(image, label)``. ``train_subset`` keeps the first N training images (CPU-scale runs).
    """

    num_classes = 10

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        pad_to: int = 40,
        rotation: float = 0.0,
        max_shear: float = 0.0,
        scale_range: tuple[float, float] = (1.0, 1.0),
        test_rotation: float | None = None,
        test_affine: bool | None = None,
        normalize: bool = False,
        train_subset: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if pad_to < 28:
            raise ValueError(f"pad_to must be >= 28 (MNIST digits are 28x28), got {pad_to}")
        if not 0.0 <= rotation <= 180.0 or (test_rotation is not None and not 0.0 <= test_rotation <= 180.0):
            raise ValueError(f"rotation and test_rotation must be in [0, 180] degrees, got {rotation}, {test_rotation}")
        if not 0.0 <= max_shear < 90.0:
            raise ValueError(f"max_shear must be in [0, 90) degrees, got {max_shear}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.data_dir = os.fspath(data_dir)
        self.pad_to = int(pad_to)
        self.input_shape = (1, self.pad_to, self.pad_to)
        self.rotation, self.max_shear = float(rotation), float(max_shear)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.test_rotation = self.rotation if test_rotation is None else float(test_rotation)
        affine = self.max_shear > 0 or self.scale_range != (1.0, 1.0)
        self.test_affine = affine if test_affine is None else bool(test_affine)
        self.normalize = bool(normalize)
        self.train_subset = train_subset
        self._mnist = MNISTDataModule(data_dir=self.data_dir)  # file checks, .gz handling, error messages

    def prepare_data(self) -> None:
        self._mnist._decompress()

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ds = datasets.MNIST(self.data_dir, train=train, download=False)
        except RuntimeError as err:
            raise self._mnist._error(problem=f"was rejected by torchvision ({err})") from err
        except (AssertionError, ValueError, TypeError, IndexError) as err:
            raise self._mnist._error(problem=f"is not valid IDX data ({type(err).__name__}: {err})") from err
        x, y = ds.data, ds.targets.long()
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise self._mnist._error(problem=f"holds images of shape {tuple(x.shape)}, not (N, 28, 28)")
        return x, y

    def transform(self, x: torch.Tensor, split: str) -> torch.Tensor:
        """uint8 (N, 28, 28) -> padded, posed float (N, 1, pad_to, pad_to) in [0, 1] (normalised if asked)."""
        x = x.float().div(255.0)[:, None]
        p = self.pad_to - 28
        x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
        rotation = self.rotation if split == "train" else self.test_rotation
        affine = (self.max_shear > 0 or self.scale_range != (1.0, 1.0)) if split == "train" else self.test_affine
        if rotation > 0 or affine:
            g = torch.Generator().manual_seed(self.seed * 2 + (split == "test"))
            shear, scale = (self.max_shear, self.scale_range) if affine else (0.0, (1.0, 1.0))
            x = warp(x, random_affine_theta(len(x), rotation, shear, scale, g)).clamp_(0, 1)
        if self.normalize:
            x = (x - MNIST_MEAN) / MNIST_STD
        return x.contiguous()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self._mnist._decompress()
        x, y = self._load(True)
        if self.train_subset is not None:
            x, y = x[: self.train_subset], y[: self.train_subset]
        xt, yt = self._load(False)
        self.train_set = TensorDataset(self.transform(x, "train"), y)
        self.test_set = self.val_set = TensorDataset(self.transform(xt, "test"), yt)
