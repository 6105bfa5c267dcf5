"""benchmarks/dcl_glyphs.py: tiny seeds through Lightning, and resumable output files (the prune_glyphs part moved
to studies/prune_glyphs.yaml, tested in tests/studies/test_prune_glyphs_study.py)."""

from __future__ import annotations

from benchmarks import dcl_glyphs


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
