"""Affine VAE benchmark: the search-speed measurement (the batched and the looped search give the same result)."""

from __future__ import annotations

import pytest

from benchmarks import avae_search_speed


def test_speed_measurement_compares_equal_searches():
    cfg = ("tiny", (1, 32, 32), 0.25, "rotation", 3, 3, 1, 1, 0.01)
    row = avae_search_speed.measure(cfg, repeats=1)
    assert row["max_loss_diff"] < 1e-3 and row["max_alpha_diff"] < 1e-3
    assert row["batched_s"] > 0 and row["loop_s"] > 0
    assert row["speedup"] == pytest.approx(row["loop_s"] / row["batched_s"])
