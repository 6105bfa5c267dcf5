"""Smoke tests of benchmarks/global_illustrative.py (tiny settings); the latency pairs are tested in
test_deploy_latency.py."""

from __future__ import annotations

import json

from benchmarks.global_illustrative import main as illustrative_main


def test_illustrative_study_smoke(tmp_path) -> None:
    out = tmp_path / "gi.json"
    data = illustrative_main(["--seeds", "0", "--epochs", "1", "--train-size", "256", "--test-size", "64",
                              "--K", "2", "--out", str(out)])
    assert [r["backbone"] for r in data["runs"]] == ["conv", "residual", "pde"]
    assert {r["params"] for r in data["runs"]} == {522, 524}
    assert all(0 <= r["test_acc"] <= 100 and r["steps"] == 2 for r in data["runs"])
    assert json.loads(out.read_text())["command"].startswith("python -m benchmarks.global_illustrative --seeds 0")
    assert "| pde | 0 |" in out.with_suffix(".md").read_text()
    # rerunning with the same settings resumes: nothing is trained again
    again = illustrative_main(["--seeds", "0", "--epochs", "1", "--train-size", "256", "--test-size", "64",
                               "--K", "2", "--out", str(out)])
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in data["runs"]]
    # adding a seed keeps seed 0's runs and trains only the new seed's
    more = illustrative_main(["--seeds", "0", "1", "--epochs", "1", "--train-size", "256", "--test-size", "64",
                              "--K", "2", "--backbones", "conv", "residual", "pde", "--out", str(out)])
    assert [(r["backbone"], r["seed"]) for r in more["runs"]][:3] == [("conv", 0), ("residual", 0), ("pde", 0)]
    assert [r["train_seconds"] for r in more["runs"][:3]] == [r["train_seconds"] for r in data["runs"]]
    assert [r["seed"] for r in more["runs"][3:]] == [1, 1, 1]
