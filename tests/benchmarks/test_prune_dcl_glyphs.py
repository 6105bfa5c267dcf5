"""benchmarks/prune_glyphs.py and benchmarks/dcl_glyphs.py: one tiny seed through Lightning, the pruning going
through the real L1FilterPruning callback, and resumable output files."""

from __future__ import annotations

import json

from benchmarks import dcl_glyphs, prune_glyphs


def test_prune_glyphs_tiny_seed_prunes_by_the_stage_ratios_and_resumes(tmp_path):
    out = tmp_path / "prune.json"
    argv = ["--seeds", "0", "--epochs", "1", "--retrain-epochs", "1", "--train-size", "64", "--test-size", "32",
            "--stage-ratios", "0.6", "0.3", "0.1", "--out", str(out)]
    data = prune_glyphs.main(argv)
    (run,) = data["runs"]
    # ResNet-20 first convs of widths 16 / 32 / 64 keep floor(w * (1 - ratio)) filters
    assert run["block_widths"] == [6] * 3 + [22] * 3 + [57] * 3
    removed = {f"layer{s}.{b}.conv1": n for s, n in ((1, 10), (2, 10), (3, 7)) for b in range(3)}
    assert run["removed_filters"] == removed
    assert run["pruned_macs"] == run["scratch_macs"] < 0.75 * run["baseline_macs"]
    assert "Seeds finished: 1 of 1." in out.with_suffix(".md").read_text()
    again = prune_glyphs.main(argv)  # the finished seed is skipped, not retrained
    assert again["runs"] == json.loads(out.read_text())["runs"] and len(again["runs"]) == 1


def test_dcl_glyphs_tiny_runs_record_multipliers_and_gap(tmp_path):
    out = tmp_path / "dcl.json"
    data = dcl_glyphs.main(["--seeds", "0", "--settings", "imbalanced", "--epochs", "1", "--train-size", "200",
                            "--test-size", "50", "--out", str(out)])
    plain, dcl = sorted(data["runs"], key=lambda r: r["method"] != "plain")
    assert plain["method"] == "plain" and "lambda_end" not in plain
    assert set(dcl["lambda_end"]) == {"worst_class_loss"} and dcl["lambda_end"]["worst_class_loss"] >= 0
    for r in (plain, dcl):
        assert r["gap"] == r["train_acc"] - r["test_acc"] and r["test_worst_class"] <= r["test_acc"]
        assert r["train_images"] < 200  # the long-tailed split dropped tail-class images
    assert "## imbalanced" in out.with_suffix(".md").read_text()


def test_dcl_glyphs_noisy_loss_floor_and_a_changed_constraint_reruns_only_dcl(tmp_path):
    out = tmp_path / "dcl.json"
    argv = ["--seeds", "0", "--settings", "noisy", "--epochs", "1", "--train-size", "100", "--test-size", "30",
            "--out", str(out)]
    data = dcl_glyphs.main(argv)
    (dcl,) = [r for r in data["runs"] if r["method"] == "dcl"]
    assert dcl["constraints"] == {"loss_floor": {"floor": 0.85, "eps": 0.05}} and set(dcl["lambda_end"]) == {
        "loss_floor"}
    again = dcl_glyphs.main(argv + ["--noisy-constraint", "calibration_gap"])  # the plain run is kept
    assert [dcl_glyphs.variant(r) for r in again["runs"]] == [
        "plain", "dcl loss_floor floor 0.85, eps 0.05", "dcl calibration_gap eps 0.02"]
    assert again["runs"][:2] == data["runs"] and len(again["commands"]) == 2
    assert dcl_glyphs.main(argv)["runs"] == again["runs"]  # nothing left to run
