"""Smoke test of benchmarks/quant_convex.py on a short schedule: every method runs through QuantizedTraining,
the tables and claims are written, and R's freeze is detected."""

from __future__ import annotations

import json

from benchmarks.quant_convex import main


def test_quant_convex_smoke(tmp_path):
    out = tmp_path / "convex.json"
    data = main(["--seeds", "0", "--steps", "0.1", "--phases", "4", "--phase", "100", "--every", "10",
                 "--out", str(out), "--no-plot"])
    res = data["analysis"]["0.1"]
    assert set(res["table"]) == {"fp", "bc", "bc_det", "bc_q", "sr", "r"}
    assert all(len(v) == 4 for v in res["table"].values())
    # the deployed BC weights are on the grid: never better than the grid's best point
    assert res["table"]["bc_q"][-1] >= 0.99 * res["grid_best"]
    assert res["claims"]["r_frozen"]  # R stops once every lr * |g| < step / 2
    assert res["table"]["fp"][-1] < res["table"]["sr"][-1]
    md = (tmp_path / "convex.md").read_text()
    assert "## Grid step 0.1" in md and "R freezes" in md
    assert json.loads(out.read_text())["args"]["phases"] == 4
