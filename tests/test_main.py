"""main.py: run layout, W&B (real package, offline), chaining with init_from, report, resume, clear errors."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
import torch
import wandb
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from main import RecipeError, cli_main, resolve_checkpoint
from tests.probes import LossRecorder, params_digest

QUICK = "recipes/quickstart.yaml"


def quick_args(runs_root: str, *extra: str, epochs: int = 1) -> list[str]:
    return ["fit", "--config", QUICK, f"--runs_root={runs_root}", f"--trainer.max_epochs={epochs}",
            "--trainer.enable_progress_bar=false", *extra]


def callback_of(cli, cls):
    return next(c for c in cli.trainer.callbacks if isinstance(c, cls))


def test_quickstart_run_layout_wandb_and_rerun(runs_root, capsys):
    cli = cli_main(quick_args(runs_root))
    run_dir = Path(runs_root) / "quickstart"
    # the full resolved config beside the checkpoints
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["init_args"]["net"] == "small_cnn"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # the live W&B run (real package, offline): config, metrics and efficiency summary
    run = wandb.run
    assert run is not None and run.offline
    assert run.config["model"]["init_args"]["net"] == "small_cnn"
    assert run.config["trainer"]["max_epochs"] == 1
    assert run.config["model_hparams"]["num_classes"] == 10  # linked from the datamodule
    assert run.config["model_hparams"]["input_shape"] == [1, 8, 8]
    assert "val/acc1" in run.summary.keys()
    assert run.summary["efficiency/fit_end/params"] == sum(p.numel() for p in cli.model.parameters())
    assert run.summary["efficiency/fit_end/macs"] > 0
    # the offline run directory was written, with the logged image
    offline = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    assert len(offline) == 1
    assert glob.glob(os.path.join(offline[0], "run-*.wandb"))
    assert glob.glob(os.path.join(offline[0], "files", "media", "images", "**", "*.png"), recursive=True)
    out = capsys.readouterr().out
    assert "Efficiency report (fit_end)" in out
    assert f"wandb sync {offline[0]}" in out
    # one end-of-run sync hint (wandb's own is kept quiet), naming `wandb login` where no credentials exist
    assert out.count("wandb sync") == 1 and "wandb login" in out
    # the final metrics in plain JSON and the run's identity with its W&B id
    metrics = json.loads((run_dir / "metrics" / "fit.json").read_text())
    assert metrics["metrics"]["val/acc1"] == pytest.approx(float(run.summary["val/acc1"]))
    assert json.loads((run_dir / "run.json").read_text())["wandb_id"] == run.id
    wandb.finish()


def test_rerun_refuses_then_overwrite_moves_the_old_run_aside(runs_root, capsys):
    """A plain rerun never overwrites a run's checkpoint: it refuses; --overwrite moves the old run aside."""
    cli_main(quick_args(runs_root, "--trainer.limit_train_batches=2", "--model.init_args.log_images=false"))
    wandb.finish()
    run_dir = Path(runs_root) / "quickstart"
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(SystemExit) as exc:
        cli_main(quick_args(runs_root, "--trainer.limit_train_batches=2"))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert str(run_dir) in err and "--ckpt_path last" in err and "--run_name" in err and "--overwrite" in err
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert len(glob.glob(str(run_dir / "wandb" / "offline-run-*"))) == 1  # the refused run wrote nothing
    cli_main(quick_args(runs_root, "--trainer.limit_train_batches=2", "--overwrite=true",
                        "--model.init_args.log_images=false"))
    aside = glob.glob(str(Path(runs_root) / "quickstart.old-*"))
    assert len(aside) == 1
    assert (Path(aside[0]) / "checkpoints" / "last.ckpt").read_bytes() == before  # kept, never deleted
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_checkpointing_off_trains_without_the_default_checkpoint(runs_root):
    """--trainer.enable_checkpointing=false is honoured: no default ModelCheckpoint is added, nothing is saved."""
    cli = cli_main(quick_args(runs_root, "--trainer.enable_checkpointing=false", "--trainer.logger=false"))
    assert cli.trainer.global_step > 0
    assert not any(isinstance(c, ModelCheckpoint) for c in cli.trainer.callbacks)
    assert not (Path(runs_root) / "quickstart" / "checkpoints").exists()


