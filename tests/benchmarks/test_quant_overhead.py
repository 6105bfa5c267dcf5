"""Smoke test of benchmarks/quant_overhead.py: 2 steps, 1 round, tiny batches; FP, BC, SR and R train and are
timed side by side."""

from __future__ import annotations

import json
import math

from benchmarks.quant_overhead import main


def test_quant_overhead_smoke(tmp_path):
    out = tmp_path / "quant_overhead.json"
    data = main(["--rounds", "1", "--steps", "2", "--batch-size", "4", "--out", str(out)])
    assert [r["net"] for r in data["results"]] == ["resnet20", "small_cnn"]
    for r in data["results"]:
        for m in ("bc", "sr", "r"):
            assert math.isfinite(r[f"{m}_ratio"]["median"]) and r[f"{m}_ratio"]["median"] > 0
        assert r["per_round"][0]["threads"] == {"fp": 1, "bc": 1, "sr": 1, "r": 1}
    assert json.loads(out.read_text())["command"].startswith("python -m benchmarks.quant_overhead --rounds 1")
    md = (tmp_path / "quant_overhead.md").read_text()
    assert "| resnet20 (random) | 4 | 2 |" in md and "Goal" in md
