"""studies/sicnn_glyphs.yaml at a few steps per stage: the plain, SI and same-MAC plain nets train through main.py
(ImageClassifier, nets/sicnn.py) and the report reads every metric the study names. The defining property is
checked on the runs' own counts (main.py report): the SI net has the plain net's architecture at about 25% fewer
conv + linear MACs plus the interpolation's element-wise work, and the width-0.85 plain net sits within 5% of the
SI net's MACs, so the study's MAC claims are met on every run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.studies.tiny import metrics, repo_study, run_tiny

TINY = {"data.init_args.train_size": 128, "data.init_args.test_size": 68, "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 1, "trainer.limit_val_batches": 1}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def test_sicnn_glyphs_tiny(tmp_path: Path) -> None:
    data = repo_study("sicnn_glyphs", [0], TINY)
    runs = run_tiny(data, tmp_path)
    report = json.loads((tmp_path / "results/sicnn_glyphs.json").read_text())
    value = {name: m["points"][""]["per_seed"]["0"] for name, m in report["metrics"].items()}
    assert set(value) == set(data["metrics"])

    nets = {s: json.loads((runs / f"sicnn_glyphs/{s}/seed0/run.json").read_text())["identity"]["model"]["init_args"]
            for s in ("plain", "si", "plain_same_macs")}
    assert (nets["plain"]["net"], nets["si"]["net"], nets["plain_same_macs"]["net"]) == ("irnet", "si_irnet", "irnet")
    assert nets["plain_same_macs"]["net_kwargs"]["width_mult"] == 0.85
    # the SI net: same architecture, ~25% fewer conv + linear MACs, more parameters (the cheap paths), and the
    # interpolation and mask as element-wise work that only the SI net has
    assert 0.70 < value["si_macs"] / value["plain_macs"] < 0.80
    assert value["si_params"] > value["plain_params"] > value["plain_same_macs_params"]
    assert value["si_elementwise"] > 0
    assert metrics(runs / "sicnn_glyphs/plain/seed0", "test")["counts/elementwise_macs"] == 0
    # the same-MAC plain net is at the SI net's budget
    assert abs(value["plain_same_macs_macs"] / value["si_macs"] - 1) < 0.05
    claims = {name: c["points"][""]["status"] for name, c in report["claims"].items()}
    assert claims == {"si_non_inferior_same_architecture": "pending", "si_beats_same_macs": "pending",
                      "si_fewer_macs": "met", "same_macs_budget_low": "met", "same_macs_budget_high": "met"}
    assert all(0 <= value[f"{s}_train_acc"] <= 100 for s in ("plain", "si", "plain_same_macs"))
