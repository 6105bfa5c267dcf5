"""The task-specific transformer benchmarks: interpolation of the drop-top curve, round-robin timing, and tiny
end-to-end runs of every stage (tiny random BERT, a few examples) writing their results files."""

from __future__ import annotations

import json

import pytest

from benchmarks import nas_latency, nas_synthetic
from tests.recipes.smoke_data_text import write_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=3, hidden=32, max_positions=64)


def test_interpolate():
    pts = [(10.0, 90.0), (2.0, 50.0), (6.0, 70.0)]
    assert nas_synthetic.interpolate(pts, 4.0) == pytest.approx(60.0)
    assert nas_synthetic.interpolate(pts, 8.0) == pytest.approx(80.0)
    assert nas_synthetic.interpolate(pts, 2.0) == pytest.approx(50.0)
    assert nas_synthetic.interpolate(pts, 1.0) is None and nas_synthetic.interpolate(pts, 11.0) is None


def test_round_robin_medians():
    calls = []
    out = nas_latency.time_round_robin([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and len(out) == 2 and all(t >= 0 for t in out)


def test_demo_stages_and_latency_end_to_end(tiny_bert, tmp_path):
    common = ["--model-path", tiny_bert, "--train-size", "16", "--val-size", "8", "--test-size", "8", "--epochs", "1",
              "--search-epochs", "1", "--max-length", "32", "--batch-size", "8", "--population", "2",
              "--generations", "1", "--search-batches", "1", "--latency-repeats", "1", "--latency-batches", "1,2",
              "--parts", str(tmp_path / "parts"), "--results", str(tmp_path / "results")]
    nas_synthetic.main(["bow", *common])
    for layers in ("0,1,2", "0", "0,1"):
        nas_synthetic.main(["finetune", "--layers", layers, *common])
    nas_synthetic.main(["search", *common])
    rechosen = nas_synthetic.main(["finetune", "--from-search", "--selection", "budget", "--latency-budget", "0.9",
                                   *common])
    assert rechosen["init"] == "supernet" and rechosen["search"]["rechosen_by"]["selection"] == "budget"
    assert rechosen["arch"] == rechosen["search"]["chosen"]["arch"]
    summary = nas_synthetic.main(["collect", *common])
    saved = json.loads((tmp_path / "results" / "nas_synthetic.json").read_text())
    assert saved["goals"] == json.loads(json.dumps(summary["goals"]))
    assert [r["name"] for r in summary["full"]] == ["finetune_L012_s0"]
    assert [len(r["arch"]["layers"]) for r in summary["drop_top"]] == [1, 2]
    assert len(summary["goals"]) == 2 * len(summary["searched"]) == 4
    assert {r["init"] for r in summary["searched"]} == {"supernet"}
    for name in ("nas_synthetic.md", "nas_synthetic.png", "nas_synthetic_pareto.png"):
        assert (tmp_path / "results" / name).stat().st_size > 100
    result = nas_latency.main(["--model-path", tiny_bert, "--results", str(tmp_path / "results"),
                               "--batches", "1,2", "--lengths", "16,32", "--repeats", "1", "--repeats-large", "1"])
    assert result["arch"] == summary["searched"][0]["arch"]
    assert [(r["batch"], r["seq_len"]) for r in result["rows"]] == [(1, 16), (1, 32), (2, 16), (2, 32)]
    assert "speed-up" in (tmp_path / "results" / "nas_latency.md").read_text()


def test_seeds_stage_summarises_drop_top_prefixes_per_depth(tmp_path):
    parts, results = tmp_path / "parts", tmp_path / "results"
    parts.mkdir()
    runs = [([0, 1, 2], 0, 90.0), ([0, 1, 2], 1, 94.0), ([0], 0, 48.8), ([1, 3, 5], 0, 70.0)]
    for layers, seed, acc in runs:
        name = f"finetune_L{''.join(map(str, layers))}_s{seed}"
        (parts / f"{name}.json").write_text(json.dumps({"name": name, "arch": {"layers": layers, "downsample": {}},
                                                        "test_acc": acc, "seed": seed, "init": "pretrained"}))
    out = nas_synthetic.main(["seeds", "--parts", str(parts), "--results", str(results)])
    assert [(r["layers"], r["seeds"], r["test_acc"]) for r in out["rows"]] == [(3, [0, 1], [90.0, 94.0]),
                                                                                 (1, [0], [48.8])]
    assert out["rows"][0]["mean"] == 92.0 and out["rows"][0]["ci"][0] < 92.0 < out["rows"][0]["ci"][1]
    assert "| 1 | 0 | 48.8 | 48.8 | 1 of 1 |" in (results / "nas_synthetic_seeds.md").read_text()
