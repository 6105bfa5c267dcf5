"""studies/prune_glyphs.yaml at a few steps per stage: the three stages chain through main.py, the pruned net
loses the configured filters (35.6% fewer MACs, the scratch net has exactly the pruned widths) and the report
reads every metric the study names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.studies.tiny import REPO, repo_study, studies

TINY_DATA = {"data.init_args.train_size": 96, "data.init_args.test_size": 60, "trainer.max_epochs": 1,
             "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def test_prune_glyphs_tiny(tmp_path: Path) -> None:
    data = repo_study("prune_glyphs", [0, 1], TINY_DATA)
    for name in ("pruned", "pruned_mild"):
        data["stages"][name]["overrides"]["model.init_args.lr_scheduler.init_args.T_max"] = 1
    for claim in data["claims"].values():
        claim["min_seeds"] = 2
    study = tmp_path / "prune_glyphs.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = tmp_path / "runs"
    only = ["baseline", "pruned", "scratch", "pruned_mild"]  # scratch_mild: the scratch recipe with other widths
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug", "--only", *only) == 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb",
                   "--only", *only) == 0
    report = json.loads((tmp_path / "results/prune_glyphs.json").read_text())
    macs = {k: report["metrics"][k]["points"][""]["per_seed"] for k in ("baseline_macs", "pruned_macs")}
    assert macs["baseline_macs"]["0"] == pytest.approx(2.517e6, rel=1e-3)  # ResNet-20 at 8x8 (li2017)
    assert macs["pruned_macs"]["0"] / macs["baseline_macs"]["0"] == pytest.approx(1 - 0.356, abs=1e-3)
    # the mild rule (post hoc stage): 30% / 30% / 20% of the first-conv filters, 27.6% fewer MACs
    mild = report["metrics"]["pruned_mild_macs"]["points"][""]["per_seed"]
    assert mild["0"] / macs["baseline_macs"]["0"] == pytest.approx(1 - 0.276, abs=1e-3)
    claims = {k: v["points"][""] for k, v in report["claims"].items()}
    assert claims["fewer_macs"]["status"] == "met" and claims["scratch_net_is_the_pruned_net"]["status"] == "met"
    assert claims["retrained_within_1pt"]["status"] in ("met", "not met")  # decided (2 seeds here)
    # the accuracy right after pruning is measured once, before any retraining step
    start = report["metrics"]["pruned_acc_no_retrain"]["points"][""]["per_seed"]
    assert set(start) == {"0", "1"} and all(0 <= v <= 100 for v in start.values())
    run = json.loads((runs / "prune_glyphs/pruned/seed0/run.json").read_text())
    assert run["identity"]["init_from"].endswith("prune_glyphs/baseline/seed0/checkpoints/last.ckpt")
    # ResNet-20 first convs of widths 16 / 32 / 64 keep floor(w * (1 - ratio)) filters at 60 / 30 / 10%
    from main import load_checkpoint

    ckpt = load_checkpoint(runs / "prune_glyphs/pruned/seed1/checkpoints/last.ckpt")
    assert ckpt["hyper_parameters"]["net_kwargs"]["block_widths"] == [6] * 3 + [22] * 3 + [57] * 3
    mild_ckpt = load_checkpoint(runs / "prune_glyphs/pruned_mild/seed0/checkpoints/last.ckpt")
    assert mild_ckpt["hyper_parameters"]["net_kwargs"]["block_widths"] == [11] * 3 + [22] * 3 + [51] * 3
    scratch_mild = yaml.safe_load((REPO / "recipes/glyphs/scratch_resnet20_pooled_glyphs_prune_mild.yaml").read_text())
    assert scratch_mild["model"]["init_args"]["net_kwargs"]["block_widths"] == [11] * 3 + [22] * 3 + [51] * 3
    assert (tmp_path / "results/prune_glyphs.png").is_file()
