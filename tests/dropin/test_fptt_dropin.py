"""FPTT dropped into someone else's project: a user with no LightningModule of their own writes a script in a
temporary folder and trains an ``nn.GRU`` and their own recurrent cell with ``modules.fptt.FPTT`` (the repository
imported as the installed package), with ``Trainer(accumulate_grad_batches=2)``: fit, validate, resume from the
checkpoint, and ``load_from_checkpoint`` in a fresh Python process (``weights_only=True``, the net passed again).

Inside the user's run a probe on the optimizer checks FPTT's defining update on live training: after each window's
optimizer step, lambda <- lambda - alpha (W - W_bar) and W_bar <- (1 - beta) W_bar + beta W - (beta / alpha) lambda,
one update per window of an accumulated step, and one global step per group of two batches.

Default tier: fp32, accumulation 2, both nets; the training script runs in the test's process (cwd = the user's
folder) and the load in a fresh subprocess. Slow tier: precisions x accumulation, both scripts as subprocesses.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_NETS = '''
"""The user's own code: their recurrent cell, their nets and their data."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nets.rnn_cells import CellAdapter

T, F, C = 13, 2, 3  # 13 steps in 3 parts: windows of 4 steps plus a 1-step remainder window


class ElmanCell(nn.Module):
    """h_t = tanh(W x_t + U h_{t-1} + b), from zeros when no state is given."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.inp = nn.Linear(input_size, hidden_size)
        self.rec = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, h=None):
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        return torch.tanh(self.inp(x) + self.rec(h))


def make_net(kind):
    torch.manual_seed(1)
    if kind == "gru":
        return nn.GRU(F, 6, batch_first=True)
    return CellAdapter(ElmanCell(F, 6), output_size=C)


def loaders(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(28, T, F, generator=g)
    y = torch.arange(28) % C
    x[:, :3, 0] += y[:, None].float()  # the class is visible early in the sequence
    train = DataLoader(TensorDataset(x[:20], y[:20]), batch_size=4)  # 5 batches: groups of 2, 2 and 1
    val = DataLoader(TensorDataset(x[20:], y[20:]), batch_size=4)
    return train, val
'''

TRAIN = '''
import json, sys
import torch
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from modules.fptt import FPTT
from user_nets import C, F, T, loaders, make_net

torch.set_num_threads(1)
precision, accumulate, kinds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
ALPHA, BETA, WINDOWS = 0.1, 0.5, 4
report = {}


class WbarProbe(L.Callback):
    """After every optimizer step, the W_bar / lambda of the previous window follow FPTT's equations."""

    def __init__(self):
        self.steps, self.prev, self.err = 0, None, 0.0

    def on_train_start(self, trainer, pl_module):
        name, w = next(iter(pl_module.net.named_parameters()))
        state = pl_module.fptt

        def hook(optimizer, args, kwargs):
            now = (w.detach().float().clone(), state.bar(name).float().clone(), state.lam(name).float().clone())
            if self.prev is not None and self.steps % WINDOWS != 0:  # same accumulated step as the previous one
                w0, bar0, lam0 = self.prev  # W after the previous window's step; W_bar, lambda before its update
                lam1 = lam0 - ALPHA * (w0 - bar0)
                bar1 = (1 - BETA) * bar0 + BETA * w0 - (BETA / ALPHA) * lam1
                scale = 1.0 + float(bar1.abs().max())
                self.err = max(self.err, float((now[2] - lam1).abs().max()) / scale,
                               float((now[1] - bar1).abs().max()) / scale)
            self.prev = now
            self.steps += 1

        trainer.optimizers[0].register_step_post_hook(hook)


class StartProbe(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = {k: v.detach().float().clone() for k, v in pl_module.state_dict().items()}


def build(kind):
    return FPTT(net=make_net(kind), task="classification", num_classes=C, input_shape=(T, F), parts=3, alpha=ALPHA,
                beta=BETA, soft_targets="adaptive", soft_target_epochs=1,
                optimizer=lambda params: torch.optim.SGD(params, lr=0.05))


def trainer(epochs, callbacks):
    saves = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return L.Trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, precision=precision, logger=False,
                     accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=saves, default_root_dir=".", callbacks=callbacks)