def test_model_gets_num_classes_and_input_shape_from_data(runs_root):
    cli = cli_main(["--config", "recipes/baseline_resnet56_cifar10.yaml", f"--runs_root={runs_root}",
                    "--data.class_path=datamodules.cifar.CIFAR100DataModule"], run=False)
    assert cli.model.hparams.num_classes == 100
    assert cli.model.net.fc.out_features == 100
    assert tuple(cli.model.example_input_array.shape) == (1, 3, 32, 32)


def test_resume_last_continues_exactly(runs_root, tmp_path):
    """--ckpt_path last resumes the run: the next step's loss equals the uninterrupted run's."""
    full = cli_main(quick_args(str(tmp_path / "a"), "--trainer.callbacks+=tests.probes.LossRecorder", epochs=2))
    full_losses = callback_of(full, LossRecorder).losses
    wandb.finish()
    first = cli_main(quick_args(runs_root, epochs=1))
    steps_per_epoch = first.trainer.global_step
    wandb.finish()
    resumed = cli_main(quick_args(runs_root, "--trainer.callbacks+=tests.probes.LossRecorder",
                                  "--ckpt_path=last", epochs=2))
    resumed_losses = callback_of(resumed, LossRecorder).losses
    assert min(resumed_losses) == steps_per_epoch  # it continued, it did not restart
    for step in (steps_per_epoch, steps_per_epoch + 1, 2 * steps_per_epoch - 1):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-5, abs=1e-7), step


def test_init_from_chains_two_recipes(tmp_path, runs_root):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    base = yaml.safe_load(Path(QUICK).read_text())
    base["trainer"]["max_epochs"] = 1
    (recipes / "stage1.yaml").write_text(yaml.safe_dump(base))
    stage2 = dict(base, init_from="stage1")
    stage2["model"] = {**base["model"], "init_args": {**base["model"]["init_args"], "log_images": False}}
    (recipes / "stage2.yaml").write_text("# Prerequisites: stage1.yaml\n" + yaml.safe_dump(stage2))

    cli_main(["fit", "--config", str(recipes / "stage1.yaml"), f"--runs_root={runs_root}",
              "--trainer.enable_progress_bar=false"])
    wandb.finish()
    ckpt = Path(runs_root) / "stage1" / "checkpoints" / "last.ckpt"
    trained = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]

    cli = cli_main(["fit", "--config", str(recipes / "stage2.yaml"), f"--runs_root={runs_root}",
                    "--trainer.enable_progress_bar=false", "--trainer.callbacks+=tests.probes.LossRecorder"])
    probe = callback_of(cli, LossRecorder)
    fresh = type(cli.model)(**{k: v for k, v in cli.model.hparams.items() if not k.startswith("_")})
    fresh.load_state_dict(trained)
    assert probe.start_digest == params_digest(fresh)
    assert (Path(runs_root) / "stage2" / "checkpoints" / "last.ckpt").is_file()


def test_init_from_missing_run_names_the_recipe(runs_root):
    with pytest.raises(RecipeError, match=r"recipes/baseline_x\.yaml"):
        resolve_checkpoint("baseline_x", runs_root)


@pytest.mark.parametrize(
    ("recipe", "macs", "params", "params_digits"),
    [  # the paper's Table 1 values, at the precision it prints them
        ("recipes/baseline_vgg16_cifar10.yaml", 3.13e8, 1.5e7, 2),
        ("recipes/baseline_resnet56_cifar10.yaml", 1.25e8, 8.5e5, 2),
        ("recipes/baseline_resnet34_imagenet.yaml", 3.64e9, 2.16e7, 3),
    ],
)
def test_report_prints_and_writes_paper_counts(recipe, macs, params, params_digits, tmp_path, runs_root, capsys):
    out = tmp_path / "report.json"
    cli_main(["report", "--config", recipe, f"--runs_root={runs_root}", f"--json={out}"])
    got = json.loads(out.read_text())
    assert float(f"{got['macs']:.3g}") == macs
    assert float(f"{got['params']:.{params_digits}g}") == params
    assert "MACs per input (li2017)" in capsys.readouterr().out
    assert not (Path(runs_root)).exists() or not list(Path(runs_root).rglob("*.ckpt"))  # no training happened


