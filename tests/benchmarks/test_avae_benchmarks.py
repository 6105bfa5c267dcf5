"""Affine VAE benchmarks: the search-speed measurement (same result both ways) and the glyph study's claim logic."""

from __future__ import annotations

import json

import pytest

from benchmarks import avae_glyphs, avae_search_speed


def test_speed_measurement_compares_equal_searches():
    cfg = ("tiny", (1, 32, 32), 0.25, "rotation", 3, 3, 1, 1, 0.01)
    row = avae_search_speed.measure(cfg, repeats=1)
    assert row["max_loss_diff"] < 1e-3 and row["max_alpha_diff"] < 1e-3
    assert row["batched_s"] > 0 and row["loop_s"] > 0
    assert row["speedup"] == pytest.approx(row["loop_s"] / row["batched_s"])


def test_rise_is_far_angles_minus_upright():
    assert avae_glyphs.rise([10.0, 11.0, 20.0, 30.0], [0, 30, 60, 90]) == pytest.approx(15.0)


def _seed_file(root, seed, vae_rise, avae_opt, vae_l9):
    angles = [0.0, 60.0, 120.0, 180.0]
    flat = [100.0 + seed] * 4
    sweep = {"vae_single": [100.0 + seed] + [100.0 + seed + vae_rise] * 3, "avae_single": flat,
             "vae_rot_L8": [130.0] * 4, "vae_rot_L9": [vae_l9 + seed] * 4, "avae_rot": [121.0] * 4,
             "avae_opt": [avae_opt + seed] * 4}
    cfg = {"train_size": 10, "epochs": 1, "width": 0.5, "restarts": 2, "steps": 1, "eval_restarts": 2, "eval_steps": 1}
    (root / f"avae_glyphs_seed{seed}.json").write_text(json.dumps(
        {"seed": seed, "angles": angles, "config": cfg, "train_seconds": {"avae_opt": 1.0}, "sweep": sweep}))


def test_merge_decides_the_claims_from_the_per_seed_files(tmp_path, monkeypatch):
    monkeypatch.setattr(avae_glyphs, "RESULTS", tmp_path)
    for seed, rise in enumerate((50.0, 55.0, 60.0)):
        _seed_file(tmp_path, seed, rise, avae_opt=118.0, vae_l9=120.0)
    avae_glyphs.merge(None)
    out = json.loads((tmp_path / "avae_glyphs.json").read_text())
    assert out["claim1_flat"]["met"] and out["claim2_L_vs_L1"]["met"]
    assert (tmp_path / "avae_glyphs.md").exists() and (tmp_path / "avae_glyphs.png").exists()
    # an AVAE clearly worse than the VAE at L+1 (by 10%, beyond the 2% margin) fails claim 2
    for seed in range(3):
        _seed_file(tmp_path, seed, 50.0, avae_opt=132.0, vae_l9=120.0)
    avae_glyphs.merge(None)
    assert not json.loads((tmp_path / "avae_glyphs.json").read_text())["claim2_L_vs_L1"]["met"]
