"""Tiny-data entries of the Affine VAE recipes for the smoke harness (tests/recipes/test_recipes.py).

The harness's extra arguments also shrink the pose search (restarts, steps) and, for the 3D data, the grids
(16^3 padded to 24^3), so a smoke step of every AVAE recipe stays within its time cap.
"""

from __future__ import annotations

import os

import numpy as np

from tests import fakedata

_SEARCH = ["--model.init_args.restarts=2", "--model.init_args.keep=1", "--model.init_args.steps=1",
           "--model.init_args.eval_restarts=2", "--model.init_args.eval_steps=1"]


def write_modelnet10(root: str | os.PathLike, classes=("chair", "sofa"), per_split: int = 2, grid: int = 32) -> str:
    """``root/<class>/{train,test}/`` with one ``.npy`` and the rest ``.binvox`` occupancy grids (boxes of random
    size, cube ``grid``^3). Returns ``root``."""
    from datamodules.modelnet import write_binvox

    root = os.fspath(root)
    rng = np.random.default_rng(10)
    for cls in classes:
        for split in ("train", "test"):
            folder = os.path.join(root, cls, split)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_split):
                v = np.zeros((grid, grid, grid), dtype=bool)
                lo = rng.integers(1, grid // 3, size=3)
                hi = lo + rng.integers(2, grid // 2, size=3)
                v[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
                if i == 0:
                    np.save(os.path.join(folder, f"{cls}_{i:04d}.npy"), v.astype(np.uint8))
                else:
                    write_binvox(os.path.join(folder, f"{cls}_{i:04d}.binvox"), v)
    return root


SMOKE_DATA = {
    "RotatedGlyphsDataModule": (None, ["--data.init_args.train_size=8", "--data.init_args.test_size=4", *_SEARCH]),
    "PaddedMNISTDataModule": (fakedata.write_mnist, _SEARCH),
    "VoxelShapesDataModule": (None, ["--data.init_args.train_size=4", "--data.init_args.test_size=2",
                                     "--data.init_args.grid_size=16", "--data.init_args.pad_to=24", *_SEARCH]),
    "ModelNet10DataModule": (lambda root: write_modelnet10(root, grid=16),
                             ["--data.init_args.grid_size=16", "--data.init_args.pad_to=24", *_SEARCH]),
}
