"""Smoke test of benchmarks/overhead.py: 2 steps, 1 round, a tiny batch; both sides train and are timed."""

from __future__ import annotations

import json
import math

from benchmarks.overhead import main


def test_overhead_smoke(tmp_path):
    out = tmp_path / "overhead.json"
    report = main([
        "--steps", "2", "--rounds", "1", "--batch-size", "4", "--warmup-steps", "1", "--no-progress",
        "--out", str(out),
    ])
    assert [c["net"] for c in report["configs"]] == ["resnet20", "small_cnn"]
    for c in report["configs"]:
        for key in ("plain_samples_per_s", "lightning_samples_per_s"):
            assert math.isfinite(c[key]) and c[key] > 0, (c["net"], key, c[key])
        assert math.isfinite(c["ratio"]["median"]) and c["ratio"]["median"] > 0
        assert c["steps"] == 2 and c["batch_size"] == 4 and len(c["per_round"]) == 1
        assert c["max_param_diff"] < 1e-4  # same init, data and optimizer: the same training
        assert c["per_round"][0]["threads"] == {"plain": 1, "lightning": 1}
    assert json.loads(out.read_text())["command"].startswith("python -m benchmarks.overhead --steps 2")
    md = (tmp_path / "overhead.md").read_text()
    assert "| resnet20 (random) | 4 | 2 |" in md and "Goal" in md
