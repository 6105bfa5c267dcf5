"""Procedural voxel shapes (datamodules/voxel_shapes.py): shapes, padding, exact cube poses matching A_alpha."""

from __future__ import annotations

import pytest
import torch

from datamodules.voxel_shapes import VoxelShapesDataModule, generate_shapes, pad_voxels
from nets.affine_warp import cube_rotations, warp


def test_samples_are_padded_occupancy_grids():
    dm = VoxelShapesDataModule(batch_size=4, grid_size=16, train_size=12, test_size=6)
    dm.setup()
    assert dm.input_shape == (1, 24, 24, 24)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 24, 24, 24) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert float(x[..., :4].sum()) == 0 and float(x[..., -4:].sum()) == 0  # zero padding (16 -> 24)
    occ = x.mean((1, 2, 3, 4))
    assert (occ > 0).all()


def test_cube_poses_are_exact_and_undone_by_the_avae_warp():
    canon, y0, _ = generate_shapes(12, 12, 6, "none", seed=3)
    posed, y1, rots = generate_shapes(12, 12, 6, "cube24", seed=3)
    assert torch.equal(y0, y1)
    assert torch.equal(canon.sum((1, 2, 3)), posed.sum((1, 2, 3)))  # a permutation of the voxels
    # A_alpha with alpha = the pose's rotation maps the posed grid back to the canonical one, voxel for voxel
    cube = cube_rotations()
    idx = torch.tensor([next(k for k in range(24) if torch.equal(cube[k], r)) for r in rots])
    theta = torch.cat([cube[idx], torch.zeros(12, 3, 1)], -1)
    back = warp(posed[:, None].float(), theta)[:, 0]
    assert torch.allclose(back, canon.float(), atol=1e-5)
    assert (idx != 0).any()


def test_so3_poses_and_determinism():
    a, _, r = generate_shapes(6, 12, 6, "so3", seed=1)
    b, _, _ = generate_shapes(6, 12, 6, "so3", seed=1)
    assert torch.equal(a, b)
    assert not torch.allclose(r, torch.eye(3).expand(6, 3, 3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rotation must be one of"):
        VoxelShapesDataModule(rotation="random")
    with pytest.raises(ValueError, match="pad_to"):
        pad_voxels(torch.zeros(1, 8, 8, 8), 4)
