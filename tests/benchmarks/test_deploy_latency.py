"""benchmarks/deploy_latency.py: the ratio and its interval on known inputs, and a tiny run's report (2 rounds).

No test asserts a time: only the structure of the report and the arithmetic.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("onnxruntime")

from benchmarks.deploy_latency import all_pairs, gain_ratio, main, median_interval  # noqa: E402


def test_gain_ratio_is_latency_gain_over_mac_gain():
    # half the MACs and half the time: every saved MAC is saved time
    assert gain_ratio(10.0, 5.0, 100.0, 50.0) == pytest.approx(1.0)
    # a quarter of the MACs (x4) but only twice as fast: half of the MAC gain became time
    assert gain_ratio(8.0, 4.0, 400.0, 100.0) == pytest.approx(0.5)
    # fewer MACs and slower: the ratio is below the inverse MAC gain
    assert gain_ratio(1.0, 2.0, 2.0, 1.0) == pytest.approx(0.25)


def test_median_interval_from_order_statistics():
    # n = 2 and n = 5 cannot reach 95%: the whole range, with the coverage it has
    med, lo, hi, cov = median_interval([0.9, 1.1])
    assert (med, lo, hi) == (pytest.approx(1.0), 0.9, 1.1) and cov == pytest.approx(0.5)
    med, lo, hi, cov = median_interval([5, 1, 4, 2, 3])
    assert (med, lo, hi) == (3, 1, 5) and cov == pytest.approx(1 - 2 / 32)
    # n = 6: [x(1), x(6)] covers 1 - 2/64 = 96.9%
    assert median_interval([1, 2, 3, 4, 5, 6])[1:] == (1, 6, pytest.approx(1 - 2 / 64))
    # n = 20: the interval is [x(6), x(15)] (coverage 95.9%; [x(7), x(14)] would be 88.5%)
    xs = list(range(1, 21))
    med, lo, hi, cov = median_interval(xs)
    assert (med, lo, hi) == (10.5, 6, 15)
    assert cov == pytest.approx(1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2**20) and cov >= 0.95
    with pytest.raises(ValueError):
        median_interval([])


def test_default_pairs_cover_the_pruning_global_and_si_nets():
    pairs = all_pairs()
    for key in ("vgg16_a", "resnet56_a", "resnet56_b", "resnet34_a", "resnet34_b", "resnet34_c", "resnet32_global",
                "global_mobilenet_v2", "si_irnet", "si_mobilenet_v3_large"):
        assert key in pairs
    assert {p.group for p in pairs.values()} >= {"pruning", "global", "si"}


def test_tiny_run_writes_the_report(tmp_path):
    out = tmp_path / "deploy.json"
    data = main(["--pairs", "tiny", "--batches", "1", "2", "--threads", "1", "--repeats", "2", "--min-rounds", "2",
                 "--max-rounds", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m benchmarks.deploy_latency --pairs tiny")
    assert saved["machine"]["logical_cpus"] >= 1 and saved["machine"]["cpu"]
    assert len(saved["load_start"]) == 3 and len(saved["load_end"]) == 3
    (row,) = data["rows"]
    assert row["mac_gain"] == pytest.approx(row["baseline"]["macs"] / row["candidate"]["macs"]) and row["mac_gain"] > 3
    assert [(c["batch"], c["threads"], c["rounds"]) for c in row["cells"]] == [(1, 1, 2), (2, 1, 2)]
    for cell in row["cells"]:
        for runtime in ("ort", "eager"):
            r = cell[runtime]
            assert len(r["ratios"]) == 2 and r["ratio_low"] <= r["ratio"] <= r["ratio_high"]
            assert r["ratio"] == pytest.approx(sum(r["ratios"]) / 2)  # the median of two rounds
        assert cell["converged"] is False  # 2 rounds cannot give a 95% interval
    assert row["graph"]["notes"] and 0 <= row["graph"]["non_mac_share_candidate"] <= 1
    md = out.with_suffix(".md").read_text()
    assert "| small_cnn vs a half-width small_cnn" in md and "* |" in md  # unconverged cells are marked
    assert "Where the time goes" in md and "Load average" in md


def test_elementwise_macs_count_the_pde_iteration_that_the_flop_counter_misses():
    from benchmarks.deploy_latency import elementwise_macs
    from nets.global_layer import GlobalLayer
    from nets.resnet_cifar import BasicBlock

    x = torch.randn(1, 4, 6, 6)
    assert elementwise_macs(BasicBlock(4, 4), x) == 0
    assert elementwise_macs(GlobalLayer(4, K=3), x) == 4 * 36 * (10 + 9 * 3)  # GlobalLayer.pde_macs
    # what the flop counter does see: four depthwise 3x3 coefficient convs against two full 3x3 convs
    from callbacks.efficiency_report import count_macs

    assert count_macs(GlobalLayer(4, K=3), x, "all") == 4 * (4 * 9 * 36)
    assert count_macs(BasicBlock(4, 4), x, "all") == 2 * (4 * 4 * 9 * 36)


def test_si_pair_nets_agree_on_their_output():
    pair = all_pairs()["si_irnet"]
    x = torch.randn(2, *pair.shape)
    assert pair.baseline()(x).shape == pair.candidate()(x).shape == (2, 34)