for kind in kinds:
    train, val = loaders()
    groups = -(-len(train) // accumulate)
    model, probe = build(kind), WbarProbe()
    ckpt = ModelCheckpoint(dirpath=f"ckpt_{kind}", save_last=True)
    t1 = trainer(1, [probe, ckpt])
    t1.fit(model, train, val)
    metrics = t1.validate(model, val, verbose=False)[0]
    out = {"steps": probe.steps, "global_step": t1.global_step, "groups": groups, "wbar_err": probe.err,
           "val_loss": metrics["val/loss"]}
    # resume in a new Trainer with a new model: W_bar, lambda and the soft-target table come back
    resumed, start = build(kind), StartProbe()
    t2 = trainer(2, [start])
    t2.fit(resumed, train, val, ckpt_path=f"ckpt_{kind}/last.ckpt", weights_only=True)
    saved = torch.load(f"ckpt_{kind}/last.ckpt", weights_only=True)
    fptt_keys = [k for k in saved["state_dict"] if k.startswith("fptt.") or k == "soft_table"]
    out["resumed_state_equal"] = all(torch.equal(start.state[k], saved["state_dict"][k].float()) for k in fptt_keys)
    out["resumed_global_step"] = t2.global_step
    out["hparams_net"] = saved["hyper_parameters"]["net"]
    t2.save_checkpoint(f"final_{kind}.ckpt")
    x = next(iter(val))[0]
    with torch.no_grad():
        torch.save({"x": x, "pred": resumed.eval()(x.to(next(resumed.parameters()).dtype)).float()},
                   f"pred_{kind}.pt")
    report[kind] = out
json.dump(report, open("train_report.json", "w"))
'''

LOAD = '''
import json, sys
import torch

from modules.fptt import FPTT
from modules.sequence_model import SequenceError
from user_nets import make_net

report = {}
for kind in sys.argv[1].split(","):
    path = f"final_{kind}.ckpt"
    try:
        FPTT.load_from_checkpoint(path, weights_only=True)
        missing = "no error"
    except SequenceError as err:
        missing = str(err)
    model = FPTT.load_from_checkpoint(path, net=make_net(kind), weights_only=True).eval()
    saved = torch.load(path, weights_only=True)["state_dict"]
    same = all(torch.equal(v.float(), saved[k].float()) for k, v in model.state_dict().items())
    ref = torch.load(f"pred_{kind}.pt", weights_only=True)
    with torch.no_grad():
        pred = model(ref["x"])
    report[kind] = {"missing_net_error": missing, "state_equal": same and set(saved) == set(model.state_dict()),
                    "pred_err": float((pred - ref["pred"]).abs().max())}
json.dump(report, open("load_report.json", "w"))
'''


def _python(root: Path, script: str, *args: str, timeout: float = 200) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WANDB_"))}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, script, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{script} failed in {root}:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"


def _user_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("user_nets.py", USER_NETS), ("train.py", TRAIN), ("load.py", LOAD)):
        (root / name).write_text(textwrap.dedent(text))
    return root


def _run_here(root: Path, script: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the user's script in this process, as ``python script args`` would in ``root``."""
    with monkeypatch.context() as m:
        m.chdir(root)
        m.syspath_prepend(str(root))
        m.setattr(sys, "argv", [script, *args])
        try:
            runpy.run_path(str(root / script), run_name="__main__")
        finally:
            sys.modules.pop("user_nets", None)


def _check(root: Path, kinds: list[str], precision: str, accumulate: int,
           monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Train (in a subprocess, or in this process when ``monkeypatch`` is given), then load in a fresh one."""
    if monkeypatch is None:
        _python(root, "train.py", precision, str(accumulate), ",".join(kinds))
    else:
        _run_here(root, "train.py", precision, str(accumulate), ",".join(kinds), monkeypatch=monkeypatch)
    _python(root, "load.py", ",".join(kinds))
    train = json.loads((root / "train_report.json").read_text())
    load = json.loads((root / "load_report.json").read_text())
    for kind in kinds:
        t, lo = train[kind], load[kind]
        # one optimizer step per window (4 windows: 13 steps in 3 parts + remainder) per accumulated group
        assert t["steps"] == 4 * t["groups"] and t["global_step"] == t["groups"], t
        assert t["resumed_global_step"] == 2 * t["groups"], t
        tol = 3e-2 if precision == "bf16-true" else 1e-5
        assert t["wbar_err"] <= tol, t
        assert t["resumed_state_equal"], t
        assert isinstance(t["hparams_net"], str) and "not saved" in t["hparams_net"], t  # a note, never a module
        assert t["val_loss"] == t["val_loss"], t  # finite
        assert "net=" in lo["missing_net_error"], lo
        assert lo["state_equal"], lo
        if precision == "32":
            assert lo["pred_err"] < 1e-5, lo


def test_fptt_in_a_foreign_project_gru_and_own_cell(tmp_path, monkeypatch):
    # default tier: the user's training script runs in this process (cwd = their folder); the load is a fresh
    # process all the same. The slow matrix runs both scripts as subprocesses.
    _check(_user_project(tmp_path / "user_project"), ["gru", "cell"], "32", 2, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "bf16-true"])
@pytest.mark.parametrize("accumulate", [1, 3])
def test_fptt_in_a_foreign_project_matrix(tmp_path, precision, accumulate):
    _check(_user_project(tmp_path / "user_project"), ["gru", "cell"], precision, accumulate)
