"""Real DDP on 2 CPU ranks (gloo): disjoint data per rank, synchronised metrics, one W&B run, resumable."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import torch

from tests.ddp import run_ddp


def test_ddp_ranks_see_disjoint_data_and_share_synced_metrics(tmp_path):
    runs_root, probe_dir = tmp_path / "runs", tmp_path / "probe"
    run_ddp(["fit", "--config", "recipes/quickstart.yaml", "--trainer.max_epochs=1",
             "--model.init_args.log_images=false",
             "--trainer.callbacks+=tests.probes.DataProbe", f"--trainer.callbacks.out_dir={probe_dir}"], runs_root)
    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    a, b = set(ranks[0]["samples"]), set(ranks[1]["samples"])
    # 1437 training images: DistributedSampler pads the odd count with one repeated sample, nothing else
    assert len(a | b) == 1437
    assert len(a & b) <= 1
    assert abs(len(ranks[0]["samples"]) - len(ranks[1]["samples"])) == 0
    for key in ("val/loss", "val/acc1"):
        assert ranks[0]["metrics"][key] == ranks[1]["metrics"][key], key
    # one W&B run (rank 0 owns it) and one checkpoint
    assert len(glob.glob(str(runs_root / "quickstart" / "wandb" / "offline-run-*"))) == 1
    ckpt = torch.load(runs_root / "quickstart" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 12  # ceil(1437 / 2 / 64) steps per rank
