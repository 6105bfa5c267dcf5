"""GlyphsDataModule: procedural font-rendered characters."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules import GlyphsDataModule
from datamodules.glyphs import GLYPH_CHARS, _affine_theta, _warp, difficulty_defaults, glyph_templates

SMALL = dict(train_size=300, test_size=100, batch_size=50)


def _setup(**kw) -> GlyphsDataModule:
    dm = GlyphsDataModule(**{**SMALL, **kw})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def full_size():
    """The default 20k + 5k sets, generated once (templates included). No wall-clock assertion: a loaded machine
    must not fail a test."""
    glyph_templates.cache_clear()
    dm = GlyphsDataModule(seed=0)
    dm.setup("fit")
    return dm


def test_contract_before_setup():
    dm = GlyphsDataModule(num_classes=20)
    assert dm.num_classes == 20 and dm.input_shape == (1, 32, 32)
    assert dm.train_set is None and dm.classes == list(GLYPH_CHARS[:20])
    assert GlyphsDataModule().num_classes == 10
    assert GlyphsDataModule(num_classes=len(GLYPH_CHARS)).num_classes == 34
    with pytest.raises(ValueError):
        GlyphsDataModule(num_classes=len(GLYPH_CHARS) + 1)


def test_full_size_generation_is_balanced(full_size):
    dm = full_size
    assert len(dm.train_set) == 20000 and len(dm.test_set) == 5000
    counts = torch.bincount(dm.train_labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    counts = torch.bincount(dm.test_labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    assert dm.val_set is dm.test_set  # val_fraction = 0: validate on the test set


def test_batches(full_size):
    dm = full_size
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 1, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) < 10
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) == 1.0 and 0.03 < float(dm.train_images.mean()) < 0.5  # ink on black background


def test_deterministic_by_seed():
    a, b, c = _setup(seed=7, return_angle=True), _setup(seed=7, return_angle=True), _setup(seed=8)
    for split in ("train", "test"):
        for what in ("images", "labels", "angles"):
            assert torch.equal(getattr(a, f"{split}_{what}"), getattr(b, f"{split}_{what}"))
    assert not torch.equal(a.train_images, c.train_images)
    assert not torch.equal(a.train_images[:100], a.test_images)  # train/test use different derived seeds


def test_data_seed_decouples_data_from_shuffling_seed():
    a, b = _setup(seed=1, data_seed=5), _setup(seed=2, data_seed=5)
    assert torch.equal(a.train_images, b.train_images)


def test_difficulty_sets_defaults_and_changes_images():
    easy, hard = difficulty_defaults(0.0), difficulty_defaults(1.0)
    assert easy.max_rotation < hard.max_rotation and easy.clutter == 0.0 < hard.clutter
    assert easy.stroke_noise < hard.stroke_noise and easy.max_translation < hard.max_translation
    assert hard.scale_range[0] < easy.scale_range[0]
    a, b = _setup(difficulty=0.0), _setup(difficulty=1.0)
    assert torch.equal(a.train_labels, b.train_labels)  # same stream of labels ...
    assert (a.train_images - b.train_images).abs().mean() > 0.05  # ... different pictures
    dm = GlyphsDataModule(difficulty=1.0, max_rotation=3.0, clutter=0.0)
    assert dm.config.max_rotation == 3.0 and dm.config.clutter == 0.0
    assert dm.config.stroke_noise == hard.stroke_noise
    with pytest.raises(ValueError):
        GlyphsDataModule(difficulty=1.5)
    with pytest.raises(ValueError):
        GlyphsDataModule(scale_range=(0.0, 1.0))
    with pytest.raises(ValueError):
        GlyphsDataModule(clutter=2.0)


def test_return_angle_and_angle_range():
    dm = _setup(return_angle=True, max_rotation=30.0)
    x, y, angle = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 1, 32, 32) and y.shape == (50,) and angle.shape == (50,)
    assert angle.dtype == torch.float32
    limit = math.radians(30.0)
    for angles in (dm.train_angles, dm.test_angles):
        assert float(angles.abs().max()) <= limit + 1e-6
        assert float(angles.abs().max()) > 0.8 * limit  # actually spread over the range
    assert len(next(iter(_setup().train_dataloader()))) == 2
    assert float(_setup(max_rotation=0.0).train_angles.abs().max()) == 0.0


def test_positive_angle_rotates_counter_clockwise():
    src = torch.zeros(1, 1, 32, 32)
    src[0, 0, 15:17, 23:25] = 1.0  # a dot right of the centre
    out = _warp(src, _affine_theta(torch.tensor([math.pi / 2]), torch.ones(1), torch.zeros(1), torch.zeros(1)), 32)
    row, col = divmod(int(out.flatten().argmax()), 32)
    assert row < 12 and 13 <= col <= 18  # moved to above the centre


def test_val_fraction_holds_out_stratified_part_of_train():
    dm = _setup(val_fraction=0.2, return_angle=True)
    assert len(dm.train_set) == 240 and len(dm.val_set) == 60 and len(dm.test_set) == 100
    counts = torch.bincount(dm.val_labels, minlength=10)
    assert int(counts.min()) == int(counts.max()) == 6
    assert dm.val_angles.shape == (60,)


def test_normalize_uses_train_statistics():
    dm = _setup(normalize=True)
    assert abs(float(dm.train_images.mean())) < 1e-4 and abs(float(dm.train_images.std()) - 1) < 1e-3
    assert dm.val_set is dm.test_set


def test_cache_dir_round_trip(tmp_path):
    a = GlyphsDataModule(**SMALL, cache_dir=str(tmp_path))
    a.prepare_data()
    files = list(tmp_path.glob("glyphs-*.pt"))
    assert len(files) == 1
    a.setup()
    b = _setup(cache_dir=str(tmp_path))
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    _setup(cache_dir=str(tmp_path), seed=1)
    assert len(list(tmp_path.glob("glyphs-*.pt"))) == 2  # a different spec gets its own file


def test_more_classes():
    dm = _setup(num_classes=34, train_size=340, test_size=34)
    assert set(dm.train_labels.tolist()) == set(range(34))


def test_imbalance_follows_the_long_tail_profile_and_leaves_test_balanced():
    dm = GlyphsDataModule(num_classes=5, train_size=1000, test_size=200, difficulty=0.0, imbalance=10.0)
    dm.setup()
    counts = torch.bincount(dm.train_labels, minlength=5).float()
    full = torch.bincount(GlyphsDataModule(num_classes=5, train_size=1000, test_size=200,
                                           difficulty=0.0).generate()["train"][1], minlength=5).float()
    expected = torch.tensor([10.0 ** (-k / 4) for k in range(5)]) * full
    assert torch.allclose(counts, expected.round(), atol=1)
    assert counts[0] / counts[-1] == pytest.approx(10.0, rel=0.1)
    assert torch.bincount(dm.test_labels, minlength=5).min() >= 30  # test split untouched


def test_label_noise_flips_exactly_the_share_to_other_classes():
    dm = GlyphsDataModule(num_classes=10, train_size=500, test_size=50, difficulty=0.0, label_noise=0.2)
    dm.setup()
    flipped = dm.train_labels != dm.train_clean_labels
    assert int(flipped.sum()) == 100
    clean = GlyphsDataModule(num_classes=10, train_size=500, test_size=50, difficulty=0.0)
    clean.setup()
    assert torch.equal(dm.train_clean_labels, clean.train_labels)
    assert torch.equal(dm.test_labels, clean.test_labels)


@pytest.mark.parametrize("kwargs", [{"imbalance": 0.5}, {"label_noise": 1.0}, {"label_noise": -0.1}])
def test_bad_shift_arguments_name_the_key(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GlyphsDataModule(**kwargs)
