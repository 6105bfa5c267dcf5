"""ImageNet (ILSVRC-2012 or any class-folder subset) via ``torchvision.datasets.ImageFolder``.

The training augmentation of the timm ImageNet trainer is available through timm's own transform builder:
``auto_augment`` (e.g. ``rand-m9-mstd0.5``, RandAugment of magnitude 9 with magnitude noise 0.5), random erasing
(``re_prob``, ``re_mode``, ``re_count``), ``train_interpolation`` (``random`` picks bilinear or bicubic per image,
as that trainer's default) and ``interpolation`` for the evaluation resize (``bicubic`` for timm's
EfficientNet/MobileNet models).
"""

from __future__ import annotations

import os
import re

from torchvision import datasets, transforms

from datamodules.base import BaseDataModule
from datamodules.errors import DatasetNotFoundError, dataset_not_found

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EVAL_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_TRAIN_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "random")
_RE_MODES = ("const", "rand", "pixel")
_LAYOUT = "<data_dir>/train/<class>/*.JPEG and <data_dir>/val/<class>/*.JPEG with the same class folders in both"
_HOW = (
    "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org (login required), "
    "extract the per-class train tars into train/<wnid>/ and sort the 50k validation images into val/<wnid>/ "
    "(e.g. with the widely used valprep.sh script); this datamodule never downloads"
)


