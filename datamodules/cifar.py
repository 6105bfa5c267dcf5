"""CIFAR-10/100 from torchvision's on-disk python (pickle) format, with the standard crop+flip augmentation and,
optionally, torchvision's AutoAugment CIFAR-10 policy and Cutout (the OSP release's training pipeline:
crop, flip, AutoAugment, ToTensor, Cutout 16, Normalize).

Integrity checks: torchvision's ``CIFAR10(download=False)`` md5-checks every batch file and the metadata
before loading, which rejects anything but the official files. By default (``verify_md5=False``) the
datamodule uses a thin subclass of torchvision's class that only checks that the files exist and then loads
them with torchvision's own reader (same pickle keys, same code path); ``verify_md5=True`` uses torchvision's
class unchanged. ``download=True`` always uses torchvision's unmodified download + md5 check.
"""

from __future__ import annotations

import os
import pickle

from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from datamodules.base import BaseDataModule
from datamodules.cutout import Cutout
from datamodules.errors import DatasetNotFoundError, dataset_not_found


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10 reader with the md5 checks replaced by file-existence checks."""

    def _check_integrity(self) -> bool:
        return all(
            check_integrity(os.path.join(self.root, self.base_folder, name))
            for name, _ in self.train_list + self.test_list
        )

    def _load_meta(self) -> None:
        meta = dict(self.meta, md5=None)  # check_integrity(path, None) only tests that the file exists
        original, self.meta = self.meta, meta
        try:
            super()._load_meta()
        finally:
            self.meta = original


class _CIFAR100Files(_CIFAR10Files, datasets.CIFAR100):
    """torchvision's CIFAR100 reader with the md5 checks replaced by file-existence checks."""

    base_folder = datasets.CIFAR100.base_folder
    train_list = datasets.CIFAR100.train_list
    test_list = datasets.CIFAR100.test_list
    meta = datasets.CIFAR100.meta


class _CIFARDataModule(BaseDataModule):
    """Shared CIFAR logic: val = the test split; input (3, 32, 32)."""

    dataset_cls: type[datasets.CIFAR10]
    lenient_cls: type[datasets.CIFAR10]
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    input_shape = (3, 32, 32)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        download: bool = False,
        augment: bool = True,
        verify_md5: bool = False,
        autoaugment: bool = False,
        cutout: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        if int(cutout) != cutout or cutout < 0:
            raise ValueError(f"data.init_args.cutout must be a whole number of pixels >= 0 (0: off), got {cutout!r}.")
        self.save_hyperparameters()
        self.data_dir = os.fspath(data_dir)
        self.download = bool(download)
        self.augment = bool(augment)
        self.verify_md5 = bool(verify_md5)
        self.autoaugment = bool(autoaugment)
        self.cutout = int(cutout)

    @property
    def folder(self) -> str:
        return os.path.join(self.data_dir, self.dataset_cls.base_folder)

    def train_transform(self) -> transforms.Compose:
        """``augment``: crop (padding 4) and flip; then ``autoaugment`` (CIFAR-10 policy, on the PIL image);
        ToTensor; ``cutout`` (on [0, 1] pixels); Normalize."""
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if self.augment else []
        if self.autoaugment:
            aug.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10))
        to_tensor, normalize = self.eval_transform().transforms
        return transforms.Compose([*aug, to_tensor, *([Cutout(self.cutout)] if self.cutout else []), normalize])

    def eval_transform(self) -> transforms.Compose:
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])

    def _error(self, missing=None, problem=None) -> DatasetNotFoundError:
        cls = self.dataset_cls
        files = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return dataset_not_found(
            self.name,
            self.folder,
            f"<data_dir>/{cls.base_folder}/ holding the python-version pickle files {', '.join(files)}",
            f"download the {self.name} python version ({cls.filename}) from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {os.path.abspath(self.data_dir)} "
            "(giving " + os.path.abspath(self.folder) + "), or set data.init_args.download: true on a machine "
            "with internet",
            missing=missing,
            problem=problem,
        )

    def prepare_data(self) -> None:
        if self.download:  # unmodified torchvision download + md5 check
            self.dataset_cls(self.data_dir, train=True, download=True)
            self.dataset_cls(self.data_dir, train=False, download=True)

    def _check_files(self) -> None:
        cls = self.dataset_cls
        if not os.path.isdir(self.folder):
            raise self._error(missing=[self.folder])
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        missing = [n for n in names if not os.path.isfile(os.path.join(self.folder, n))]
        if missing:
            raise self._error(missing=missing)

    def _load(self, train: bool, transform) -> datasets.CIFAR10:
        cls = self.dataset_cls if self.verify_md5 else self.lenient_cls
        try:
            ds = cls(self.data_dir, train=train, transform=transform, download=False)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted" (md5 mismatch)
            raise self._error(problem=f"failed torchvision's check ({err})") from err
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError) as err:
            problem = f"could not be read as the CIFAR pickle format ({type(err).__name__}: {err})"
            raise self._error(problem=problem) from err
        bad = [t for t in set(ds.targets) if not 0 <= t < self.num_classes]
        if bad or len(ds.classes) != self.num_classes:
            raise self._error(problem=f"has {len(ds.classes)} class names / labels {sorted(bad)[:5]} outside "
                                      f"[0, {self.num_classes})")
        return ds

    def setup(self, stage: str | None = None) -> None:
        self._check_files()
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._load(True, self.train_transform())
        if self.test_set is None:
            self.test_set = self._load(False, self.eval_transform())
        self.val_set = self.test_set


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (10 classes, input (3, 32, 32)); val = test split."""

    dataset_cls = datasets.CIFAR10
    lenient_cls = _CIFAR10Files
    name = "CIFAR-10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (fine labels) from ``data_dir/cifar-100-python`` (100 classes, input (3, 32, 32)); val = test."""

    dataset_cls = datasets.CIFAR100
    lenient_cls = _CIFAR100Files
    name = "CIFAR-100"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
