"""FPTT under real DDP (2 CPU ranks, gloo, the platform harness): lambda, W_bar and the weights stay identical
across ranks while each rank trains on different sequences, and they reach the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
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
             f"--trainer.callbacks.out_dir={probe}"], runs_root)
    r0, r1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert not torch.equal(r0["batch"], r1["batch"])  # the ranks trained on different sequences
    keys = [k for k in r0["state"] if k.startswith("fptt.")]
    assert any(k.startswith("fptt.lam__") for k in keys) and any(k.startswith("fptt.bar__") for k in keys)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    lam = [v for k, v in r0["state"].items() if k.startswith("fptt.lam__")]
    assert any(torch.count_nonzero(v) for v in lam)  # mid-epoch: lambda has moved away from 0


def _rank_outputs(rank: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each rank's window outputs (2 windows, 3 classes) and labels; both ranks misclassify class 0, only rank 1
    misclassifies class 2, nobody misclassifies class 1."""
    y = torch.tensor([0, 1, 0, 2]) if rank == 0 else torch.tensor([2, 0, 1, 2])
    g = torch.Generator().manual_seed(rank)
    outs = []
    for _ in range(2):
        out = torch.randn(4, 3, generator=g)
        out[torch.arange(4), y] -= 5.0  # every example is wrong ...
        out[y == 1, 1] += 10.0          # ... except those of class 1
        if rank == 0:
            out[y == 2, 2] += 10.0      # and class 2 on rank 0
        outs.append(out)
    return outs, y


def _table_worker(rank: int, port: int, out_dir: str, fill: str) -> None:
    import os

    import torch.distributed as dist

    from modules.fptt import FPTTSequenceModel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = FPTTSequenceModel(cell="gru", hidden_size=2, task="classification", num_classes=3,
                                  input_shape=(6, 1), parts=3, soft_targets="adaptive", soft_table_fill=fill)
        outs, y = _rank_outputs(rank)
        model._update_soft_table(outs, y)
        torch.save(model.soft_table.clone(), Path(out_dir) / f"table{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("fill", ["first", "mean"])
def test_soft_table_under_ddp_is_the_table_of_the_ranks_batches_in_rank_order(tmp_path, fill):
    """Under 2-rank gloo DDP both ranks hold the table the single-process update gives on rank 0's batch followed
    by rank 1's: "first" takes rank 0's example of class 0 and rank 1's of class 2."""
    import socket

    import torch.multiprocessing as mp

    from modules.fptt import FPTTSequenceModel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_table_worker, args=(port, str(tmp_path), fill), nprocs=2, join=True)
    single = FPTTSequenceModel(cell="gru", hidden_size=2, task="classification", num_classes=3, input_shape=(6, 1),
                               parts=3, soft_targets="adaptive", soft_table_fill=fill)
    (o0, y0), (o1, y1) = _rank_outputs(0), _rank_outputs(1)
    single._update_soft_table([torch.cat([a, b]) for a, b in zip(o0, o1)], torch.cat([y0, y1]))
    for rank in (0, 1):
        table = torch.load(tmp_path / f"table{rank}.pt", weights_only=True)
        assert torch.allclose(table, single.soft_table, atol=1e-6), rank
    assert torch.count_nonzero(single.soft_table[:2, 1]) == 0  # class 1 never misclassified: still zeros
    assert torch.count_nonzero(single.soft_table[:2, 2]) > 0
