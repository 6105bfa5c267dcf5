"""benchmarks/quant_glyphs.py: one tiny run through Lightning, and the claim bookkeeping on synthetic numbers."""

from __future__ import annotations

import argparse

from benchmarks.quant_glyphs import METHODS, run_one, summarise, write_markdown


def test_run_one_tiny_sr():
    args = argparse.Namespace(batch_size=32, data_seed=0, difficulty=0.5, train_size=64, test_size=32,
                              cache_dir=None, lr=1e-3, epochs=1)
    r = run_one("sr", 0, args)
    assert r["steps"] == 2 and 0.0 <= r["test_acc"] <= 100.0
    assert r["weight_values"] == [-1.0, 1.0]  # binary weights


def test_summary_claims_and_markdown(tmp_path):
    base = {"fp": 95.0, "bc": 93.0, "sr": 60.0, "r": 59.5}
    runs = [{"method": m, "seed": s, "test_acc": base[m] + 0.3 * ((s * 7 + i) % 3), "train_acc": 99.0,
             "epoch_train_loss": [1.0, 0.5], "train_seconds": 1.0, "steps": 2}
            for s in range(5) for i, m in enumerate(METHODS)]
    summary = summarise(runs, list(range(5)))
    claims = {(c["a"], c["b"]): c for c in summary["claims"]}
    assert claims[("bc", "sr")]["held"] and claims[("sr", "r")]["held"] and claims[("fp", "bc")]["held"]
    assert summary["methods"]["fp"]["n"] == 5
    partial = summarise(runs[:8], list(range(5)))  # 2 seeds: no claim decided
    assert all(c["status"] == "not enough seeds" for c in partial["claims"])
    data = {"summary": summary, "runs": runs, "command": "python -m benchmarks.quant_glyphs", "date": "today",
            "machine": "test", "args": {"seeds": list(range(5)), "methods": list(METHODS), "epochs": 2,
                                        "train_size": 64, "test_size": 32, "difficulty": 0.5, "batch_size": 32,
                                        "lr": 1e-3, "data_seed": 0, "threads": 1}}
    path = tmp_path / "g.md"
    write_markdown(path, data)
    text = path.read_text()
    assert "| BC > SR |" in text and "Runs finished: 20 of 20." in text


def test_merge_adds_runs_of_a_parallel_process_without_training(tmp_path):
    import json

    from benchmarks.quant_glyphs import main

    settings = {"methods": list(METHODS), "epochs": 2, "train_size": 64, "test_size": 32, "difficulty": 0.5,
                "batch_size": 32, "lr": 1e-3, "data_seed": 0, "threads": 1}

    def runs(seeds):
        return [{"method": m, "seed": s, "test_acc": 50.0 + s, "train_acc": 60.0, "epoch_train_loss": [1.0],
                 "train_seconds": 1.0, "steps": 2} for s in seeds for m in METHODS]

    out, part = tmp_path / "g.json", tmp_path / "part.json"
    out.write_text(json.dumps({"args": {"seeds": [0, 1], **settings}, "command": "a", "runs": runs([0])}))
    part.write_text(json.dumps({"args": {"seeds": [1], **settings}, "command": "b", "runs": runs([1])}))
    data = main(["--seeds", "0", "1", "--epochs", "2", "--train-size", "64", "--test-size", "32", "--difficulty",
                 "0.5", "--batch-size", "32", "--merge", str(part), "--out", str(out), "--no-plot"])
    assert len(data["runs"]) == 8 and data["summary"]["methods"]["bc"]["n"] == 2
    assert data["commands"][:2] == ["a", "b"]
    assert "Runs finished: 8 of 8." in (tmp_path / "g.md").read_text()
