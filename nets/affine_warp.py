"""Affine resamplers A_alpha for the Affine VAE (Bidart and Wong 2019; docs/affine_vae.md#method).

A_alpha is an STN-style resampler: a sampling grid (``affine_grid`` convention: output coordinates -> input
coordinates, normalised to [-1, 1], ``align_corners=False``) and bilinear/trilinear ``grid_sample`` with zero
padding. ``warp(x, theta)`` returns ``y(p) = x(M p + b)`` for ``theta = [M | b]``; the inverse resampler uses
``[M^-1 | -M^-1 b]`` (the transpose for rotations), so ``warp(warp(x, theta), inverse_theta(theta))`` is ``x`` up
to interpolation blur and what leaves the field of view.

Pose parameters alpha per mode (:data:`MODES`):

* ``rotation``  -- 2D, one angle (radians, counter-clockwise as displayed, y axis pointing down);
* ``affine``    -- 2D, the 4 linear parameters ``[a, b, c, d]`` of ``M = [[a, b], [c, d]]``, no translation (the
  paper's general affine search); alpha = (1, 0, 0, 1) is the identity;
* ``euler``     -- 3D, Euler angles ``(a, b, c)`` with ``R = R_x(a) R_y(b) R_z(c)`` (the author's convention);
* ``cube24``    -- 3D, an index into the 24 axis-aligned rotations of the cube (:func:`cube_rotations`), searched
  by brute force, not by gradient.

Euler restarts are drawn uniformly on SO(3) (uniform random quaternions, Shoemake 1992, converted to Euler angles),
not from U(0, 2 pi)^3, which is not uniform (docs/affine_vae.md#differences-from-the-released-code).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

MODES = ("rotation", "affine", "euler", "cube24")
SPATIAL_DIMS = {"rotation": 2, "affine": 2, "euler": 3, "cube24": 3}
NUM_PARAMS = {"rotation": 1, "affine": 4, "euler": 3, "cube24": 1}


class AffineModeError(ValueError):
    """Unknown affine mode, or a mode that does not fit the data's number of spatial dimensions."""

    user_facing = True


def check_mode(mode: str, spatial_dims: int | None = None) -> str:
    if mode not in MODES:
        raise AffineModeError(
            f"Unknown affine mode {mode!r}: use one of {', '.join(MODES)} ('rotation'/'affine' for 2D images, "
            f"'euler'/'cube24' for 3D voxel grids), or 'none' for a plain VAE where the caller allows it"
        )
    if spatial_dims is not None and SPATIAL_DIMS[mode] != spatial_dims:
        raise AffineModeError(
            f"Affine mode {mode!r} warps {SPATIAL_DIMS[mode]}D inputs but the data has {spatial_dims} spatial "
            f"dimensions; use {'rotation or affine' if spatial_dims == 2 else 'euler or cube24'} for this data"
        )
    return mode


# ----------------------------------------------------------------------------------------------------------------
# matrices
# ----------------------------------------------------------------------------------------------------------------
def rotation_2d(angle: torch.Tensor) -> torch.Tensor:
    """``(N,) -> (N, 2, 3)``: the ``affine_grid`` matrix that rotates the image content CCW (as displayed) by
    ``angle``. With y pointing down, content rotated CCW by t samples the input at ``[[c, -s], [s, c]] p``."""
    c, s = torch.cos(angle), torch.sin(angle)
    z = torch.zeros_like(angle)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], -2)


def affine_2d(params: torch.Tensor) -> torch.Tensor:
    """``(N, 4) -> (N, 2, 3)``: ``[[a, b, 0], [c, d, 0]]``."""
    z = torch.zeros_like(params[:, :1])
    return torch.cat([params[:, 0:2], z, params[:, 2:4], z], -1).reshape(-1, 2, 3)


def _rx(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], -2)


def _ry(b: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(b), torch.sin(b), torch.ones_like(b), torch.zeros_like(b)
    return torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)


