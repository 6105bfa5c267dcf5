"""Procedural 3D voxel shapes: the embedded stand-in for ModelNet10 in the 3D Affine VAE studies (docs/affine_vae.md).

Six classes of solids given by implicit functions on a ``grid_size``^3 grid over [-1, 1]^3: box, ellipsoid, cylinder,
cone, torus and an L-shaped pair of boxes, with random proportions (and an off-centre part, so most shapes have no
rotational symmetry). The pose is applied to the implicit function before voxelisation (occupancy of R^T p), so the
voxels are crisp, with no resampling blur: ``rotation="none"`` (canonical pose), ``"cube24"`` (one of the 24
axis-aligned rotations of the cube) or ``"so3"`` (uniform on SO(3)). The grid is zero-padded to ``pad_to``^3 (default
1.5 x grid_size, as the authors pad ModelNet's 32^3 to 48^3). Occupancies are stored as uint8 and returned as float
{0, 1}; each sample is ``(voxels [1, S, S, S], label)``. Deterministic by ``data_seed`` (default ``seed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.base import BaseDataModule
from datamodules.glyphs import derive_seed
from nets.affine_warp import cube_rotations, random_rotations

SHAPES = ("box", "ellipsoid", "cylinder", "cone", "torus", "lshape")
ROTATIONS = ("none", "cube24", "so3")
_CHUNK = 64


class VoxelDataset(Dataset):
    """uint8 occupancy grids (N, S, S, S) and labels, served as float (1, S, S, S) tensors."""

    def __init__(self, voxels: torch.Tensor, labels: torch.Tensor) -> None:
        self.voxels, self.labels = voxels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.voxels[i][None].float(), self.labels[i]


def _inside(kind: int, p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Occupancy of shape ``kind`` at points p (m, P, 3) with size parameters a (m, 4) in [0, 1]."""
    x, y, z = p.unbind(-1)
    s = 0.35 + 0.5 * a[:, None, :]  # half sizes in [0.35, 0.85]
    if kind == 0:  # box
        return (x.abs() < s[..., 0]) & (y.abs() < s[..., 1] * 0.8) & (z.abs() < s[..., 2] * 0.6)
    if kind == 1:  # ellipsoid
        return (x / s[..., 0]) ** 2 + (y / (0.7 * s[..., 1])) ** 2 + (z / (0.5 * s[..., 2])) ** 2 < 1
    if kind == 2:  # cylinder along z, radius < half length
        r = 0.5 * s[..., 0]
        return (x ** 2 + y ** 2 < r ** 2) & (z.abs() < s[..., 2])
    if kind == 3:  # cone along z: radius shrinks from the base (z = -h) to the tip (z = +h)
        h, r = s[..., 2], 0.6 * s[..., 0]
        return (z.abs() < h) & (torch.sqrt(x ** 2 + y ** 2) < r * (h - z) / (2 * h))
    if kind == 4:  # torus in the xy plane, with a bump so it is not rotationally symmetric
        big, small = 0.45 + 0.2 * a[:, None, 0], 0.12 + 0.1 * a[:, None, 1]
        ring = (torch.sqrt(x ** 2 + y ** 2) - big) ** 2 + z ** 2 < small ** 2
        return ring | ((x - big) ** 2 + y ** 2 + (z - small) ** 2 < (1.5 * small) ** 2)
    # L shape: a long bar along x and an upright bar at its +x end
    t = 0.15 + 0.1 * a[:, None, 3]
    bar = (x.abs() < s[..., 0]) & (y.abs() < t) & (z.abs() < t)
    post = ((x - s[..., 0] + t).abs() < t) & (y.abs() < t) & (z > -t) & (z < s[..., 2])
    return bar | post


def generate_shapes(n: int, grid_size: int, num_classes: int, rotation: str, seed: int,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 voxels (n, G, G, G), labels (n,), rotation matrices (n, 3, 3)); same arguments -> same tensors."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    g = torch.Generator().manual_seed(int(seed))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    params = torch.rand(n, 4, generator=g)
    if rotation == "none":
        rots = torch.eye(3).repeat(n, 1, 1)
    elif rotation == "cube24":
        rots = cube_rotations()[torch.randint(24, (n,), generator=g)]
    else:
        rots = random_rotations(n, g)
    c = (torch.arange(grid_size, dtype=torch.float32) * 2 + 1) / grid_size - 1
    # grid point p = (x, y, z) with voxel index [z, y, x] (the affine_grid / grid_sample convention)
    zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
    pts = torch.stack([xx, yy, zz], -1).reshape(1, -1, 3)
    out = torch.empty(n, grid_size, grid_size, grid_size, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        p = pts @ rots[sl]  # (m, P, 3): rows are R^T p, the canonical coordinates of the posed point p
        occ = torch.zeros(p.shape[:2], dtype=torch.bool)
        for kind in range(num_classes):
            sel = (labels[sl] == kind).nonzero().squeeze(1)
            if sel.numel():
                occ[sel] = _inside(kind, p[sel], params[sl][sel])
        out[sl] = occ.reshape(-1, grid_size, grid_size, grid_size).to(torch.uint8)
    return out, labels, rots


def pad_voxels(v: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Zero-pad (N, G, G, G) grids to (N, pad_to, pad_to, pad_to), centred."""
    p = pad_to - v.shape[-1]
    if p < 0:
        raise ValueError(f"pad_to ({pad_to}) is smaller than the grid ({v.shape[-1]})")
    lo, hi = p // 2, p - p // 2
    return F.pad(v, (lo, hi, lo, hi, lo, hi)) if p else v


class VoxelShapesDataModule(BaseDataModule):
    """Procedural solids as (1, pad_to, pad_to, pad_to) occupancy grids; validation uses the test split."""

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        num_classes: int = 6,
        grid_size: int = 32,
        pad_to: int | None = None,
        rotation: str = "so3",
        test_rotation: str | None = None,
        train_size: int = 1000,
        test_size: int = 200,
        data_seed: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if not 1 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in [1, {len(SHAPES)}], got {num_classes}")
        for name, value in (("rotation", rotation), ("test_rotation", test_rotation)):
            if value is not None and value not in ROTATIONS:
                raise ValueError(f"{name} must be one of {ROTATIONS}, got {value!r}")
        if grid_size < 8:
            raise ValueError(f"grid_size must be >= 8, got {grid_size}")
        self.num_classes, self.grid_size = int(num_classes), int(grid_size)
        self.pad_to = int(pad_to) if pad_to is not None else (3 * self.grid_size) // 2
        if self.pad_to < self.grid_size:
            raise ValueError(f"pad_to ({self.pad_to}) must be >= grid_size ({self.grid_size})")
        self.input_shape = (1, self.pad_to, self.pad_to, self.pad_to)
        self.rotation = rotation
        self.test_rotation = rotation if test_rotation is None else test_rotation
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.data_seed = self.seed if data_seed is None else int(data_seed)

    def generate(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        n, rot = (self.train_size, self.rotation) if split == "train" else (self.test_size, self.test_rotation)
        v, y, _ = generate_shapes(n, self.grid_size, self.num_classes, rot, derive_seed(self.data_seed, f"vox-{split}"))
        return pad_voxels(v, self.pad_to), y

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = VoxelDataset(*self.generate("train"))
        self.test_set = self.val_set = VoxelDataset(*self.generate("test"))
