"""CIFAR-10/100 from torchvision's on-disk python (pickle) format, with the standard crop+flip augmentation and,
optionally, torchvision's AutoAugment CIFAR-10 policy and Cutout (the OSP release's training pipeline:
crop, flip, AutoAugment, ToTensor, Cutout 16, Normalize).

Integrity checks: torchvision's ``CIFAR10(download=False)`` md5-checks every batch file and the metadata
before loading, which rejects anything but the official files. By default (``verify_md5=False``) the
datamodule uses a thin subclass of torchvision's class that only checks that the files exist and then loads
them with torchvision's own reader (same pickle keys, same code path); ``verify_md5=True`` uses torchvision's
class unchanged. ``download=True`` always uses torchvision's unmodified download + md5 check.

Device-resident pipeline (``device_resident=True``; off by default, meant for GPU runs): the uint8 train and test
splits are copied once onto the training device and every batch is gathered, cropped, flipped, cut out and
normalised there in batched tensor ops (:mod:`datamodules.device_augment`) instead of per image in DataLoader
workers. Crop, flip and Cutout are drawn per sample, as on the worker pipeline; the epoch order and the draws
come from ``seed + epoch`` and the loader is resumable mid-epoch; under DDP each rank takes a disjoint shard as
``DistributedSampler`` would. On one process the sample order is the worker pipeline's, and unaugmented batches
are equal to its batches bit for bit. AutoAugment is not available on this path: torchvision's AutoAugment draws
one sub-policy per call, so on a batched tensor the whole batch would share one sub-policy. A per-sample version is
possible in principle (group a batch's samples by drawn sub-policy, application flags and magnitude signs and run
torchvision's tensor ops per group) but is not implemented: it means dozens of small kernel launches per batch, and
the tensor ops differ slightly from the PIL ones of the worker pipeline. Recipes with ``autoaugment: true`` keep
the worker pipeline. When the splits do not fit the device budget (by default half of the free CUDA memory;
``device_budget_mb`` sets it) the datamodule warns once and uses the worker pipeline; checkpoints resume across
the two (from the start of an interrupted epoch). A checkpoint written with ``device_resident: true`` holds the
loader's state, so resume it with ``device_resident: true``: with the option off, Lightning refuses the state.
"""

from __future__ import annotations

import os
import pickle

from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from datamodules.base import BaseDataModule
from datamodules.cutout import Cutout
from datamodules.device_augment import DeviceBatches
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


