"""The SLURM launcher through submitit's real SLURM executor, against stub ``sbatch``/``squeue``/``sacct``/
``scontrol``/``scancel``/``srun`` executables (tests/studies/stubs/) that run the submitted scripts on this machine
and answer as SLURM does.

The stubs record what submitit submits (``sbatch.jsonl``: the ``#SBATCH`` options of every submission) and the
environment srun gives each task (``srun.jsonl``). The jobs are the tiny digits study's real ``main.py`` runs, on
CPU (``accelerator: cpu`` in the profile), a 2-"GPU" stage as 2 DDP ranks over gloo that Lightning builds from the
SLURM variables alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.studies.tiny import REPO, metrics, studies, tiny_study

STUBS = REPO / "tests" / "studies" / "stubs"
USR2 = {"class_path": "tests.studies.stubs.usr2_at_epoch.Usr2AtEpoch"}
EXIT = {"class_path": "tests.studies.exit_at_epoch.ExitAtEpoch"}


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stub SLURM on PATH with its state in tmp_path/slurm; returns a profile file for CPU jobs."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", f"{STUBS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_SLURM_DIR", str(tmp_path / "slurm"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("STUDIES_TEST_EXIT_AT_EPOCH", "STUDIES_TEST_USR2_AT_EPOCH", "STUB_SLURM_FAIL_STATE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STUDIES_TEST_LOG", str(tmp_path / "starts.log"))
    profile = tmp_path / "profile.yaml"
    profile.write_text("partition: debug\ngpus_per_node: 2\naccelerator: cpu\ncpus_per_gpu: 1\naccount: lab\n"
                       "signal_delay_s: 90\nsbatch: {mail-type: FAIL}\n")
    yield profile
    # stop what is still queued (a failing test), so no scheduler outlives it
    for job in (tmp_path / "slurm" / "jobs").glob("*.json"):
        subprocess.run([str(STUBS / "scancel"), job.stem], capture_output=True, check=False)


def _wait(runs: Path, keys: list[str], step: str = "test", timeout: float = 200.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all((runs / "tiny" / k / "metrics" / f"{step}.json").is_file() for k in keys):
            return
        time.sleep(0.5)
    raise AssertionError(f"runs {keys} did not finish; stub state in {os.environ['STUB_SLURM_DIR']}")


def _wait_states(slurm_dir: Path, n_jobs: int, timeout: float = 200.0) -> dict[str, dict]:
    """Waits until the first n_jobs submissions are terminal or stuck on a dependency; returns their records."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = {p.stem: json.loads(p.read_text()) for p in (slurm_dir / "jobs").glob("*.json")}
        if len(jobs) >= n_jobs and all(
                t["state"] in ("COMPLETED", "FAILED", "PREEMPTED", "CANCELLED") or
                t["reason"] == "DependencyNeverSatisfied" for j in jobs.values() for t in j["tasks"].values()):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"stub jobs did not settle: {slurm_dir}")


