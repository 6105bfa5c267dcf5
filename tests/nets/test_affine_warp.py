"""A_alpha resamplers (nets/affine_warp.py): directions, inverses, Euler angles, the 24 cube rotations, uniform
SO(3) restarts, and mode errors."""

from __future__ import annotations

import math

import pytest
import torch

from nets.affine_warp import (
    AffineModeError, check_mode, cube_rotations, euler_to_matrix, identity_params, inverse_theta, matrix_to_euler,
    random_rotations, rotate_2d, rotation_2d, theta_from_params, warp,
)


def _blob(size=32, cx=0.4, cy=0.0, s=0.12):
    c = (torch.arange(size) * 2 + 1) / size - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))[None, None]


def _centre(img):
    c = (torch.arange(img.shape[-1]) * 2 + 1) / img.shape[-1] - 1
    w = img[0, 0] / img.sum()
    return float((w.sum(0) * c).sum()), float((w.sum(1) * c).sum())  # (x, y), y pointing down


def test_rotation_is_counter_clockwise_as_displayed():
    x, y = _centre(rotate_2d(_blob(cx=0.4, cy=0.0), math.pi / 2))
    assert abs(x) < 0.02 and y == pytest.approx(-0.4, abs=0.02)  # right of centre -> above centre


def test_inverse_warp_undoes_the_warp():
    img = _blob(cx=0.2, cy=-0.1, s=0.15)
    for theta in (rotation_2d(torch.tensor([0.7])), theta_from_params(torch.tensor([[1.2, 0.3, -0.2, 0.9]]), "affine")):
        rigid = torch.allclose(theta[0, :, :2] @ theta[0, :, :2].T, torch.eye(2), atol=1e-6)
        back = warp(warp(img, theta), inverse_theta(theta, rigid=rigid))
        assert (back - img).abs().max() < 0.1  # bilinear blur only
        composed = inverse_theta(theta)[0, :, :2] @ theta[0, :, :2]
        assert torch.allclose(composed, torch.eye(2), atol=1e-5)


def test_inverse_includes_translation():
    theta = torch.tensor([[[2.0, 0.0, 0.5], [0.0, 1.0, -0.25]]])
    inv = inverse_theta(theta)
    assert torch.allclose(inv, torch.tensor([[[0.5, 0.0, -0.25], [0.0, 1.0, 0.25]]]))


def test_euler_convention_and_round_trip():
    a = torch.tensor([[0.3, 0.0, 0.0]])
    assert torch.allclose(euler_to_matrix(a)[0, 1:, 1:], torch.tensor([[math.cos(0.3), -math.sin(0.3)],
                                                                        [math.sin(0.3), math.cos(0.3)]]))
    angles = torch.tensor([[0.4, -0.7, 2.1], [-2.5, 1.2, 0.3]])
    r = euler_to_matrix(angles)
    assert torch.allclose(r, euler_to_matrix(angles[:, 0:1].new_zeros(2, 3) + torch.stack(
        [angles[:, 0], torch.zeros(2), torch.zeros(2)], -1)) @ euler_to_matrix(
        torch.stack([torch.zeros(2), angles[:, 1], torch.zeros(2)], -1)) @ euler_to_matrix(
        torch.stack([torch.zeros(2), torch.zeros(2), angles[:, 2]], -1)), atol=1e-6)  # R = Rx Ry Rz
    assert torch.allclose(euler_to_matrix(matrix_to_euler(r)), r, atol=1e-5)


def test_cube_rotations_form_the_rotation_group_of_the_cube():
    c = cube_rotations()
    assert c.shape == (24, 3, 3) and torch.equal(c[0], torch.eye(3))
    assert torch.allclose(torch.linalg.det(c), torch.ones(24))
    keys = {tuple(m.flatten().tolist()) for m in c}
    assert len(keys) == 24
    assert all(tuple((a @ b).flatten().tolist()) in keys for a in c for b in c)  # closed under composition


def test_cube_rotation_warp_is_an_exact_voxel_permutation():
    v = torch.rand(1, 1, 6, 6, 6)
    for k in range(24):
        out = warp(v, theta_from_params(torch.tensor([[float(k)]]), "cube24"))
        assert torch.allclose(out.flatten().sort().values, v.flatten().sort().values, atol=1e-6)


def test_random_rotations_are_uniform_rotations():
    n = 20000
    r = random_rotations(n, torch.Generator().manual_seed(0))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(n, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(n), atol=1e-5)
    assert r.mean(0).abs().max() < 0.03  # E[R] = 0 under the Haar measure
    # Haar measure on SO(3): E[tr R] = 0 and E[(tr R)^2] = 1 (the trace is 1 + 2 cos(angle))
    tr = r.diagonal(dim1=1, dim2=2).sum(-1)
    assert abs(float(tr.mean())) < 0.03 and float((tr ** 2).mean()) == pytest.approx(1.0, abs=0.04)
    # Euler angles from U(0, 2 pi)^3 are not uniform: E[(tr R)^2] = 8/9 instead of 1
    biased = euler_to_matrix(torch.rand(n, 3, generator=torch.Generator().manual_seed(0)) * 2 * math.pi)
    assert float((biased.diagonal(dim1=1, dim2=2).sum(-1) ** 2).mean()) == pytest.approx(8 / 9, abs=0.03)


def test_identity_params_give_the_identity_warp():
    img = _blob()
    for mode in ("rotation", "affine"):
        assert torch.allclose(warp(img, theta_from_params(identity_params(1, mode), mode)), img, atol=1e-5)
    vox = torch.rand(1, 1, 4, 4, 4)
    for mode in ("euler", "cube24"):
        assert torch.allclose(warp(vox, theta_from_params(identity_params(1, mode), mode)), vox, atol=1e-5)


def test_unknown_or_mismatched_mode_is_a_clear_error():
    with pytest.raises(AffineModeError, match="Unknown affine mode 'shear'"):
        check_mode("shear")
    with pytest.raises(AffineModeError, match="3 spatial dimensions"):
        check_mode("rotation", 3)
    assert AffineModeError.user_facing
