"""Smoke test of benchmarks/landscape_glyphs.py: both studies end to end on a few images and epochs."""

from __future__ import annotations

import json

import torch

from benchmarks.landscape_glyphs import main


def test_landscape_glyphs_smoke(tmp_path):
    previous = torch.get_num_threads()
    try:
        report = main([
            "--out", str(tmp_path / "lg.json"), "--work", str(tmp_path / "work"), "--seeds", "2",
            "--batch-epochs", "2", "--skip-epochs", "1", "--skip-seeds", "2", "--train-size", "64",
            "--test-size", "32", "--batch-samples", "32", "--skip-samples", "32", "--batch-grid=-1:1:3",
            "--skip-grid=-1:1:3",
        ])
    finally:
        torch.set_num_threads(previous)
    saved = json.loads((tmp_path / "lg.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.landscape_glyphs --out")
    skip = saved["skip"]["runs"]
    assert [(r["net_kwargs"]["shortcut"], r["seed"]) for r in skip] == [("A", 0), ("none", 0), ("A", 1), ("none", 1)]
    assert all(r["summary"]["surface_2d"]["points"] == 21 * 3 and r["sharpness"] is not None for r in skip)
    batch = saved["batch"]
    assert [r["batch_size"] for r in batch["runs"]["small"]] == [32, 32]
    assert [r["batch_size"] for r in batch["runs"]["large"]] == [512, 512]
    assert "interpolation" in batch["runs"]["large"][0]["summary"]  # large seed 0 -> small seed 0
    assert batch["runs"]["small"][0]["summary"]["trajectory"]["checkpoints"] == 3  # initial + 2 epochs
    assert "accuracy_small_minus_large" in batch["comparisons"]
    for name in ("lg.md", "lg_skip.png", "lg_batch.png", "lg_trajectory.png"):
        assert (tmp_path / name).is_file(), name
    assert "Paired over seeds" in (tmp_path / "lg.md").read_text()
    assert report["seconds"] > 0
