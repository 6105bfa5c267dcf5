"""main.py run identity: fresh vs resume vs refuse, --ckpt_path last/auto, W&B run continuity, metrics files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wandb
import yaml

from main import cli_main, identity_diff, planned_run, read_run_json, run_identity

QUICK = "recipes/quickstart.yaml"
FAST = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--model.init_args.log_images=false",
        "--trainer.enable_progress_bar=false"]


def quick(runs_root: str, *extra: str, epochs: int = 1, sub: str = "fit") -> list[str]:
    return [sub, "--config", QUICK, f"--runs_root={runs_root}", f"--trainer.max_epochs={epochs}", *FAST, *extra]


def fail(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\nerror:") == 1
    return err


def test_ckpt_path_last_without_a_checkpoint_fails_clearly(runs_root, capsys):
    err = fail(quick(runs_root, "--ckpt_path=last"), capsys)
    assert "has no checkpoint" in err and str(Path(runs_root) / "quickstart") in err
    assert not (Path(runs_root) / "quickstart" / "checkpoints").exists()  # it did not train from scratch


def test_ckpt_path_auto_fresh_then_resume_then_refuse(runs_root, capsys):
    run_dir = Path(runs_root) / "quickstart"
    first = cli_main(quick(runs_root, "--ckpt_path=auto"))  # nothing there: a fresh run
    assert first.trainer.global_step == 3
    record = read_run_json(run_dir)
    assert record["identity"]["trainer"]["max_epochs"] == 1
    wandb_id = record["wandb_id"]
    assert wandb.run.id == wandb_id
    wandb.finish()
    # same identity, more epochs are a different run: refused, naming the differing key
    err = fail(quick(runs_root, "--ckpt_path=auto", epochs=2), capsys)
    assert "`trainer.max_epochs`" in err and "run.json" in err and "--overwrite" in err
    # machine-specific keys do not count: another progress-bar setting and runs on the same identity resume
    resumed = cli_main(quick(runs_root, "--ckpt_path=auto", "--trainer.enable_progress_bar=true"))
    assert resumed.trainer.global_step == 3  # resumed at its end: nothing left to train
    assert wandb.run.id == wandb_id  # the same W&B run continues
    wandb.finish()
    assert read_run_json(run_dir)["wandb_id"] == wandb_id


def test_resume_continues_the_same_wandb_run_and_test_joins_it(runs_root):
    run_dir = Path(runs_root) / "quickstart"
    cli_main(quick(runs_root, epochs=1))
    wandb_id = wandb.run.id
    wandb.finish()
    cli_main(quick(runs_root, "--ckpt_path=last", epochs=2))  # explicit resume with a longer schedule
    assert wandb.run.id == wandb_id
    assert json.loads((run_dir / "metrics" / "fit.json").read_text())["global_step"] == 6
    wandb.finish()
    cli_main(quick(runs_root, "--ckpt_path=last", epochs=2, sub="test"))
    assert wandb.run.id == wandb_id
    wandb.finish()
    test = json.loads((run_dir / "metrics" / "test.json").read_text())
    assert test["ckpt_path"].endswith("last.ckpt") and "test/acc1" in test["metrics"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config.test.yaml").is_file()


def test_planned_run_parses_without_side_effects(tmp_path):
    runs_root = tmp_path / "runs"
    a = planned_run(quick(str(runs_root), "--run_name=x", "--trainer.devices=1"))
    b = planned_run(quick(str(tmp_path / "elsewhere"), "--run_name=x", "--data.init_args.batch_size=32"))
    assert a.run_dir == runs_root / "x"
    assert not runs_root.exists()  # nothing written
    assert "devices" not in a.identity["trainer"] and "runs_root" not in a.identity
    assert identity_diff(a.identity, b.identity) == ["data.init_args.batch_size"]


def test_identity_excludes_machine_keys_at_any_depth():
    config = {"trainer": {"devices": 8, "max_epochs": 3, "logger": {"x": 1}}, "runs_root": "/scratch",
              "data": {"init_args": {"data_dir": "/data", "num_workers": 8, "batch_size": 128}},
              "model": {"init_args": {"lr": 0.1}}, "seed_everything": 1}
    assert run_identity(config) == {"trainer": {"max_epochs": 3}, "data": {"init_args": {"batch_size": 128}},
                                    "model": {"init_args": {"lr": 0.1}}, "seed_everything": 1}


def test_chaining_with_init_from_and_its_refusals(tmp_path, runs_root, capsys):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    base = yaml.safe_load(Path(QUICK).read_text())
    base["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    (recipes / "stage1.yaml").write_text(yaml.safe_dump(base))
    (recipes / "stage2.yaml").write_text(yaml.safe_dump(dict(base, init_from="stage1")))
    args = [f"--runs_root={runs_root}", "--trainer.enable_progress_bar=false"]
    # the stage it names has not run yet
    err = fail(["fit", "--config", str(recipes / "stage2.yaml"), *args], capsys)
    assert "init_from" in err and "stage1" in err
    cli_main(["fit", "--config", str(recipes / "stage1.yaml"), *args])
    wandb.finish()
    cli_main(["fit", "--config", str(recipes / "stage2.yaml"), *args])  # by recipe name
    wandb.finish()
    # rerunning the second stage would overwrite its checkpoint: refused
    err = fail(["fit", "--config", str(recipes / "stage2.yaml"), *args], capsys)
    assert "already holds a checkpoint" in err
    # --ckpt_path auto on the finished stage resumes it (nothing left to do) instead of re-initialising it
    cli = cli_main(["fit", "--config", str(recipes / "stage2.yaml"), *args, "--ckpt_path=auto"])
    assert cli.trainer.global_step == 2


def test_identity_diff_ignores_arguments_added_since_and_compares_list_items():
    """A run stored before the code gained an argument still resumes (the default applies); changed values count,
    inside lists of callbacks too."""
    old = {"model": {"init_args": {"lr": 0.1}}, "trainer": {"callbacks": [{"class_path": "P", "init_args": {"a": 1}}]}}
    new = {"model": {"init_args": {"lr": 0.1, "compile": False}},
           "trainer": {"callbacks": [{"class_path": "P", "init_args": {"a": 1, "added": 3}}]}}
    assert identity_diff(old, new) == []
    new["model"]["init_args"]["lr"] = 0.2
    new["trainer"]["callbacks"][0]["init_args"]["a"] = 2
    assert identity_diff(old, new) == ["model.init_args.lr", "trainer.callbacks.0.init_args.a"]
    new["trainer"]["callbacks"].append({"class_path": "Q"})
    assert "trainer.callbacks" in identity_diff(old, new)


def test_resuming_a_finished_run_writes_the_same_fit_metrics(runs_root):
    """A run killed after its last checkpoint but before metrics/fit.json was written resumes at its end and trains no
    step; its fit.json still holds the metrics of the uninterrupted run (main.KeepRunMetrics)."""
    run_dir = Path(runs_root) / "quickstart"
    cli_main(quick(runs_root, "--trainer.limit_val_batches=2"))
    wandb.finish()
    fit_json = run_dir / "metrics" / "fit.json"
    first = json.loads(fit_json.read_text())["metrics"]
    assert {"val/acc1", "train/loss"} <= set(first), first
    fit_json.unlink()  # the kill came after the checkpoint, before the metrics file
    resumed = cli_main(quick(runs_root, "--ckpt_path=last"))
    wandb.finish()
    assert resumed.trainer.global_step == 3  # nothing left to train
    assert json.loads(fit_json.read_text())["metrics"] == first