def _rz(g: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(g), torch.sin(g), torch.ones_like(g), torch.zeros_like(g)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``(N, 3) -> (N, 3, 3)``: ``R = R_x(a) R_y(b) R_z(c)``."""
    return _rx(angles[:, 0]) @ _ry(angles[:, 1]) @ _rz(angles[:, 2])


def matrix_to_euler(r: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix` (``b`` in [-pi/2, pi/2]): ``b = asin(R02)``, ``a = atan2(-R12, R22)``,
    ``c = atan2(-R01, R00)``."""
    b = torch.asin(r[:, 0, 2].clamp(-1.0, 1.0))
    a = torch.atan2(-r[:, 1, 2], r[:, 2, 2])
    c = torch.atan2(-r[:, 0, 1], r[:, 0, 0])
    return torch.stack([a, b, c], -1)


def random_rotations(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """``(n, 3, 3)`` rotation matrices uniform on SO(3) (uniform unit quaternions, Shoemake's method)."""
    u = torch.rand(n, 3, generator=generator, dtype=dtype)
    q = torch.stack([
        torch.sqrt(1 - u[:, 0]) * torch.sin(2 * math.pi * u[:, 1]),
        torch.sqrt(1 - u[:, 0]) * torch.cos(2 * math.pi * u[:, 1]),
        torch.sqrt(u[:, 0]) * torch.sin(2 * math.pi * u[:, 2]),
        torch.sqrt(u[:, 0]) * torch.cos(2 * math.pi * u[:, 2]),
    ], -1)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def cube_rotations(dtype=torch.float32) -> torch.Tensor:
    """The 24 rotations of the cube: signed permutation matrices with determinant +1, ``(24, 3, 3)``, identity
    first."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            for i, j in enumerate(perm):
                m[i, j] = signs[i]
            if torch.linalg.det(m) > 0:
                mats.append(m)
    out = torch.stack(mats).to(dtype)
    return out


def theta_from_params(params: torch.Tensor, mode: str) -> torch.Tensor:
    """``affine_grid`` matrices ``(N, d, d+1)`` for pose parameters ``params`` of ``mode``."""
    check_mode(mode)
    if mode == "rotation":
        return rotation_2d(params.reshape(-1))
    if mode == "affine":
        return affine_2d(params)
    if mode == "euler":
        r = euler_to_matrix(params)
    else:
        r = cube_rotations(params.dtype).to(params.device)[params.reshape(-1).long()]
    return torch.cat([r, torch.zeros_like(r[:, :, :1])], -1)


def identity_params(n: int, mode: str, device=None, dtype=torch.float32) -> torch.Tensor:
    """Parameters of the identity warp, ``(n, NUM_PARAMS[mode])``."""
    check_mode(mode)
    if mode == "affine":
        return torch.tensor([1.0, 0.0, 0.0, 1.0], device=device, dtype=dtype).repeat(n, 1)
    return torch.zeros(n, NUM_PARAMS[mode], device=device, dtype=dtype)


def inverse_theta(theta: torch.Tensor, rigid: bool = False) -> torch.Tensor:
    """``[M | b] -> [M^-1 | -M^-1 b]``; ``rigid`` uses ``M^T`` (exact for rotations, and cheaper)."""
    m, b = theta[..., :-1], theta[..., -1:]
    inv = m.transpose(-1, -2) if rigid else torch.linalg.inv(m)
    return torch.cat([inv, -(inv @ b)], -1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` (N, C, H, W) or (N, C, D, H, W) on the grid of ``theta`` (N, d, d+1); zero padding."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate_2d(x: torch.Tensor, angle: torch.Tensor | float) -> torch.Tensor:
    """Rotate images CCW (as displayed) by ``angle`` radians (a scalar or one per image)."""
    angle = torch.as_tensor(angle, dtype=x.dtype, device=x.device).expand(x.shape[0])
    return warp(x, rotation_2d(angle))