def _submissions(slurm_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (slurm_dir / "sbatch.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_arrays_dependencies_ranks_and_a_requeue_that_resumes(slurm: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    def edit(d: dict) -> None:
        d["stages"]["first"]["gpus"] = 2  # two DDP ranks over the job's two tasks
        d["stages"]["second"]["overrides"]["trainer.callbacks"] = [EXIT, USR2]

    study = tiny_study(tmp_path / "tiny.yaml", edit)
    runs = tmp_path / "runs"
    monkeypatch.setenv("STUDIES_TEST_USR2_AT_EPOCH", "1")  # SLURM's time-limit signal in epoch 1, first attempt
    assert studies("run", study, "--runs-root", runs, "--launcher", "slurm", "--profile", slurm) == 0
    _wait(runs, ["first/seed0", "first/seed1", "second/seed0", "second/seed1"])
    slurm_dir = tmp_path / "slurm"
    first, second = _submissions(slurm_dir)
    # one job array per stage, the second after the first's runs, GPUs = tasks per node, USR2 before the limit
    assert first["options"]["array"] == "0-1%2" and second["options"]["array"] == "0-1%2"
    assert first["options"]["ntasks-per-node"] == "2" and first["options"]["gpus-per-node"] == "2"
    assert second["options"]["ntasks-per-node"] == "1" and second["options"]["gpus-per-node"] == "1"
    assert "dependency" not in first["options"]
    assert second["options"]["dependency"] == f"afterok:{first['id']}_0:{first['id']}_1"
    assert first["options"]["signal"] == "USR2@90" and first["options"]["time"] == "5"
    assert first["options"]["partition"] == "debug" and first["options"]["account"] == "lab"
    assert first["options"]["mail-type"] == "FAIL" and first["options"]["job-name"] == "tiny.first"
    # srun gave each task of the 2-GPU runs its rank, and Lightning built its 2-process group from them
    tasks = [json.loads(line) for line in (slurm_dir / "srun.jsonl").read_text().splitlines()]
    ddp = [t for t in tasks if t["SLURM_ARRAY_JOB_ID"] == first["id"]]
    assert sorted((t["SLURM_ARRAY_TASK_ID"], t["SLURM_PROCID"], t["SLURM_LOCALID"]) for t in ddp) == [
        ("0", "0", "0"), ("0", "1", "1"), ("1", "0", "0"), ("1", "1", "1")]
    assert all(t["SLURM_NTASKS"] == "2" and t["SLURM_NODEID"] == "0" for t in ddp)
    folder = runs / "tiny" / "submitit"
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (folder / f"{first['id']}_0_1_log.err").read_text()
    # the requeue: submitit caught USR2, requeued each second-stage job once, and the rerun resumed at epoch 1
    requeued = (slurm_dir / "requeue.log").read_text().split()
    assert sorted(requeued) == [f"{second['id']}_0", f"{second['id']}_1"]
    starts = (tmp_path / "starts.log").read_text().splitlines()
    for seed in (0, 1):
        run_dir = runs / "tiny" / f"second/seed{seed}"
        assert [ln.split()[1] for ln in starts if ln.split()[0] == str(run_dir)] == ["0", "1"]
        assert json.loads((run_dir / "metrics" / "fit.json").read_text())["epoch"] in (1, 2)
        assert "test/acc1" in metrics(run_dir, "test")
        # one W&B run across the requeue: both attempts logged under run.json's id
        wandb_id = json.loads((run_dir / "run.json").read_text())["wandb_id"]
        attempts = [p.name for p in (run_dir / "wandb").glob("offline-run-*")]
        assert len(attempts) >= 2 and all(a.endswith(wandb_id) for a in attempts), attempts
    capsys.readouterr()
    assert studies("status", study, "--runs-root", runs) == 0
    assert capsys.readouterr().out.count("  done") == 4


@pytest.mark.slow
def test_a_preempted_run_is_resubmitted_alone_and_resumes(slurm: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    def edit(d: dict) -> None:
        d["seeds"] = [0]
        d["claims"]["second_not_much_worse"]["min_seeds"] = 1

    study = tiny_study(tmp_path / "tiny.yaml", edit)
    runs = tmp_path / "runs"
    monkeypatch.setenv("STUDIES_TEST_EXIT_AT_EPOCH", "1")  # killed in epoch 1 ...
    monkeypatch.setenv("STUB_SLURM_FAIL_STATE", "PREEMPTED")  # ... which SLURM reports as a preemption
    assert studies("run", study, "--runs-root", runs, "--launcher", "slurm", "--profile", slurm) == 0
    slurm_dir = tmp_path / "slurm"
    jobs = _wait_states(slurm_dir, 2)
    assert [t["state"] for t in jobs["1000"]["tasks"].values()] == ["PREEMPTED"]
    capsys.readouterr()
    assert studies("status", study, "--runs-root", runs) == 0
    out = capsys.readouterr().out
    assert "first/seed0   preempted (job 1000)" in out and "DependencyNeverSatisfied" in out, out
    monkeypatch.delenv("STUDIES_TEST_EXIT_AT_EPOCH")
    monkeypatch.delenv("STUB_SLURM_FAIL_STATE")
    assert studies("run", study, "--runs-root", runs, "--launcher", "slurm", "--profile", slurm) == 0
    _wait(runs, ["first/seed0", "second/seed0"])
    subs = _submissions(slurm_dir)
    assert len(subs) == 4 and subs[3]["options"]["dependency"] == f"afterok:{subs[2]['id']}"
    assert json.loads((slurm_dir / "jobs" / "1001.json").read_text())["tasks"]["-"]["state"] == "CANCELLED"
    starts = [ln.split() for ln in (tmp_path / "starts.log").read_text().splitlines()]
    assert [e for d, e in starts if d == str(runs / "tiny" / "first" / "seed0")] == ["0", "1"]  # resumed
    # a third run submits nothing: everything is done
    capsys.readouterr()
    assert studies("run", study, "--runs-root", runs, "--launcher", "slurm", "--profile", slurm) == 0
    assert "0 run(s) submitted, 0 already queued, 2 done" in capsys.readouterr().out
    assert len(_submissions(slurm_dir)) == 4


# ------------------------------------------------------------------------------------------- default tier (fast)
def test_submission_of_a_busy_cluster_and_no_double_submission(slurm: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    """Nothing runs (STUB_SLURM_HOLD): what submitit submits, the job records, status, and a second `run` that
    submits nothing while the jobs are queued."""
    def edit(d: dict) -> None:
        d["stages"]["first"]["gpus"] = 2

    study = tiny_study(tmp_path / "tiny.yaml", edit)
    runs = tmp_path / "runs"
    monkeypatch.setenv("STUB_SLURM_HOLD", "1")
    assert studies("run", study, "--runs-root", runs, "--launcher", "slurm", "--profile", slurm,
                   "--partition", "big", "--max-time-min", "3") == 0
    slurm_dir = tmp_path / "slurm"
    first, second = _submissions(slurm_dir)
    assert first["options"]["array"] == "0-1%2" and second["options"]["array"] == "0-1%2"  # one array per stage
    assert (first["options"]["ntasks-per-node"], first["options"]["gpus-per-node"]) == ("2", "2")
    assert (second["options"]["ntasks-per-node"], second["options"]["gpus-per-node"]) == ("1", "1")
    assert second["options"]["dependency"] == f"afterok:{first['id']}_0:{first['id']}_1"
    assert first["options"]["signal"] == "USR2@90"  # submitit's requeue signal, 90 s before the limit
    assert first["options"]["time"] == "3" and first["options"]["partition"] == "big"  # flags beat the profile
    assert "srun" in first["script"] and "submitit.core._submit" in first["script"]
    # the jobs get main.py's identity-free placement arguments: Lightning's DDP over the job's tasks
    import pickle

    job = pickle.loads((runs / "tiny" / "submitit" / f"{first['id']}_0_submitted.pkl").read_bytes())
    fit = job.function.steps[0]
    assert fit[:1] == ["fit"] and fit[-4:] == ["--trainer.accelerator=cpu", "--trainer.devices=2",
                                               "--trainer.num_nodes=1", "--trainer.strategy=ddp"]
    assert "--ckpt_path" in fit and fit[fit.index("--ckpt_path") + 1] == "auto"
    records = json.loads((runs / "tiny" / "slurm_jobs.json").read_text())
    assert records["second/seed1"]["job_id"] == f"{second['id']}_1"
    capsys.readouterr()
    assert studies("status", study, "--runs-root", runs) == 0
    out = capsys.readouterr().out
    assert out.count("pending (job") == 4 and "Priority" in out, out
    assert studies("run", study, "--runs-root", runs, "--launcher", "slurm", "--profile", slurm) == 0
    assert "0 run(s) submitted, 4 already queued" in capsys.readouterr().out
    assert len(_submissions(slurm_dir)) == 2


def _err(capsys: pytest.CaptureFixture, *args: object) -> str:
    capsys.readouterr()
    assert studies(*args) == 1
    return " ".join(capsys.readouterr().err.split())


def test_bad_profiles_gpus_and_a_missing_sbatch(slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    study = tiny_study(tmp_path / "tiny.yaml", lambda d: d["stages"]["first"].update(gpus=4))
    base = ("run", study, "--runs-root", tmp_path / "runs", "--launcher", "slurm", "--profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus_per_node: 8\n")
    err = _err(capsys, *base, bad)
    assert str(bad) in err and "'partition'" in err and "--partition" in err
    bad.write_text("partition: gpu\ngpu_per_node: 8\n")
    err = _err(capsys, *base, bad)
    assert str(bad) in err and "'gpu_per_node'" in err and "Did you mean 'gpus_per_node'?" in err
    err = _err(capsys, *base, slurm)
    assert str(study) in err and "stages.first.gpus" in err and "gpus_per_node: 2" in err
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(STUBS)))
    err = _err(capsys, *base, slurm, "--gpus-per-node", "4")
    assert "sbatch" in err and "--launcher local" in err
    assert not (tmp_path / "slurm").exists()


def test_gpu_hours_of_a_step_budget(tmp_path: Path) -> None:
    """A recipe with max_steps and max_epochs: -1 (the adding task): max_steps x batch_size samples."""
    from studies import cost
    from studies.spec import load_study

    def steps(d: dict) -> None:
        d["seeds"] = [0]
        d["stages"] = {"fptt": {"recipe": "recipes/fptt_lstm_adding_t200.yaml"}}
        d["metrics"] = {"mse": {"stage": "fptt", "key": "test/loss"}}
        d["claims"] = {}

    study = load_study(tiny_study(tmp_path / "s.yaml", steps))
    measured = tmp_path / "tp.json"
    measured.write_text(json.dumps({"rows": [{"recipe": "fptt_lstm_adding_t200", "images_per_s": 4000.0}]}))
    (c,) = cost.estimate(study, {"fptt": 1}, [str(measured)])
    # 10,000 steps x 128 sequences = 1.28M sequences (10 passes over 128,000) at 4,000/s = 320 s
    assert c.epochs == pytest.approx(10.0) and c.gpu_hours == pytest.approx(10_000 * 128 / 4000 / 3600)  # nothing was submitted


def test_a_wrong_data_layout_is_refused_before_submitting(slurm: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from tests import fakedata

    def cifar(d: dict) -> None:
        d["seeds"] = [0]
        d["stages"] = {"base": {"recipe": "recipes/baseline_resnet56_cifar10.yaml"}}
        d["metrics"] = {"acc": {"stage": "base", "key": "test/acc1"}}
        d["claims"] = {}

    study = tiny_study(tmp_path / "cifar.yaml", cifar)
    data = Path(fakedata.write_cifar10(tmp_path / "cifar"))
    (data / "cifar-10-batches-py" / "data_batch_3").unlink()
    profile = tmp_path / "p.yaml"
    profile.write_text(slurm.read_text() + f"data_dirs: {{CIFAR10DataModule: {data}}}\n")
    args = ("run", study, "--runs-root", tmp_path / "runs", "--launcher", "slurm", "--profile", profile)
    err = _err(capsys, *args)
    assert "data_batch_3" in err and str(data) in err and "data_dirs.CIFAR10DataModule" in err
    assert "--no-data-check" in err
    assert not (tmp_path / "slurm").exists()
    # ImageNet: the class folders are counted
    from studies import datacheck
    from studies.spec import load_study

    def imagenet(d: dict) -> None:
        cifar(d)
        d["stages"]["base"]["recipe"] = "recipes/baseline_resnet50_imagenet.yaml"

    inet = Path(fakedata.write_imagenet(tmp_path / "inet", num_classes=3, per_class=1))
    s = load_study(tiny_study(tmp_path / "inet.yaml", imagenet))
    with pytest.raises(Exception, match="has 3 class folders, not 1000"):
        datacheck.check(s, ["base"], {"ImageNetDataModule": str(inet)})


def test_dry_run_gpu_hours_match_a_hand_calculation(slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    from studies import cost
    from studies.spec import load_study

    def two(d: dict) -> None:
        d["seeds"] = [0, 1, 2]
        d["stages"] = {"base": {"recipe": "recipes/baseline_resnet56_cifar10.yaml", "gpus": 2},
                       "pruned": {"recipe": "recipes/prune_resnet56_cifar10_b.yaml", "init_from": "base"}}
        d["metrics"] = {"acc": {"stage": "base", "key": "test/acc1"}}
        d["claims"] = {}

    study = load_study(tiny_study(tmp_path / "c.yaml", two))
    measured = tmp_path / "tp.json"
    measured.write_text(json.dumps({"device": "GPU X", "rows": [
        {"recipe": "baseline_resnet56_cifar10", "images_per_s": 2500.0},
        {"recipe": "baseline_resnet56_cifar10", "images_per_s": 2000.0},  # the lower one counts
        {"recipe": "prune_resnet56_cifar10_b", "images_per_s": 1600.0}]}))
    costs = {c.stage: c for c in cost.estimate(study, {"base": 3, "pruned": 3}, [str(measured)])}
    # 164 epochs x 50,000 images / 2,000 images/s = 4,100 s = 1.1389 GPU-h per run; 3 seeds
    assert costs["base"].gpu_hours == pytest.approx(3 * 164 * 50_000 / 2000 / 3600)
    # retraining: 40 epochs x 50,000 / 1,600 = 1,250 s per run
    assert costs["pruned"].gpu_hours == pytest.approx(3 * 40 * 50_000 / 1600 / 3600)
    text = cost.format_costs(list(costs.values()))
    assert "base: 3 run(s) x 1.14 GPU-h = 3.42 GPU-h" in text and "total: 4.5 GPU-hours" in text
    assert "0.57 h wall per run on 2 GPU(s)" in text
    # the dry run prints the job graph and the estimate, and submits nothing
    monkeypatch.setattr(cost, "THROUGHPUT_FILES", (str(measured),))
    capsys.readouterr()
    assert studies("run", tmp_path / "c.yaml", "--runs-root", tmp_path / "runs", "--launcher", "slurm",
                   "--profile", slurm, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "base: 3 GPU job(s) x 2 GPU(s)" in out and "pruned: 3 GPU job(s) x 1 GPU(s)" in out
    assert "after base" in out and "total: 4.5 GPU-hours" in out
    assert not (tmp_path / "slurm").exists()


def test_dry_run_costs_evaluation_only_stages_at_zero_and_knows_mnist(tmp_path: Path) -> None:
    """A fit: false stage trains nothing (0 GPU-h, said so); PaddedMNIST counts MNIST's 60,000 training images, or
    its train_subset; an AffineVAE that searches poses is flagged as a lower bound."""
    from studies import cost
    from studies.spec import load_study

    def chain(d: dict) -> None:
        d["seeds"] = [0]
        d["stages"] = {"vae": {"recipe": "recipes/avae_vae2d_mnist40_l8_rot.yaml",
                               "overrides": {"data.init_args.train_subset": 6000}},
                       "sweep": {"recipe": "recipes/avae_vae2d_mnist40_l8_rot.yaml", "init_from": "vae",
                                 "fit": False, "validate": True}}
        d["metrics"] = {"loss": {"stage": "vae", "key": "test/loss"}}
        d["claims"] = {}

    study = load_study(tiny_study(tmp_path / "c.yaml", chain))
    costs = {c.stage: c for c in cost.estimate(study, {"vae": 1, "sweep": 1}, [])}
    assert costs["vae"].images == 6000 and costs["vae"].epochs == 90
    assert costs["vae"].gpu_hours == pytest.approx(90 * 6000 / costs["vae"].images_per_s / 3600)
    assert "lower bound" in costs["vae"].source
    assert costs["sweep"].gpu_hours == 0.0 and "evaluation only" in costs["sweep"].source
    text = cost.format_costs(list(costs.values()))
    assert "sweep: 1 run(s) x 0 GPU-h (evaluation only" in text and "without" not in text
