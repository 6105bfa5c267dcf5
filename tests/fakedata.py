"""Tiny datasets written in the real on-disk formats, for tests that must not download anything.

Each ``write_*`` returns the ``data_dir`` to hand to the matching datamodule. Contents are deterministic
(seeded numpy) and every class appears when the split is large enough (labels are ``i % num_classes``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR order: 1024 red, 1024 green, 1024 blue values, row-major 32x32."""
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def _dump(path: str, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: str | os.PathLike, n_train: int = 20, n_test: int = 10) -> str:
    """Write ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta); returns ``root``."""
    root = os.fspath(root)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(10)
    labels = [i % 10 for i in range(n_train)]
    data = _cifar_images(rng, n_train)
    for b, idx in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(os.path.join(folder, f"data_batch_{b}"), {
            "batch_label": f"training batch {b} of 5",
            "labels": [labels[i] for i in idx],
            "data": data[idx],
            "filenames": [f"img_{i:05d}.png" for i in idx],
        })
    _dump(os.path.join(folder, "test_batch"), {
        "batch_label": "testing batch 1 of 1",
        "labels": [i % 10 for i in range(n_test)],
        "data": _cifar_images(rng, n_test),
        "filenames": [f"test_{i:05d}.png" for i in range(n_test)],
    })
    _dump(os.path.join(folder, "batches.meta"),
          {"num_cases_per_batch": max(1, n_train // 5), "label_names": CIFAR10_CLASSES, "num_vis": 3072})
    return root


def write_cifar100(root: str | os.PathLike, n_train: int = 20, n_test: int = 10) -> str:
    """Write ``root/cifar-100-python`` (train, test, meta with fine/coarse labels); returns ``root``."""
    root = os.fspath(root)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(100)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [(7 * i) % 100 for i in range(n)]
        _dump(os.path.join(folder, name), {
            "filenames": [f"{name}_{i:05d}.png" for i in range(n)],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": _cifar_images(rng, n),
        })
    _dump(os.path.join(folder, "meta"), {
        "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
    })
    return root


def write_imagenet(root: str | os.PathLike, num_classes: int = 3, per_class: int = 2,
                   size: tuple[int, int] = (64, 80)) -> str:
    """Write JPEGs to ``root/{train,val}/n<wnid>/*.JPEG``; ``size`` is (height, width). Returns ``root``."""
    from PIL import Image

    root = os.fspath(root)
    rng = np.random.default_rng(1000)
    h, w = size
    for split in ("train", "val"):
        for c in range(num_classes):
            folder = os.path.join(root, split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{split}_{c}_{i}.JPEG"), format="JPEG")
    return root


def _idx(path: str, array: np.ndarray, compress: bool) -> None:
    """IDX file: magic 0x0000 | type 0x08 (ubyte) | ndim, then big-endian int32 dims, then the raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def write_mnist(root: str | os.PathLike, n_train: int = 20, n_test: int = 10, compress: bool = False) -> str:
    """Write ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (``.gz`` if ``compress``).

    Magic numbers are the real ones (2051 images, 2049 labels). Returns ``root``.
    """
    root = os.fspath(root)
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    rng = np.random.default_rng(784)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"),
             rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), compress)
        _idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), np.arange(n, dtype=np.uint8) % 10, compress)
    return root
