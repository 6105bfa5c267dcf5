"""datamodules/cutout.py: exactly one clipped length x length square is zeroed on every channel."""

from __future__ import annotations

import pytest
import torch

from datamodules.cutout import Cutout


@pytest.mark.parametrize("seed", range(20))
def test_zeroes_exactly_the_clipped_square_around_the_drawn_centre(seed):
    img = torch.rand(3, 32, 32) + 0.5  # no zero pixel before
    cy, cx = (int(v) for v in torch.randint(32, (2,), generator=torch.Generator().manual_seed(seed)))
    g = torch.Generator().manual_seed(seed)  # the transform draws the same centre (row, then column)
    out = Cutout(16, generator=g)(img)
    expected = torch.ones(32, 32, dtype=torch.bool)
    expected[max(cy - 8, 0):min(cy + 8, 32), max(cx - 8, 0):min(cx + 8, 32)] = False
    for c in range(3):
        assert torch.equal(out[c] != 0, expected)
    assert torch.equal(out[:, expected], img[:, expected])  # the rest is untouched
    assert (img > 0).all()  # the input is not modified in place


def test_a_centre_far_from_the_border_zeroes_a_full_square():
    sizes = {int((Cutout(16, torch.Generator().manual_seed(s))(torch.ones(1, 64, 64)) == 0).sum())
             for s in range(50)}
    assert 256 in sizes and max(sizes) == 256


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_length_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="Cutout length must be a positive integer"):
        Cutout(bad)
