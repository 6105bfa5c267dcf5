"""ModelNet10 as occupancy grids (Wu et al., 3D ShapeNets, CVPR 2015), the data of the 3D Affine VAE (Bidart's
thesis; docs/affine_vae.md#architectures-and-settings: 32^3 voxels padded x1.5 to 48^3).

Layout on disk (the ModelNet10 folder tree with each mesh voxelised)::

    <data_dir>/<class>/train/<name>.npy | <name>.binvox
    <data_dir>/<class>/test/<name>.npy  | <name>.binvox

with ``<class>`` among bathtub, bed, chair, desk, dresser, monitor, night_stand, sofa, table, toilet (``classes``
selects a subset, e.g. ``[chair, sofa]`` as in the author's runs). ``.npy``: a cubic boolean/uint8/float array
(32^3 by default, non-zero = occupied) in binvox_rw's ``read_as_3d_array`` axis order [x, y, z]. ``.binvox``: the
binvox format (header ``#binvox 1``, ``dim``, ``translate``, ``scale``, ``data``, then run-length-encoded
(value, count) byte pairs with y fastest, then z, then x), read here without extra packages. Voxelise the
ModelNet10 ``.off`` meshes with ``binvox -d 32 -cb -e <file>.off`` (or export Kaolin's voxel grids with
``numpy.save``). Every grid must have side ``grid_size``; it is zero-padded (centred) to ``pad_to``.

Pose: ``rotation="none"`` keeps the dataset's aligned pose; ``"cube24"`` applies one of the 24 axis-aligned cube
rotations per sample (exact: a permutation of voxels); ``"so3"`` a uniform random rotation (trilinear resampling,
then thresholded at 0.5). Poses are drawn once per sample from ``seed``. Each sample is ``(voxels [1, S, S, S],
label)``; validation uses the test split. Voxels are held as uint8 in memory (48^3 bytes = 110 KB per shape).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from datamodules.base import BaseDataModule
from datamodules.errors import DatasetNotFoundError, dataset_not_found
from datamodules.voxel_shapes import ROTATIONS, VoxelDataset, pad_voxels
from nets.affine_warp import cube_rotations, random_rotations, warp

MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
EXTENSIONS = (".npy", ".binvox")


def read_binvox(path: str) -> np.ndarray:
    """A .binvox file as a bool array indexed [x, y, z] (binvox_rw's ``read_as_3d_array`` order)."""
    with open(path, "rb") as f:
        if not f.readline().strip().startswith(b"#binvox"):
            raise ValueError("not a binvox file (first line is not '#binvox 1')")
        dims = None
        while True:
            line = f.readline()
            if not line:
                raise ValueError("header has no 'data' line")
            line = line.strip()
            if line.startswith(b"dim"):
                dims = [int(v) for v in line.split()[1:4]]
            elif line == b"data":
                break
        if dims is None or len(dims) != 3:
            raise ValueError("header has no 'dim d d d' line")
        raw = np.frombuffer(f.read(), dtype=np.uint8)
    if raw.size % 2:
        raise ValueError("run-length data has an odd number of bytes")
    values, counts = raw[::2], raw[1::2].astype(np.int64)
    if counts.sum() != int(np.prod(dims)):
        raise ValueError(f"run-length data holds {counts.sum()} voxels, the header says {dims}")
    flat = np.repeat(values.astype(bool), counts)
    return flat.reshape(dims).transpose(0, 2, 1)  # stored [x, z, y] (y fastest) -> [x, y, z]


def write_binvox(path: str, voxels: np.ndarray) -> None:
    """Write a bool array indexed [x, y, z] as .binvox (run-length encoded, translate 0, scale 1)."""
    v = np.asarray(voxels).astype(bool)
    stored = v.transpose(0, 2, 1)  # [x, y, z] -> the file's [x, z, y] order (y fastest)
    flat = stored.reshape(-1).astype(np.uint8)
    out = bytearray()
    i = 0
    while i < flat.size:
        j = i
        while j < flat.size and flat[j] == flat[i] and j - i < 255:
            j += 1
        out += bytes((int(flat[i]), j - i))
        i = j
    with open(path, "wb") as f:
        f.write(b"#binvox 1\n")
        f.write(("dim %d %d %d\n" % stored.shape).encode())
        f.write(b"translate 0 0 0\nscale 1\ndata\n")
        f.write(bytes(out))


class ModelNet10DataModule(BaseDataModule):
    """ModelNet10 occupancy grids (see the module docstring for the layout), padded to ``pad_to``^3."""

    def __init__(
        self,
        data_dir: str = "data/modelnet10",
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        classes: list[str] | None = None,
        grid_size: int = 32,
        pad_to: int = 48,
        rotation: str = "none",
        test_rotation: str | None = None,
        max_per_class: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        self.classes = list(MODELNET10_CLASSES if classes is None else classes)
        unknown = [c for c in self.classes if c not in MODELNET10_CLASSES]
        if unknown or not self.classes:
            raise ValueError(f"classes must be a non-empty subset of {MODELNET10_CLASSES}, got unknown {unknown}")
        for name, value in (("rotation", rotation), ("test_rotation", test_rotation)):
            if value is not None and value not in ROTATIONS:
                raise ValueError(f"{name} must be one of {ROTATIONS}, got {value!r}")
        if pad_to < grid_size:
            raise ValueError(f"pad_to ({pad_to}) must be >= grid_size ({grid_size})")
        self.data_dir = os.fspath(data_dir)
        self.num_classes = len(self.classes)
        self.grid_size, self.pad_to = int(grid_size), int(pad_to)
        self.input_shape = (1, self.pad_to, self.pad_to, self.pad_to)
        self.rotation = rotation
        self.test_rotation = rotation if test_rotation is None else test_rotation
        self.max_per_class = max_per_class

    def _error(self, missing=None, problem=None) -> DatasetNotFoundError:
        return dataset_not_found(
            "ModelNet10 voxels", self.data_dir,
            f"<data_dir>/<class>/{{train,test}}/*.npy or *.binvox, cubic {self.grid_size}^3 occupancy grids, for "
            f"the classes {', '.join(self.classes)}",
            "download ModelNet10 from https://3dshapenets.cs.princeton.edu/ and voxelise each .off mesh at 32^3 "
            "(e.g. `binvox -d 32 -cb -e file.off`, which writes file.binvox next to it), keeping the "
            "<class>/{train,test}/ folders",
            missing=missing, problem=problem,
        )

    def _files(self, split: str) -> list[tuple[str, int]]:
        if not os.path.isdir(self.data_dir):
            raise self._error(missing=[self.data_dir])
        out, missing = [], []
        for label, cls in enumerate(self.classes):
            folder = os.path.join(self.data_dir, cls, split)
            names = sorted(n for n in os.listdir(folder) if n.endswith(EXTENSIONS)) if os.path.isdir(folder) else []
            if not names:
                missing.append(f"{cls}/{split}/*.npy|*.binvox")
                continue
            if self.max_per_class is not None:
                names = names[: self.max_per_class]
            out += [(os.path.join(folder, n), label) for n in names]
        if missing:
            raise self._error(missing=missing)
        return out

    def _read(self, path: str) -> np.ndarray:
        try:
            v = np.load(path, allow_pickle=False) if path.endswith(".npy") else read_binvox(path)
        except (OSError, ValueError) as err:
            raise self._error(problem=f"has an unreadable file {path} ({err})") from err
        g = self.grid_size
        if v.shape != (g, g, g):
            raise self._error(problem=f"has a grid of shape {v.shape} in {path}, expected ({g}, {g}, {g}) "
                                      f"(set data.init_args.grid_size to the grids' side)")
        return np.asarray(v) > 0.5 if v.dtype.kind == "f" else np.asarray(v) != 0

    def _pose(self, v: torch.Tensor, rotation: str, split: str) -> torch.Tensor:
        if rotation == "none":
            return v
        g = torch.Generator().manual_seed(self.seed * 2 + (split == "test"))
        n = len(v)
        rots = cube_rotations()[torch.randint(24, (n,), generator=g)] if rotation == "cube24" else random_rotations(n, g)
        theta = torch.cat([rots, torch.zeros(n, 3, 1)], -1)
        out = torch.empty_like(v)
        for s in range(0, n, 64):
            posed = warp(v[s : s + 64, None].float(), theta[s : s + 64])[:, 0]
            out[s : s + 64] = (posed > 0.5).to(torch.uint8)
        return out

    def _load(self, split: str) -> VoxelDataset:
        files = self._files(split)
        v = torch.from_numpy(np.stack([self._read(p) for p, _ in files]).astype(np.uint8))
        y = torch.tensor([label for _, label in files], dtype=torch.long)
        v = pad_voxels(v, self.pad_to)
        return VoxelDataset(self._pose(v, self.rotation if split == "train" else self.test_rotation, split), y)

    def prepare_data(self) -> None:
        self._files("train")
        self._files("test")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._load("train")
        self.test_set = self.val_set = self._load("test")