def test_report_convention_all(tmp_path, runs_root):
    out = tmp_path / "r.json"
    cli_main(["report", "--config", "recipes/baseline_resnet34_imagenet.yaml", f"--runs_root={runs_root}",
              f"--json={out}", "--convention=all"])
    got = json.loads(out.read_text())
    assert got["macs"] == pytest.approx(3.67e9, rel=0.01)  # all convs incl. shortcuts, fc, pooling adds
    assert got["params"] == pytest.approx(21.8e6, rel=0.01)


def test_report_on_a_recipe_with_its_own_model_checkpoint(tmp_path, runs_root):
    """The landscape recipes add a ModelCheckpoint of their own; a report (which saves nothing) still counts them."""
    out = tmp_path / "r.json"
    cli_main(["report", "--config", "recipes/landscape_resnet20_cifar10.yaml", f"--runs_root={runs_root}",
              f"--json={out}"])
    assert json.loads(out.read_text())["macs"] == pytest.approx(4.06e7, rel=0.01)


def test_report_of_a_distillation_recipe_counts_the_student_only(tmp_path, runs_root, capsys):
    """DiSK declares its frozen teacher and its guide training-only (not_deployed): they are named and left out."""
    from nets import create_net

    out = tmp_path / "r.json"
    cli_main(["report", "--config", "recipes/glyphs/disk_resnet10_xxxs_glyphs_t_resnet10_s.yaml",
              f"--runs_root={runs_root}", f"--json={out}"])
    got = json.loads(out.read_text())
    student = create_net("resnet10_xxxs", num_classes=20, in_channels=1)
    assert got["params_all"] == sum(p.numel() for p in student.parameters())
    assert got["not_counted"] == ["guide", "teacher"]
    assert "not counted (training-only parts, not deployed): teacher, guide" in capsys.readouterr().out


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(runs_root, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(quick_args(runs_root, "--trainer.callbacks+=tests.probes.NaNInjector",
                            "--trainer.callbacks.at_step=30", epochs=3))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "became NaN or infinite, first at global step 30" in err and "last.ckpt" in err
    ckpt = torch.load(Path(runs_root) / "quickstart" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 23  # the end of epoch 1: the last good state
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


def test_wrong_yaml_key_names_the_key(tmp_path, capsys):
    bad = yaml.safe_load(Path(QUICK).read_text())
    bad["model"]["init_args"]["nett"] = "resnet20"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(path)])
    assert exc.value.code != 0
    assert "nett" in capsys.readouterr().err


def test_missing_config_file_names_the_path(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", "recipes/does_not_exist.yaml"])
    assert "recipes/does_not_exist.yaml" in capsys.readouterr().err


def test_missing_dataset_dir_gives_clear_error(tmp_path, runs_root, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", "recipes/baseline_resnet56_cifar10.yaml", f"--runs_root={runs_root}",
                  f"--data.init_args.data_dir={missing}", "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu"])
    assert exc.value.code == 1
    assert str(missing) in capsys.readouterr().err
    assert not glob.glob(str(Path(runs_root) / "**" / "offline-run-*"), recursive=True)  # no W&B run was made


def test_checkpoint_of_another_architecture_gives_clear_error(runs_root, capsys):
    """(With --ckpt_path, LightningCLI rebuilds the model from the checkpoint's own hyperparameters, so the
    mismatch can arise when weights are taken into another recipe's model with init_from.)"""
    cli_main(quick_args(runs_root))
    wandb.finish()
    ckpt = Path(runs_root) / "quickstart" / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exc:
        cli_main(quick_args(runs_root, "--model.init_args.net_kwargs={widths: [8, 16]}", f"--init_from={ckpt}",
                            "--run_name=other"))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "another architecture" in err and str(ckpt) in err
