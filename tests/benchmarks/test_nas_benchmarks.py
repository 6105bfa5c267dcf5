"""The task-specific transformer latency benchmark (benchmarks/nas_latency.py): round-robin timing, and a tiny
end-to-end run (tiny random BERT) on a searched architecture given the way a search run leaves it
(``searched_arch.json``) and the way the old CPU demo's result file holds it."""

from __future__ import annotations

import json

import pytest

from benchmarks import nas_latency
from tests.recipes.smoke_data_text import write_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=3, hidden=32, max_positions=64)


def test_round_robin_medians():
    calls = []
    out = nas_latency.time_round_robin([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and len(out) == 2 and all(t >= 0 for t in out)


def test_latency_of_a_searched_arch_file_end_to_end(tiny_bert, tmp_path):
    arch = {"layers": [0, 2], "downsample": {"0": ["topk", 0.5]}}
    arch_file = tmp_path / "searched_arch.json"
    arch_file.write_text(json.dumps({"arch": arch, "chosen": {"arch": arch}}))
    result = nas_latency.main(["--model-path", tiny_bert, "--arch-file", str(arch_file), "--results",
                               str(tmp_path / "results"), "--batches", "1,2", "--lengths", "16,32", "--repeats", "1",
                               "--repeats-large", "1"])
    assert result["arch"] == arch
    assert [(r["batch"], r["seq_len"]) for r in result["rows"]] == [(1, 16), (1, 32), (2, 16), (2, 32)]
    assert "speed-up" in (tmp_path / "results" / "nas_latency.md").read_text()


def test_demo_fallback_reads_the_searched_list_and_its_matched_baseline(tiny_bert, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    demo = {"searched": [{"name": "searched_s0", "arch": {"layers": [0, 1]}}],
            "drop_top": [{"name": "finetune_L0_s0", "arch": {"layers": [0]}}],
            "goals": [{"batch": 1, "drop_top_nearest_slower": ["finetune_L0_s0"]}]}
    (results / "nas_synthetic_demo.json").write_text(json.dumps(demo))
    result = nas_latency.main(["--model-path", tiny_bert, "--results", str(results), "--batches", "1",
                               "--lengths", "16", "--repeats", "1", "--repeats-large", "1"])
    assert result["arch"] == {"layers": [0, 1]} and result["drop_top_layers"] == 1
    assert "drop_top (first 1 layers)" in result["rows"][0]


def test_arch_file_without_arch_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "searched_arch.json"
    bad.write_text(json.dumps({"layers": [0]}))
    with pytest.raises(SystemExit, match="searched_arch.json"):
        nas_latency.main(["--arch-file", str(bad), "--results", str(tmp_path)])
