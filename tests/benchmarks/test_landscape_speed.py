"""Smoke test of benchmarks/landscape_speed.py: one 1-rank run of a 3x3 surface through trainer.validate."""

from __future__ import annotations

import json
import math

from benchmarks.landscape_speed import main


def test_landscape_speed_smoke(tmp_path):
    out = tmp_path / "speed.json"
    report = main(["--rounds", "1", "--points", "3", "--samples", "16", "--plain-passes", "2", "--no-ddp",
                   "--out", str(out)])
    r = report["rounds"][0]
    assert r["one_rank"]["points"] == 9 and r["one_rank"]["points_per_rank"] == 9
    assert r["one_rank"]["threads"] == 1 and r["one_rank"]["samples"] == 16
    assert math.isfinite(report["point_ratio"]["median"]) and report["point_ratio"]["median"] > 0
    assert report["rank_ratio"] is None
    assert json.loads(out.read_text())["grid"] == "3x3"
    assert "not run" in out.with_suffix(".md").read_text()
