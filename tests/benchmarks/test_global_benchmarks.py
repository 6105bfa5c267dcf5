"""Smoke tests of benchmarks/global_illustrative.py and benchmarks/global_latency.py (tiny settings)."""

from __future__ import annotations

import json

from benchmarks.global_illustrative import main as illustrative_main
from benchmarks.global_latency import Pair, measure_pairs, to_markdown


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


def test_latency_pairs_smoke() -> None:
    from nets.global_layer import GlobalLayer
    from nets.resnet_cifar import BasicBlock

    rows = measure_pairs([Pair("tiny", lambda: BasicBlock(4, 4), lambda: GlobalLayer(4, K=3), (4, 6, 6), 2)],
                         rounds=1, repeats=1)
    (row,) = rows
    assert row["baseline"]["elementwise_macs"] == 0
    assert row["candidate"]["elementwise_macs"] == 4 * 36 * (10 + 9 * 3)  # GlobalLayer.pde_macs
    assert row["candidate"]["macs"] == 4 * (4 * 9 * 36)  # four depthwise 3x3 coefficient convs
    assert row["baseline"]["macs"] == 2 * (4 * 4 * 9 * 36)  # two full 3x3 convs
    assert row["mac_ratio"] == 0.5 and row["latency_ratio_b1"] > 0 and row["latency_ratio_b2"] > 0
    md = to_markdown({"command": "x", "date": "d", "machine": "m", "rows": rows}, "T")
    assert "| tiny | 4x6x6 |" in md
