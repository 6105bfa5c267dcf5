"""The studies runner end to end on a tiny study (digits, a few steps): two chained stages, two seeds, one claim.

Most runs go through submitit's DebugExecutor (in this process); one test uses the real LocalExecutor (one
subprocess per run), and kills its runs mid-way to check that a rerun resumes them from their last checkpoint and
ends with the metrics of the uninterrupted runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studies.seeds import compare
from tests.studies.tiny import REPO, metrics, studies, tiny_study

RUNS = ("first/seed0", "first/seed1", "second/seed0", "second/seed1")


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("STUDIES_TEST_EXIT_AT_EPOCH", raising=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny study run once, uninterrupted, with the debug launcher: (study file, runs root)."""
    tmp = tmp_path_factory.mktemp("tiny_done")
    old = os.getcwd()
    os.chdir(REPO)
    try:
        study = tiny_study(tmp / "tiny.yaml")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = studies("run", study, "--runs-root", tmp / "runs", "--launcher", "debug")
        assert rc == 0, err.getvalue()[-3000:]
    finally:
        os.chdir(old)
    return study, tmp / "runs"


def _steps(run_dir: Path) -> list[str]:
    return [s["step"] for s in json.loads((run_dir / "study_run.json").read_text())["steps"]]


def test_run_skip_report_and_refuse_a_changed_override(finished: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    study, runs = finished
    root = runs / "tiny"
    for key in RUNS:
        assert set(metrics(root / key, "test")) >= {"test/acc1"}, key
        assert _steps(root / key) == ["fit", "test"], key
    # the chain: the second stage started from the first stage's checkpoint of the same seed
    identity = json.loads((root / "second/seed1/run.json").read_text())["identity"]
    assert str(identity["init_from"]).endswith("tiny/first/seed1/checkpoints/last.ckpt")

    # a second run skips every finished run (no step runs again)
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    assert all(_steps(root / key) == ["fit", "test"] for key in RUNS)
    assert "all 4 runs finished" in capsys.readouterr().out
    assert studies("status", study, "--runs-root", runs) == 0
    assert "4 finished, 0 partial, 0 pending" in capsys.readouterr().out

    # the report: per-seed values, intervals, the claim decided by the seeds helper
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path) == 0
    assert list((root / "report" / "wandb").glob("offline-run-*"))  # the report's W&B run (job type "report")
    report = json.loads((tmp_path / "tiny.json").read_text())
    point = report["metrics"]["first_acc"]["points"][""]
    assert set(point["per_seed"]) == {"0", "1"} and point["low"] <= point["mean"] <= point["high"]
    claim = report["claims"]["second_not_much_worse"]["points"][""]
    per_seed = {m: report["metrics"][m]["points"][""]["per_seed"] for m in ("first_acc", "second_acc")}
    expected = compare([per_seed["second_acc"][s] for s in "01"], [per_seed["first_acc"][s] for s in "01"],
                       margin=100.0, min_seeds=2)
    assert claim["n"] == 2 and claim["low"] == pytest.approx(expected.low)
    assert claim["status"] == ("met" if expected.non_inferior else "not met")
    assert report["commit"] and report["machine"] and len(report["runs_finished"]) == 4
    md = (tmp_path / "tiny.md").read_text()
    assert "second_not_much_worse" in md and f"**{claim['status']}**" in md

    # a metric key that the runs did not log is named with the file and the keys that are there
    original = study.read_text()
    try:
        tiny_study(study, lambda d: d["metrics"]["first_acc"].update(key="test/acc9"))
        assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path, "--no-wandb") == 1
        err = capsys.readouterr().err
        assert "metrics.first_acc" in err and "'test/acc9'" in err and "test/acc1" in err and "test.json" in err
    finally:
        study.write_text(original)

    # a changed override is refused with the differing key; nothing finished is touched
    ckpt = root / "first/seed0/checkpoints/last.ckpt"
    before = ckpt.stat().st_mtime_ns
    try:
        tiny_study(study, lambda d: d["stages"]["first"].setdefault("overrides", {}).update({"trainer.max_epochs": 3}))
        assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 1
        err = capsys.readouterr().err
        assert "trainer.max_epochs" in err and str(root / "first" / "seed0") in err and "never mixes" in err
    finally:
        study.write_text(original)
    assert ckpt.stat().st_mtime_ns == before and (root / "first/seed0/metrics/test.json").is_file()


def test_a_killed_run_resumes_to_the_uninterrupted_metrics(finished: tuple[Path, Path], tmp_path: Path) -> None:
    """The real LocalExecutor (one subprocess per run, 2 at a time) with every run killed when its epoch 1 starts,
    then a rerun (debug launcher) that resumes them from last.ckpt (epoch 0 done)."""
    _, reference = finished
    study = tiny_study(tmp_path / "tiny.yaml")
    log = tmp_path / "starts.log"
    env = {**os.environ, "STUDIES_TEST_EXIT_AT_EPOCH": "1", "STUDIES_TEST_LOG": str(log), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "studies", "run", str(study), "--runs-root", str(tmp_path / "runs"), "--jobs", "2",
         "--launcher", "local"], cwd=REPO, env=env, capture_output=True, text=True, timeout=200,
        check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    root = tmp_path / "runs" / "tiny"
    assert "blocked: upstream run first/seed0" in proc.stderr
    for key in ("first/seed0", "first/seed1"):
        assert (root / key / "checkpoints/last.ckpt").is_file() and not (root / key / "metrics/fit.json").exists()
    assert not (root / "second").exists()

    os.environ["STUDIES_TEST_LOG"] = str(log)
    try:  # the killed runs are enough here: --only first
        assert studies("run", study, "--runs-root", tmp_path / "runs", "--launcher", "debug", "--only", "first") == 0
    finally:
        del os.environ["STUDIES_TEST_LOG"]
    starts = [line.split() for line in log.read_text().splitlines()]
    for key in ("first/seed0", "first/seed1"):
        epochs = [int(e) for d, e in starts if d.endswith(key)]
        assert epochs == [0, 1], (key, epochs)  # killed in epoch 1, resumed at epoch 1 (not from scratch)
    for key in RUNS[:2]:
        for step in ("fit", "test"):
            ours, ref = metrics(root / key, step), metrics(reference / "tiny" / key, step)
            assert ours.keys() == ref.keys()
            for k in ref:
                assert ours[k] == pytest.approx(ref[k], rel=1e-6, abs=1e-7), (key, step, k)
