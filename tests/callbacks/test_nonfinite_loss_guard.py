"""NonFiniteLossGuard: no non-finite checkpoint ever reaches disk, NaN losses (training or validation) stop the run,
the message names this run's newest good checkpoint, and the loss flag costs no host sync between its reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from callbacks.nonfinite_loss_guard import NonFiniteLossError, NonFiniteLossGuard
from main import cli_main
from tests.ddp import REPO

QUICK = "recipes/quickstart.yaml"


def quick(runs_root: str, *extra: str, epochs: int = 3) -> list[str]:
    return ["fit", "--config", QUICK, f"--runs_root={runs_root}", f"--trainer.max_epochs={epochs}",
            "--trainer.enable_progress_bar=false", "--model.init_args.log_images=false", *extra]


def stop_message(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 1
    return capsys.readouterr().err


def all_finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_huge_learning_rate_leaves_no_nonfinite_checkpoint(runs_root, capsys):
    """The reported case: lr=1e6 sends the weights (and BatchNorm statistics) to inf through finite losses."""
    err = stop_message(quick(runs_root, "--model.init_args.optimizer.init_args.lr=1e6",
                             "--trainer.limit_train_batches=2"), capsys)
    ckpts = list((Path(runs_root) / "quickstart").rglob("*.ckpt"))
    assert all(all_finite(p) for p in ckpts)  # nothing non-finite on disk
    if ckpts:
        named = [str(p) for p in ckpts if str(p) in err]
        assert named, err  # the message names a checkpoint that exists and is finite
    else:
        assert "No checkpoint of this run had passed" in err


def test_weights_that_go_nonfinite_through_finite_losses_are_caught_at_the_save(runs_root, capsys):
    err = stop_message(quick(runs_root, "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=0",
                             "--trainer.callbacks+=tests.probes.Poison", "--trainer.callbacks.at_epoch=1"), capsys)
    last = Path(runs_root) / "quickstart" / "checkpoints" / "last.ckpt"
    assert "although every checked loss was finite" in err and "running_var" in err
    assert f"newest checkpoint of this run that passed the finiteness check is {last}" in err
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 3 and all_finite(last)  # epoch 0's: epoch 1's save was refused
    assert checkpoint["nonfinite_guard"]["finite"] is True  # the check is recorded in the file


def test_nonfinite_validation_loss_stops_the_run(runs_root, capsys):
    # NaN running variances from the start of epoch 1: training (batch statistics) stays finite, validation not
    err = stop_message(quick(runs_root, "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
                             "--trainer.callbacks+=tests.probes.Poison", "--trainer.callbacks.at_epoch=1",
                             "--trainer.callbacks.when=train_epoch_start", "--trainer.callbacks.value=.nan"), capsys)
    assert "validation loss" in err and "val/loss" in err
    last = Path(runs_root) / "quickstart" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3 and all_finite(last)


def test_resume_refuses_an_unchecked_checkpoint_with_nonfinite_values(runs_root, tmp_path, capsys):
    cli_main(quick(runs_root, "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", epochs=1))
    import wandb

    wandb.finish()
    checkpoint = torch.load(Path(runs_root) / "quickstart" / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["nonfinite_guard"]  # written without the guard
    next(t for t in checkpoint["state_dict"].values() if t.is_floating_point()).fill_(float("nan"))
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    err = stop_message(quick(runs_root, f"--ckpt_path={bad}", "--run_name=again", epochs=2), capsys)
    assert "NaN/inf" in err and "cannot continue" in err


class Tiny(pl.LightningModule):
    def __init__(self, nan_at: int = -1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        return loss * float("nan") if self.global_step == self.nan_at else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)),
                      batch_size=4)


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpts"), save_last=True)
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[NonFiniteLossGuard(), ckpt], default_root_dir=str(tmp_path), **kwargs)


def test_never_names_a_checkpoint_of_another_run(tmp_path):
    trainer(tmp_path, max_epochs=1).fit(Tiny(), loader())  # an earlier, unrelated run in the same folder
    assert (tmp_path / "ckpts" / "last.ckpt").is_file()
    with pytest.raises(NonFiniteLossError) as exc:
        trainer(tmp_path, max_epochs=2, log_every_n_steps=5).fit(Tiny(nan_at=6), loader())
    message = str(exc.value)
    assert "No checkpoint of this run had passed" in message and "last.ckpt" not in message
    assert "first at global step 6" in message


def test_the_loss_flag_is_read_only_at_logging_steps(tmp_path, monkeypatch):
    """No host-device sync from the guard between reads: count every way a tensor's value reaches the host."""
    reads: list[int] = []
    state = {"step": 0}
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, **kwargs):
            reads.append(state["step"])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)

    class Step(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            state["step"] = trainer.global_step + 1  # the step this batch produces

    guard = NonFiniteLossGuard()
    t = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, max_steps=50, log_every_n_steps=10, callbacks=[Step(), guard])
    with monkeypatch.context():
        t.fit(Tiny(), loader(n=400))
    outside = sorted({s for s in reads if s % 10})
    assert t.global_step == 50
    assert not outside, f"host reads at steps {outside}"
    assert {s for s in reads if s} <= {10, 20, 30, 40, 50}  # the reads that happen are at logging steps


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_rank_sees_nan(tmp_path):
    """NaN on rank 1 only: the flag is all-reduced, so both ranks stop (no hang) and no checkpoint is bad."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO),
           "NAN_RANK": "1"}
    env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "main.py", *quick(str(tmp_path / "runs"), "--trainer.limit_train_batches=4",
                                             "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=2",
                                             "--trainer.callbacks+=tests.probes.NaNInjector",
                                             "--trainer.callbacks.at_step=5"),
           "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "became NaN or infinite" in proc.stderr
    for path in (tmp_path / "runs").rglob("*.ckpt"):
        assert all_finite(path)
