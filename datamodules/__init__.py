"""LightningDataModules for the recipes: each exposes ``num_classes`` and ``input_shape`` right after ``__init__``."""

from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from datamodules.digits import DigitsDataModule
from datamodules.errors import DatasetNotFoundError, dataset_error_message, dataset_not_found
from datamodules.glyphs import GlyphsDataModule
from datamodules.imagenet import ImageNetDataModule
from datamodules.mnist import MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "GlyphsDataModule",
    "ImageNetDataModule",
    "MNISTDataModule",
    "dataset_error_message",
    "dataset_not_found",
]
