"""The EdgeML sequence benchmarks used by iRNN and TARNN (HAR-2, DSA-19, Google-12/30 keyword spotting), read from
the ``.npy`` files that Microsoft EdgeML's FastGRNN preprocessing scripts write.

On-disk form (EdgeML ``examples/*/FastCells``, ``helpermethods.preProcessData``): ``<data_dir>/train.npy`` and
``<data_dir>/test.npy`` (optional ``val.npy``), each a 2-D float array ``[N, 1 + T * F]``: column 0 is the integer
label, then the T time steps of F features flattened step by step. Labels are shifted so the smallest training
label is 0; features are normalised with the training mean and standard deviation per column (std below 1e-6
replaced by 1), as EdgeML does. Validation is ``val.npy`` when present, else the test split.

Shapes (T, F, classes) follow the FastGRNN paper's preprocessing: HAR-2 (128, 9, 2), DSA-19 (125, 45, 19),
Google-12 (99, 32, 12), Google-30 (99, 32, 30); a file of another width raises an error naming the expected
``1 + T * F`` columns.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from datamodules.base import BaseDataModule
from datamodules.errors import DatasetNotFoundError, dataset_not_found


class _EdgeMLDataModule(BaseDataModule):
    name: str
    steps: int
    features: int
    num_classes: int
    how_to_get: str

    def __init__(self, data_dir: str = "data", batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        self.data_dir = os.fspath(data_dir)
        self.input_shape = (self.steps, self.features)

    def _error(self, missing=None, problem=None) -> DatasetNotFoundError:
        return dataset_not_found(
            self.name, self.data_dir,
            f"<data_dir>/train.npy and test.npy (optional val.npy), float arrays [N, 1 + {self.steps} * "
            f"{self.features}] with the label in column 0 (EdgeML FastCells format)",
            self.how_to_get, missing=missing, problem=problem)

    def _read(self, name: str) -> np.ndarray:
        path = os.path.join(self.data_dir, name)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise self._error(problem=f"has an unreadable {name} ({err})") from err
        width = 1 + self.steps * self.features
        if arr.ndim != 2 or arr.shape[1] != width:
            raise self._error(problem=f"has {name} of shape {arr.shape}; expected [N, {width}] = 1 label column + "
                                      f"{self.steps} steps x {self.features} features")
        return arr.astype(np.float32)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not os.path.isdir(self.data_dir):
            raise self._error(missing=[self.data_dir])
        missing = [n for n in ("train.npy", "test.npy") if not os.path.isfile(os.path.join(self.data_dir, n))]
        if missing:
            raise self._error(missing=missing)
        train = self._read("train.npy")
        x_train = train[:, 1:]
        mean, std = x_train.mean(0), x_train.std(0)
        std[std < 1e-6] = 1.0
        offset = int(train[:, 0].min())

        def dataset(arr: np.ndarray, name: str) -> TensorDataset:
            y = arr[:, 0].astype(np.int64) - offset
            if y.min() < 0 or y.max() >= self.num_classes:
                raise self._error(problem=f"has labels in {name} outside [0, {self.num_classes}) after shifting by "
                                          f"the smallest training label {offset}")
            x = ((arr[:, 1:] - mean) / std).reshape(len(arr), self.steps, self.features)
            return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

        self.train_set = dataset(train, "train.npy")
        self.test_set = dataset(self._read("test.npy"), "test.npy")
        val = os.path.join(self.data_dir, "val.npy")
        self.val_set = dataset(self._read("val.npy"), "val.npy") if os.path.isfile(val) else self.test_set


_EDGEML = ("run the {name} download and preprocessing scripts of Microsoft EdgeML's FastCells examples "
           "(github.com/microsoft/EdgeML) and point data.init_args.data_dir at the folder holding train.npy and test.npy")


class HAR2DataModule(_EdgeMLDataModule):
    """HAR-2: UCI human activity recognition reduced to 2 classes; 128 steps of 9 inertial signals."""

    name, steps, features, num_classes = "HAR-2", 128, 9, 2
    how_to_get = _EDGEML.format(name="HAR2")


class DSA19DataModule(_EdgeMLDataModule):
    """DSA-19: UCI daily and sports activities, 19 classes; 125 steps of 45 sensor channels."""

    name, steps, features, num_classes = "DSA-19", 125, 45, 19
    how_to_get = _EDGEML.format(name="DSA19")


class Google12DataModule(_EdgeMLDataModule):
    """Google-12 keyword spotting (Speech Commands, 10 keywords + silence + unknown); 99 frames of 32 log-mel
    filterbank features."""

    name, steps, features, num_classes = "Google-12", 99, 32, 12
    how_to_get = _EDGEML.format(name="Google12")


class Google30DataModule(_EdgeMLDataModule):
    """Google-30 keyword spotting (all 30 Speech Commands words); 99 frames of 32 log-mel features."""

    name, steps, features, num_classes = "Google-30", 99, 32, 30
    how_to_get = _EDGEML.format(name="Google30")