class ImageNetDataModule(BaseDataModule):
    """ImageFolder at ``data_dir/train`` and ``data_dir/val`` (val doubles as test), input (3, S, S).

    Train: RandomResizedCrop(``image_size``) + horizontal flip; eval: Resize(``resize_size``) +
    CenterCrop(``image_size``); both ImageNet-normalised. ``num_classes`` is an init argument because it must
    be known before the disk is read; ``setup`` checks that both splits have exactly that many class folders.
    """

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        batch_size: int = 256,
        num_workers: int = 8,
        seed: int = 0,
        pin_memory: bool = False,
        num_classes: int = 1000,
        image_size: int = 224,
        resize_size: int = 256,
        interpolation: str = "bilinear",
        train_interpolation: str | None = None,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        re_mode: str = "pixel",
        re_count: int = 1,
        color_jitter: float | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if image_size > resize_size:
            raise ValueError(f"image_size ({image_size}) must be <= resize_size ({resize_size})")
        self.data_dir = os.fspath(data_dir)
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.resize_size = int(resize_size)
        self.input_shape = (3, self.image_size, self.image_size)
        self.classes: list[str] | None = None
        if interpolation not in _EVAL_INTERPOLATIONS:
            raise ValueError(f"ImageNetDataModule: interpolation={interpolation!r} is not one of "
                             f"{', '.join(_EVAL_INTERPOLATIONS)} (data.init_args.interpolation).")
        if train_interpolation is not None and train_interpolation not in _TRAIN_INTERPOLATIONS:
            raise ValueError(f"ImageNetDataModule: train_interpolation={train_interpolation!r} is not one of "
                             f"{', '.join(_TRAIN_INTERPOLATIONS)} (data.init_args.train_interpolation; None: the same "
                             "as interpolation).")
        if not 0.0 <= float(re_prob) <= 1.0:
            raise ValueError(f"ImageNetDataModule: re_prob (random-erasing probability) must be in [0, 1], got "
                             f"{re_prob!r} (data.init_args.re_prob).")
        if re_mode not in _RE_MODES:
            raise ValueError(f"ImageNetDataModule: re_mode={re_mode!r} is not one of {', '.join(_RE_MODES)} "
                             "(data.init_args.re_mode).")
        if isinstance(re_count, bool) or not isinstance(re_count, int) or re_count < 1:
            raise ValueError(f"ImageNetDataModule: re_count must be an integer >= 1, got {re_count!r} "
                             "(data.init_args.re_count).")
        self.interpolation = interpolation
        self.train_interpolation = train_interpolation or interpolation
        self.auto_augment = auto_augment
        self.re_prob = float(re_prob)
        self.re_mode = re_mode
        self.re_count = re_count
        self.color_jitter = color_jitter
        if self._uses_timm():
            self.train_transform()  # an unknown auto_augment policy fails here, not in a worker process

    def _uses_timm(self) -> bool:
        return bool(self.auto_augment or self.re_prob > 0 or self.color_jitter or self.train_interpolation not in
                    ("bilinear",))

    def train_transform(self) -> transforms.Compose:
        if self._uses_timm():
            from timm.data.transforms_factory import transforms_imagenet_train

            try:
                aa = self.auto_augment
                if aa and aa.startswith("rand"):  # timm skips sections it cannot parse: refuse them here
                    bad = [c for c in aa.split("-")[1:] if not re.fullmatch(r"t\w+|(mstd|mmax|inc|m|n|p)\d[\d.]*", c)]
                    if aa.split("-")[0] != "rand" or bad:
                        raise ValueError(f"unknown RandAugment section(s) {bad or [aa.split('-')[0]]}")
                return transforms_imagenet_train(
                    self.image_size, hflip=0.5, color_jitter=self.color_jitter, auto_augment=self.auto_augment,
                    interpolation=self.train_interpolation, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    re_prob=self.re_prob, re_mode=self.re_mode, re_count=self.re_count)
            except (AssertionError, ValueError, KeyError, IndexError) as err:
                raise ValueError(
                    f"ImageNetDataModule: auto_augment={self.auto_augment!r} is not an augmentation policy timm "
                    f"knows ({type(err).__name__}: {err}); use e.g. 'rand-m9-mstd0.5' (RandAugment), "
                    "'augmix-m5-w4-d2', 'v0' or 'original' (AutoAugment), or null for none "
                    "(data.init_args.auto_augment).") from None
        return transforms.Compose([
            transforms.RandomResizedCrop(self.image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def eval_transform(self) -> transforms.Compose:
        return transforms.Compose([
            transforms.Resize(self.resize_size, interpolation=transforms.InterpolationMode(self.interpolation)),
            transforms.CenterCrop(self.image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def _error(self, path: str, missing=None, problem=None) -> DatasetNotFoundError:
        return dataset_not_found("ImageNet", path, _LAYOUT, _HOW, missing=missing, problem=problem)

    def _classes(self, split: str) -> list[str]:
        path = os.path.join(self.data_dir, split)
        with os.scandir(path) as it:
            classes = sorted(e.name for e in it if e.is_dir())
        if not classes:
            raise self._error(path, problem="contains no class sub-folders (flat validation images must first be "
                                            "sorted into val/<class>/)")
        if len(classes) != self.num_classes:
            raise self._error(path, problem=f"has {len(classes)} class folders but num_classes={self.num_classes} "
                                            f"(set data.init_args.num_classes: {len(classes)} for a subset)")
        return classes

    def _check(self) -> None:
        if not os.path.isdir(self.data_dir):
            raise self._error(self.data_dir, missing=[self.data_dir])
        missing = [s + "/" for s in ("train", "val") if not os.path.isdir(os.path.join(self.data_dir, s))]
        if missing:
            raise self._error(self.data_dir, missing=missing)
        train, val = self._classes("train"), self._classes("val")
        if train != val:
            diff = sorted(set(train) ^ set(val))
            raise self._error(self.data_dir, problem=f"has different class folders in train/ and val/ "
                                                     f"(e.g. {', '.join(diff[:5])})")
        self.classes = train

    def _folder(self, split: str, transform) -> datasets.ImageFolder:
        path = os.path.join(self.data_dir, split)
        try:
            return datasets.ImageFolder(path, transform=transform)
        except FileNotFoundError as err:  # e.g. a class folder without any image file
            raise self._error(path, problem=f"could not be read by ImageFolder ({err})") from err

    def setup(self, stage: str | None = None) -> None:
        self._check()
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._folder("train", self.train_transform())
        if self.val_set is None:
            self.val_set = self._folder("val", self.eval_transform())
        self.test_set = self.val_set
