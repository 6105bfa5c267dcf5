"""MNIST from torchvision's raw IDX files, as images or as row/pixel sequences (sequential and permuted MNIST).

torchvision 0.29 with ``download=False`` reads only the *uncompressed* files ``<data_dir>/MNIST/raw/
{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (existence check, no md5), or the legacy
``MNIST/processed/{training,test}.pt``. If only the ``.gz`` files are there, ``prepare_data``/``setup``
decompress them next to the archives first (what torchvision's own download does), atomically, no network.
"""

from __future__ import annotations

import gzip
import os
import shutil
from typing import Literal

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets

from datamodules.base import BaseDataModule, stratified_split
from datamodules.errors import DatasetNotFoundError, dataset_not_found

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_SHAPES = {"none": (1, 28, 28), "row": (28, 28), "pixel": (784, 1)}


class MNISTDataModule(BaseDataModule):
    """MNIST (10 classes), normalised with mean 0.1307 / std 0.3081, held in memory as tensors.

    ``as_sequence``: ``"none"`` gives images and ``input_shape == (1, 28, 28)``; ``"row"`` gives sequences of
    28 rows of 28 pixels and ``"pixel"`` sequences of 784 single pixels (sequential MNIST). For sequences
    ``input_shape`` is the 2-tuple ``(T, F) = (seq_len, input_size)``, i.e. (28, 28) or (784, 1); ``seq_len`` and
    ``input_size`` are ``None`` for images. ``permuted`` applies one fixed pixel permutation (drawn from
    ``permutation_seed``, independent of the training ``seed``) to the flattened 784 pixels before reshaping
    (permuted MNIST). ``val_fraction = 0`` uses the test split for validation; ``> 0`` holds out a stratified,
    ``seed``-determined part of the training split.
    """

    num_classes = 10

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        download: bool = False,
        as_sequence: Literal["none", "row", "pixel"] = "none",
        permuted: bool = False,
        permutation_seed: int = 0,
        val_fraction: float = 0.0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if as_sequence not in _SHAPES:
            raise ValueError(f"as_sequence must be one of {sorted(_SHAPES)}, got {as_sequence!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.data_dir = os.fspath(data_dir)
        self.download = bool(download)
        self.as_sequence = as_sequence
        self.permuted = bool(permuted)
        self.permutation_seed = int(permutation_seed)
        self.val_fraction = float(val_fraction)
        self.input_shape = _SHAPES[as_sequence]
        self.seq_len, self.input_size = (None, None) if as_sequence == "none" else self.input_shape
        self.permutation = (
            torch.randperm(784, generator=torch.Generator().manual_seed(self.permutation_seed)) if permuted else None
        )

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.data_dir, "MNIST", "raw")

    def _error(self, missing=None, problem=None) -> DatasetNotFoundError:
        return dataset_not_found(
            "MNIST",
            self.raw_folder,
            "<data_dir>/MNIST/raw/ holding " + ", ".join(RAW_FILES) + " (uncompressed, or as .gz)",
            "download the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ into "
            f"{os.path.abspath(self.raw_folder)}, or set data.init_args.download: true on a machine with internet",
            missing=missing,
            problem=problem,
        )

    def _decompress(self) -> None:
        """Gunzip ``X.gz`` to ``X`` for any raw file present only compressed; raise if a file is missing."""
        processed = os.path.join(self.data_dir, "MNIST", "processed")
        if all(os.path.isfile(os.path.join(processed, f)) for f in ("training.pt", "test.pt")):
            return  # torchvision's legacy format, read as is
        if not os.path.isdir(self.raw_folder):
            raise self._error(missing=[self.raw_folder])
        missing = []
        for name in RAW_FILES:
            path = os.path.join(self.raw_folder, name)
            if os.path.isfile(path):
                continue
            if not os.path.isfile(path + ".gz"):
                missing.append(name)
                continue
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with gzip.open(path + ".gz", "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, path)
            except OSError as err:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise self._error(problem=f"has {name}.gz but it could not be decompressed ({err}); "
                                          f"gunzip it yourself") from err
        if missing:
            raise self._error(missing=missing)

    def prepare_data(self) -> None:
        if self.download:
            datasets.MNIST(self.data_dir, train=True, download=True)
            datasets.MNIST(self.data_dir, train=False, download=True)
        self._decompress()

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Read one split through torchvision and return (inputs shaped for ``as_sequence``, labels)."""
        try:
            ds = datasets.MNIST(self.data_dir, train=train, download=False)
        except RuntimeError as err:
            raise self._error(problem=f"was rejected by torchvision ({err})") from err
        except (AssertionError, ValueError, TypeError, IndexError) as err:  # bad magic number / shape / dtype
            raise self._error(problem=f"is not valid IDX data ({type(err).__name__}: {err})") from err
        x, y = ds.data, ds.targets.long()
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise self._error(problem=f"holds images of shape {tuple(x.shape)} and {len(y)} labels")
        x = ((x.float() / 255.0 - MNIST_MEAN) / MNIST_STD).reshape(len(x), 784)
        if self.permutation is not None:
            x = x[:, self.permutation]
        return x.reshape(len(x), *self.input_shape).contiguous(), y

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self._decompress()
        x, y = self._load(True)
        self.test_set = TensorDataset(*self._load(False))
        if self.val_fraction > 0:
            tr, va = (torch.as_tensor(i) for i in stratified_split(y.numpy(), self.val_fraction, self.seed))
            self.train_set, self.val_set = TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])
        else:
            self.train_set, self.val_set = TensorDataset(x, y), self.test_set
