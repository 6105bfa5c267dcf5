"""Tiny-data writers for the recurrent-net recipes (iRNN, TARNN, FPTT, BPTT baselines): see test_recipes.py."""

from __future__ import annotations

import os

import numpy as np

from tests import fakedata


def write_ptb(root: str | os.PathLike, tokens: int = 700) -> str:
    """Word-level ``ptb.{train,valid,test}.txt`` and char-level ``ptb.char.*.txt`` in Mikolov's layout: lines of
    space-separated words (``<unk>`` included) / space-separated characters with ``_`` between words."""
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(6)
    words = ["the", "a", "market", "<unk>", "n", "stock", "of", "to", "in", "said", "company", "year"]
    for split in ("train", "valid", "test"):
        ids = rng.integers(0, len(words), size=tokens)
        lines = [" ".join(words[i] for i in ids[k:k + 12]) for k in range(0, tokens, 12)]
        with open(os.path.join(root, f"ptb.{split}.txt"), "w") as f:
            f.write("".join(f" {line} \n" for line in lines))
        with open(os.path.join(root, f"ptb.char.{split}.txt"), "w") as f:
            f.write("".join(" ".join("_".join(line.split())) + "\n" for line in lines))
    return root


SMOKE_DATA = {
    "AddingTaskDataModule": (None, []),
    "CopyTaskDataModule": (None, []),
    "SequentialCIFAR10DataModule": (fakedata.write_cifar10, []),
    "NoisyMNISTDataModule": (fakedata.write_mnist, []),
    "PTBDataModule": (write_ptb, []),
}


def _edgeml_writer(steps: int, features: int, classes: int):
    def write(root: str | os.PathLike) -> str:
        """``train.npy`` / ``test.npy`` in EdgeML's [label, T*F features] layout."""
        root = os.fspath(root)
        os.makedirs(root, exist_ok=True)
        rng = np.random.default_rng(classes)
        for name, n in (("train", 2 * classes), ("test", classes)):
            labels = np.arange(n) % classes
            np.save(os.path.join(root, f"{name}.npy"),
                    np.column_stack([labels, rng.normal(size=(n, steps * features))]).astype(np.float32))
        return root

    return write


SMOKE_DATA.update({
    "HAR2DataModule": (_edgeml_writer(128, 9, 2), []),
    "DSA19DataModule": (_edgeml_writer(125, 45, 19), []),
    "Google12DataModule": (_edgeml_writer(99, 32, 12), []),
    "Google30DataModule": (_edgeml_writer(99, 32, 30), []),
})
