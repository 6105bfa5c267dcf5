"""main.py: one-paragraph errors for config mistakes and unreadable checkpoints; safe (weights-only) loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import wandb
import yaml

from main import cli_main, load_checkpoint, RecipeError

QUICK = "recipes/quickstart.yaml"


def error_of(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("error:") == 1
    return err


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_misspelt_trainer_key_in_yaml_names_file_line_and_match(tmp_path, capsys):
    bad = write(tmp_path, "bad.yaml", "trainer:\n  accelerator: cpu\n  max_epoch: 1\n")
    err = error_of(["fit", "--config", QUICK, "--config", str(bad)], capsys)
    assert len(err.splitlines()) <= 5
    assert f"{bad} line 3" in err and "`trainer.max_epoch`" in err and "did you mean `max_epochs`?" in err.lower()


def test_misspelt_model_argument_suggests_the_real_one(tmp_path, capsys):
    recipe = yaml.safe_load(Path(QUICK).read_text())
    recipe["model"]["init_args"]["nett"] = recipe["model"]["init_args"].pop("net")
    bad = write(tmp_path, "nett.yaml", yaml.safe_dump(recipe, sort_keys=False))
    err = error_of(["fit", "--config", str(bad)], capsys)
    assert len(err.splitlines()) <= 5
    assert "`model.init_args.nett`" in err and str(bad) in err and "Did you mean `net`?" in err
    assert "ImageClassifier" in err  # the accepted keys are those of the model's class


def test_misspelt_optimizer_argument_on_the_command_line(capsys):
    err = error_of(["fit", "--config", QUICK, "--model.init_args.optimizer.init_args.momentm=0.5"], capsys)
    assert len(err.splitlines()) <= 5
    assert "momentm" in err and "on the command line" in err and "Did you mean `momentum`?" in err
    assert "torch.optim.SGD" in err


def test_abbreviated_option_is_not_silently_accepted(capsys):
    err = error_of(["fit", "--config", QUICK, "--trainer.max_epoch=1"], capsys)
    assert "max_epoch" in err and "max_epochs" in err


@pytest.mark.parametrize(("text", "words"), [("", "is empty"), ("- a\n- b\n", "not a mapping"),
                                             ("trainer: [1, 2\n", "not valid YAML")])
def test_empty_list_or_broken_yaml(tmp_path, capsys, text, words):
    path = write(tmp_path, "r.yaml", text)
    err = error_of(["fit", "--config", str(path)], capsys)
    assert str(path) in err and words in err


def test_help_keeps_the_full_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--help"])
    assert exc.value.code == 0
    assert "--trainer.max_epochs" in capsys.readouterr().out


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    cli_main(["fit", "--config", QUICK, f"--runs_root={root}", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
              "--model.init_args.log_images=false"])
    wandb.finish()
    return root / "quickstart" / "checkpoints" / "last.ckpt"


def test_truncated_checkpoint(tmp_path, good_ckpt, capsys):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good_ckpt.read_bytes()[:5000])
    err = error_of(["fit", "--config", QUICK, f"--runs_root={tmp_path}", f"--init_from={cut}"], capsys)
    assert str(cut) in err and "truncated" in err
    err = error_of(["fit", "--config", QUICK, f"--runs_root={tmp_path}", f"--ckpt_path={cut}"], capsys)
    assert str(cut) in err and "truncated" in err


def test_non_lightning_and_other_version_checkpoints(tmp_path, good_ckpt, capsys):
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)
    err = error_of(["fit", "--config", QUICK, f"--runs_root={tmp_path}", f"--init_from={plain}"], capsys)
    assert "not a Lightning checkpoint" in err and "weights" in err
    old = tmp_path / "old.ckpt"
    checkpoint = torch.load(good_ckpt, weights_only=True)
    checkpoint["pytorch-lightning_version"] = "1.9.5"
    torch.save(checkpoint, old)
    err = error_of(["fit", "--config", QUICK, f"--runs_root={tmp_path}", f"--ckpt_path={old}"], capsys)
    assert "Lightning 1.9.5" in err and "upgrade_checkpoint" in err


class _Payload:
    """Unpickling this runs a command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_runs_code_is_refused_and_its_code_does_not_run(tmp_path, good_ckpt, capsys):
    marker = tmp_path / "pwned"
    checkpoint = torch.load(good_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = _Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    err = error_of(["fit", "--config", QUICK, f"--runs_root={tmp_path}", f"--init_from={evil}"], capsys)
    assert str(evil) in err and "posix.system" in err and "--trust_checkpoint" in err, err
    with pytest.raises(RecipeError, match="trust_checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_the_project_checkpoint_loads_weights_only(good_ckpt):
    checkpoint = load_checkpoint(good_ckpt)
    assert "state_dict" in checkpoint and checkpoint["nonfinite_guard"]["finite"] is True
