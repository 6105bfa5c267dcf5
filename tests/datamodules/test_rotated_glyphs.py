"""Rotated glyphs (datamodules/rotated_glyphs.py): shapes, pixel range, rotation ranges, padding, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.rotated_glyphs import RotatedGlyphsDataModule


def _dm(**kw):
    args = dict(batch_size=8, train_size=40, test_size=20)
    args.update(kw)
    dm = RotatedGlyphsDataModule(**args)
    dm.setup()
    return dm


def test_samples_are_images_labels_angles_in_range():
    dm = _dm(rotation=90.0, test_rotation=0.0)
    x, y, a = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 32, 32) and dm.input_shape == (1, 32, 32)
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x[:, :, 0].abs().max()) == 0  # background 0
    assert dm.train_angles.abs().max() <= math.radians(90) + 1e-6 and dm.train_angles.std() > 0.3
    assert dm.test_angles.abs().max() == 0  # test at one orientation
    assert dm.val_set is dm.test_set


def test_rotation_really_rotates_the_glyph():
    """Same seed and parameters, rotation 0 vs 180 range: identical labels, different pixels, similar ink."""
    a, b = _dm(rotation=0.0), _dm(rotation=180.0)
    assert torch.equal(a.train_set.tensors[1], b.train_set.tensors[1])
    assert not torch.allclose(a.train_images, b.train_images)
    ink_a, ink_b = a.train_images.sum((1, 2, 3)), b.train_images.sum((1, 2, 3))
    assert torch.allclose(ink_a, ink_b, rtol=0.25)


def test_padding_and_determinism():
    dm = _dm(image_size=40)
    assert dm.train_images.shape[1:] == (1, 40, 40) and dm.input_shape == (1, 40, 40)
    assert float(dm.train_images[..., :4, :].abs().max()) == 0  # the 4-pixel zero border
    assert torch.equal(_dm(image_size=40).train_images, dm.train_images)
    assert not torch.equal(_dm(image_size=40, data_seed=5).train_images, dm.train_images)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rotation must be in"):
        RotatedGlyphsDataModule(rotation=270)
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        RotatedGlyphsDataModule(image_size=28)
