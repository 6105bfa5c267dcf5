"""Bad study input gets one clear paragraph naming the file and key, before anything runs; finished runs stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.spec import StudyError, load_study
from tests.studies.tiny import REPO, studies, tiny_study


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _error(tmp_path: Path, edit) -> str:
    path = tiny_study(tmp_path / "bad.yaml", edit)
    with pytest.raises(StudyError) as info:
        load_study(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    return text


def test_missing_recipe(tmp_path: Path) -> None:
    text = _error(tmp_path, lambda d: d["stages"]["second"].update(recipe="recipes/glyphs/nope.yaml"))
    assert "stages.second.recipe" in text and "recipes/glyphs/nope.yaml" in text and "does not exist" in text


def test_unknown_metric_in_a_claim_and_unknown_keys(tmp_path: Path) -> None:
    text = _error(tmp_path, lambda d: d["claims"]["second_not_much_worse"].update(a="second_acc1"))
    assert "claims.second_not_much_worse.a" in text and "'second_acc1'" in text and "Did you mean 'second_acc'" in text
    text = _error(tmp_path, lambda d: d["stages"]["first"].update(overides={"trainer.max_epochs": 1}))
    assert "stages.first.overides" in text and "overrides" in text
    text = _error(tmp_path, lambda d: d["metrics"]["first_acc"].update(file="tests"))
    assert "metrics.first_acc.file" in text


def test_stage_cycle(tmp_path: Path) -> None:
    text = _error(tmp_path, lambda d: d["stages"]["first"].update(init_from="second"))
    assert "cycle" in text and ("first -> second -> first" in text or "second -> first -> second" in text)


def test_paired_claim_between_stages_of_different_seeds(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["stages"]["second"].pop("init_from")
        d["stages"]["second"]["seeds"] = [0, 2]

    text = _error(tmp_path, edit)
    assert "claims.second_not_much_worse" in text and "[0, 2]" in text and "paired: false" in text


def test_a_chained_stage_needs_its_seeds_upstream(tmp_path: Path) -> None:
    text = _error(tmp_path, lambda d: d["stages"]["second"].update(seeds=[0, 7]))
    assert "'second'" in text and "[7]" in text and "'first'" in text


def test_a_run_directory_written_by_another_study_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    # the study folder was made by another study file with the same name
    (runs / "tiny").mkdir(parents=True)
    (runs / "tiny" / "study.json").write_text(json.dumps({"study": "tiny", "file": "studies/other.yaml"}))
    study = tiny_study(tmp_path / "tiny.yaml")
    assert studies("run", study, "--runs-root", runs, "--dry-run") == 1
    err = capsys.readouterr().err
    assert "studies/other.yaml" in err and str(study) in err and "--runs-root" in err
    # a run directory inside the right study folder, written for another stage/seed (or by a plain main.py fit)
    (runs / "tiny" / "study.json").write_text(json.dumps({"study": "tiny", "file": str(study)}))
    run_dir = runs / "tiny" / "first" / "seed1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"finished work")
    assert studies("run", study, "--runs-root", runs, "--dry-run") == 1
    err = capsys.readouterr().err
    assert str(run_dir) in err and "did not start" in err
    (run_dir / "study_run.json").write_text(json.dumps({"study": "tiny", "stage": "second", "seed": 1, "axes": {}}))
    assert studies("run", study, "--runs-root", runs, "--dry-run") == 1
    assert "'stage': 'second'" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"finished work"


def test_a_bad_override_fails_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study = tiny_study(tmp_path / "tiny.yaml", lambda d: d["stages"]["second"]["overrides"].update(
        {"trainer.max_epoch": 2}))
    assert studies("run", study, "--runs-root", tmp_path / "runs", "--launcher", "debug") == 1
    err = capsys.readouterr().err
    assert "stages.second.overrides" in err and "max_epoch" in err and str(study) in err
    assert not (tmp_path / "runs").exists()


def test_a_second_runner_of_the_same_study_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study = tiny_study(tmp_path / "tiny.yaml")
    root = tmp_path / "runs" / "tiny"
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"study": "tiny", "file": str(study)}))
    (root / "run.lock").write_text("1\n")  # a live process (init) holds the study
    assert studies("run", study, "--runs-root", tmp_path / "runs", "--launcher", "debug") == 1
    assert "(pid 1)" in capsys.readouterr().err
    assert not (root / "first").exists()
    (root / "run.lock").write_text("999999999\n")  # a runner that is gone: its lock is taken over
    assert studies("status", study, "--runs-root", tmp_path / "runs") == 0
    assert "at work" not in capsys.readouterr().out


def test_plan_expands_axes_seeds_and_checkpoint_links(tmp_path: Path) -> None:
    """Planning alone (nothing parsed or run): run directories, overrides, init_from and other checkpoints."""
    from studies.runner import plan

    def edit(d: dict) -> None:
        d["axes"] = {"lr": {"stages": ["second"], "values": {"lo": {"model.init_args.optimizer.init_args.lr": 0.01},
                                                             "hi": {"model.init_args.optimizer.init_args.lr": 0.1}}}}
        d["stages"]["second"]["checkpoints"] = {"model.init_args.teacher_ckpt": "first"}
        d["seed_overrides"] = ["seed_everything", "data.init_args.seed"]

    study = load_study(tiny_study(tmp_path / "tiny.yaml", edit))
    planned = {p.run.key: p for p in plan(study, tmp_path / "runs")}
    assert list(planned) == ["first/seed0", "first/seed1", "second/lr=lo/seed0", "second/lr=lo/seed1",
                             "second/lr=hi/seed0", "second/lr=hi/seed1"]
    p = planned["second/lr=hi/seed1"]
    fit = p.args["fit"]
    upstream = str(tmp_path / "runs" / "tiny" / "first" / "seed1" / "checkpoints" / "last.ckpt")
    assert f"--init_from={upstream}" in fit and f"--model.init_args.teacher_ckpt={upstream}" in fit
    assert "--model.init_args.optimizer.init_args.lr=0.1" in fit  # the axis value wins over the stage's override
    assert "--seed_everything=1" in fit and "--data.init_args.seed=1" in fit
    assert fit[fit.index("--run_name") + 1] == "second/lr=hi/seed1" and fit[-2:] == ["--ckpt_path", "auto"]
    assert fit[fit.index("--wandb_group") + 1] == "tiny" and fit[fit.index("--wandb_job_type") + 1] == "second"
    assert json.loads(fit[fit.index("--wandb_tags") + 1]) == ["tiny", "second", "seed=1", "lr=hi"]
    assert p.steps == ["fit", "test"] and p.args["test"][-2:] == ["--ckpt_path", "last"]
    assert p.upstream == ["first/seed1"] and p.budget_min == 5


def test_a_run_stopped_by_sigterm_says_so_and_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """Lightning turns a SIGTERM (a kill, a preemption) into SIGTERMException, a SystemExit without a code: the job
    reports that, not "exited with status None"; a plain SystemExit keeps its status."""
    import main
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from studies.runner import run_job

    def stopped(args: list[str]) -> None:
        raise SIGTERMException

    (tmp_path / "study_run.json").write_text(json.dumps({"steps": []}))  # the runner writes it before the job
    monkeypatch.setattr(main, "cli_main", stopped)
    out = run_job(str(tmp_path), [["fit", "--config", "x.yaml"]], threads=1)
    assert out["ok"] is False and out["step"] == "fit"
    assert "stopped by SIGTERM" in out["error"] and "resumes this run from its last checkpoint" in out["error"]
    assert "status None" not in out["error"]

    def refused(args: list[str]) -> None:
        raise SystemExit(2)

    monkeypatch.setattr(main, "cli_main", refused)
    out = run_job(str(tmp_path), [["test", "--config", "x.yaml"]], threads=1)
    assert out["ok"] is False and "exited with status 2" in out["error"]
    steps = json.loads((tmp_path / "study_run.json").read_text())["steps"]
    assert [(s["step"], s["ok"]) for s in steps] == [("fit", False), ("test", False)]


def test_a_stale_lock_whose_pid_was_reused_is_taken_over(tmp_path: Path) -> None:
    """A runner killed without cleanup leaves its lock; when another process later gets the same pid, the lock's
    start time no longer matches and the study is not blocked by that stranger."""
    import os
    import subprocess
    import sys

    from studies.runner import StudyLock, _process_start

    if _process_start(os.getpid()) is None:
        pytest.skip("no /proc on this system: only the pid is checked")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _process_start(stranger.pid)
        assert start is not None
        (tmp_path / "run.lock").write_text(f"{stranger.pid} {int(start) - 1}\n")  # the pid, another process's time
        assert StudyLock.holder(tmp_path) is None
        (tmp_path / "run.lock").write_text(f"{stranger.pid} {start}\n")  # the same process: it holds the study
        assert StudyLock.holder(tmp_path) == stranger.pid
        (tmp_path / "run.lock").write_text(f"{stranger.pid}\n")  # a lock from before start times were written
        assert StudyLock.holder(tmp_path) == stranger.pid
    finally:
        stranger.kill()
        stranger.wait()