class _WorkerFallbackLoader(DataLoader):
    """The worker pipeline's training DataLoader of a datamodule whose ``device_resident`` fell back for lack of
    device memory. It accepts the device path's checkpoint state (Lightning restores loader states by count, and a
    plain DataLoader has none), so a run checkpointed on the device path resumes here, from the start of the
    interrupted epoch's order; its own checkpoints resume on either path, likewise."""

    def state_dict(self) -> dict[str, bool]:
        return {"worker_pipeline": True}

    def load_state_dict(self, state: dict) -> None:
        if state.get("position"):
            rank_zero_warn(
                f"The checkpoint was written mid-epoch (after batch {state['position']} of epoch {state['epoch']}) "
                "on the device-resident pipeline and resumes on the worker pipeline, which replays that epoch's "
                "order from its start: the remaining steps of the epoch see other batches than an uninterrupted "
                "run.")


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
        device_resident: bool | Literal["auto"] = False,
        device_budget_mb: float | None = None,
    ) -> None:
        """
        Args:
            data_dir: folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
            batch_size, num_workers, seed, pin_memory: DataLoader settings (``seed + epoch`` seeds the order).
            download: fetch the files with torchvision (needs internet).
            augment: random crop (padding 4) and horizontal flip on the training split.
            verify_md5: use torchvision's md5-checking reader (official files only).
            autoaugment: torchvision's AutoAugment CIFAR-10 policy (worker pipeline only).
            cutout: Cutout square side in pixels (0: off).
            device_resident: keep the uint8 splits on the training device and augment batches there (see the
                module docstring); ``num_workers`` and ``pin_memory`` are then unused. ``"auto"`` (the CIFAR
                recipes' setting): on when the training device is a CUDA GPU and AutoAugment is off, the worker
                pipeline otherwise (on a CPU the workers overlap augmentation with compute, the batched ops would
                not).
            device_budget_mb: the most device memory (MiB) the resident splits may take; default: half of the
                free memory of a CUDA device, no limit on other devices. Above it: warning and worker pipeline.
        """
        super().__init__(batch_size, num_workers, seed, pin_memory)
        if int(cutout) != cutout or cutout < 0:
            raise ValueError(f"data.init_args.cutout must be a whole number of pixels >= 0 (0: off), got {cutout!r}.")
        if device_resident not in (True, False, "auto"):
            raise ValueError(f"data.init_args.device_resident must be true, false or auto, got {device_resident!r}.")
        if device_resident is True and autoaugment:
            raise ValueError(
                "data.init_args.device_resident: true does not support data.init_args.autoaugment: true: "
                "torchvision's AutoAugment draws one sub-policy per call, so on a batched tensor every image of the "
                "batch would get the same sub-policy instead of its own. Set data.init_args.device_resident: false "
                "to keep AutoAugment per image on the DataLoader worker pipeline (the AutoAugment recipes' "
                "choice), or set data.init_args.autoaugment: false to train with crop, flip and Cutout on the "
                "device.")
        if device_budget_mb is not None and not device_budget_mb >= 0:
            raise ValueError(f"data.init_args.device_budget_mb must be >= 0 MiB or null (automatic), "
                             f"got {device_budget_mb!r}.")
        self.save_hyperparameters()
        self.data_dir = os.fspath(data_dir)
        self.download = bool(download)
        self.augment = bool(augment)
        self.verify_md5 = bool(verify_md5)
        self.autoaugment = bool(autoaugment)
        self.cutout = int(cutout)
        self.device_resident_mode = device_resident
        self.device_resident = device_resident is True
        self.device_budget_mb = device_budget_mb
        self._resident: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # split -> (uint8, labels)

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
        if self.device_resident_mode == "auto":
            self.device_resident = not self.autoaugment and self._device().type == "cuda"
        if self.device_resident:
            self._move_to_device()

    # ---- device-resident pipeline
    def _device(self) -> torch.device:
        trainer = self.trainer  # the training device is known once a Trainer is attached
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _device_budget(self, device: torch.device, need: int) -> tuple[float, str]:
        """(budget in bytes, how it was found) for the resident splits on ``device``."""
        if self.device_budget_mb is not None:
            return self.device_budget_mb * 2**20, "data.init_args.device_budget_mb"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return free / 2, f"half of the {free / 2**20:.0f} MiB free on {device}"
        return float("inf"), "no limit off CUDA"

    def _move_to_device(self) -> None:
        """Copies the uint8 splits set up so far onto the training device once (or falls back, with a warning)."""
        splits = {name: ds for name, ds in (("train", self.train_set), ("test", self.test_set)) if ds is not None}
        device = self._device()
        if self._resident is not None and all(k in self._resident for k in splits) and all(
                v[0].device == device for v in self._resident.values()):
            return
        need = sum(ds.data.nbytes + 8 * len(ds.targets) for ds in splits.values())
        budget, how = self._device_budget(device, need)
        fits = need <= budget
        if self.trainer is not None:  # every rank takes the same path, even if their free memory differs
            fits = self.trainer.strategy.reduce_boolean_decision(fits, all=True)
        if not fits:
            rank_zero_warn(
                f"{type(self).__name__}: device_resident needs {need / 2**20:.1f} MiB on {device} for the uint8 "
                f"{' and '.join(splits)} splits but the budget is {budget / 2**20:.1f} MiB ({how}); using the "
                "DataLoader worker pipeline instead.")
            self.device_resident = False
            self._resident = None
            return
        self._resident = {
            name: (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous().to(device),  # (N, 32, 32, 3) -> NCHW
                   torch.as_tensor(ds.targets, dtype=torch.long).to(device))
            for name, ds in splits.items()
        }

    def _device_loader(self, split: str, train: bool) -> DeviceBatches:
        if self._resident is None or split not in self._resident:
            raise RuntimeError(f"{type(self).__name__}: the {split} split is not set up; call setup() first")
        images, labels = self._resident[split]
        rank, world = self._shard()
        augment = train and self.augment
        return DeviceBatches(images, labels, self.batch_size, self.mean, self.std, shuffle=train, seed=self.seed,
                             crop_padding=4 if augment else 0, flip=augment, cutout=self.cutout if train else 0,
                             rank=rank, world_size=world)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        if self.device_resident:
            return self._device_loader("train", train=True)
        loader = super().train_dataloader()
        if self.hparams.get("device_resident", False) is not True:  # the worker pipeline as it always was
            return loader
        return _WorkerFallbackLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                                     num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                                     persistent_workers=loader.persistent_workers, drop_last=loader.drop_last)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        if self.device_resident:
            return self._device_loader("test", train=False)
        return super().val_dataloader()

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        if self.device_resident:
            return self._device_loader("test", train=False)
        return super().test_dataloader()


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
