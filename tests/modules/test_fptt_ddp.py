"""FPTT under real DDP (2 CPU ranks, gloo, the platform harness): lambda, W_bar and the weights stay identical
across ranks while each rank trains on different sequences, and they reach the checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

import lightning.pytorch as pl
from tests.ddp import run_ddp


class DumpFPTTState(pl.Callback):
    """Test probe: each rank saves its FPTT buffers, weights and first batch to ``out_dir/rank<r>.pt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.first_batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_batch is None:
            self.first_batch = batch[0].detach().clone()

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state": state, "batch": self.first_batch, "step": trainer.global_step},
                   self.out_dir / f"rank{trainer.global_rank}.pt")


def test_fptt_state_identical_across_ranks_and_checkpointed(tmp_path):
    runs_root, probe = tmp_path / "runs", tmp_path / "probe"
    run_ddp(["fit", "--config", "recipes/fptt_lstm_adding_t200.yaml", "--trainer.max_steps=2",
             "--trainer.logger=false", "--data.init_args.seq_len=20", "--data.init_args.train_size=16",
             "--data.init_args.val_size=4", "--data.init_args.test_size=4", "--data.init_args.batch_size=2",
             "--model.init_args.hidden_size=4", "--model.init_args.parts=4", "--trainer.limit_val_batches=0",
             "--trainer.callbacks+=tests.modules.test_fptt_ddp.DumpFPTTState",
             f"--trainer.callbacks.out_dir={probe}"], runs_root, timeout=600)
    r0, r1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert not torch.equal(r0["batch"], r1["batch"])  # the ranks trained on different sequences
    keys = [k for k in r0["state"] if k.startswith("fptt.")]
    assert any(k.startswith("fptt.lam__") for k in keys) and any(k.startswith("fptt.bar__") for k in keys)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    lam = [v for k, v in r0["state"].items() if k.startswith("fptt.lam__")]
    assert any(torch.count_nonzero(v) for v in lam)  # mid-epoch: lambda has moved away from 0
