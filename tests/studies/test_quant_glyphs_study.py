"""studies/quant_glyphs.yaml at a few steps per stage: the four methods train through main.py with the same
module and data, BC / SR / R end with binary weights in every conv and linear layer (SR and R in the stored
weights themselves, BC in the weights its forward pass uses), FP does not, and the report reads every metric and
decides the three ordering claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.studies.tiny import repo_study, run_tiny

TINY = {"data.init_args.train_size": 64, "data.init_args.test_size": 40, "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def _quantized_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ckpt["state_dict"].items()
            if k.endswith(".weight") and v.dim() in (2, 4)}  # conv and linear weights (BN weights are 1-d)


@pytest.mark.parametrize("seeds", [pytest.param([0], id="1seed"),
                                   pytest.param([0, 1], id="2seeds", marks=pytest.mark.slow)])
def test_quant_glyphs_tiny(tmp_path: Path, seeds: list[int]) -> None:
    """One seed in the default run (claims stay pending); two seeds (claims decided) in the slow tier."""
    data = repo_study("quant_glyphs", seeds, TINY)
    for claim in data["claims"].values():
        claim["min_seeds"] = 2
    runs = run_tiny(data, tmp_path)
    report = json.loads((tmp_path / "results/quant_glyphs.json").read_text())
    for name in ("fp_acc", "bc_acc", "sr_acc", "r_acc", "fp_train_acc", "r_train_acc"):
        per_seed = report["metrics"][name]["points"][""]["per_seed"]
        assert set(per_seed) == {str(s) for s in seeds} and all(0 <= v <= 100 for v in per_seed.values())
    claims = {k: v["points"][""]["status"] for k, v in report["claims"].items()}
    assert set(claims) == {"fp_ge_bc", "bc_gt_sr", "sr_ge_r"}
    decided = ("met", "not met") if len(seeds) >= 2 else ("pending",)
    assert all(s in decided for s in claims.values()), claims

    from main import load_checkpoint

    ckpts = {m: load_checkpoint(runs / f"quant_glyphs/{m}/seed0/checkpoints/last.ckpt") for m in ("fp", "bc", "sr", "r")}
    # SR and R keep no float copy: the stored conv and linear weights are on the grid {-1, +1}
    for m in ("sr", "r"):
        weights = _quantized_weights(ckpts[m])
        assert len(weights) == 8  # the quarter VGG-9: 6 convs, 2 linear layers
        for name, w in weights.items():
            assert set(w.unique().tolist()) <= {-1.0, 1.0}, (m, name)
    # BC keeps float weights (the forward pass uses their signs); FP is never quantized
    for m in ("bc", "fp"):
        w = torch.cat([v.flatten() for v in _quantized_weights(ckpts[m]).values()])
        assert w.abs().max() < 1.0 and len(w.unique()) > 100
    # every method of a seed runs with that seed (initial weights, data order and rounding; paired by seed)
    for m in ("fp", "bc", "sr", "r"):
        run = json.loads((runs / f"quant_glyphs/{m}/seed{seeds[-1]}/run.json").read_text())
        identity = run["identity"]
        assert identity["seed_everything"] == seeds[-1] and identity["data"]["init_args"]["seed"] == seeds[-1]
    assert (tmp_path / "results/quant_glyphs.png").is_file()
