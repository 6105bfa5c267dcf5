"""studies/global_illustrative.yaml at a few steps per stage: the three backbones of the illustrative model train
through main.py (ImageClassifier, the project's net) and the report reads every metric the study names. The
defining property of the comparison is checked on the runs' own counts: the backbones have the same conv + linear
MACs (main.py report) and 522 / 524 / 524 parameters, and only the PDE backbone adds element-wise work, exactly the
K = 5 leapfrog iterations on the 32x32 map; the probe's 3<->5 confusion count is bounded by the test images of
those classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.studies.tiny import metrics, repo_study, run_tiny

TINY = {"data.init_args.train_size": 256, "data.init_args.test_size": 200, "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def test_global_illustrative_tiny(tmp_path: Path) -> None:
    data = repo_study("global_illustrative", [0], TINY)
    runs = run_tiny(data, tmp_path)
    report = json.loads((tmp_path / "results/global_illustrative.json").read_text())
    value = {name: m["points"][""]["per_seed"]["0"] for name, m in report["metrics"].items()}
    assert set(value) == set(data["metrics"])

    # each stage built the backbone it names (the override reached the net)
    for backbone in ("conv", "residual", "pde"):
        run = json.loads((runs / f"global_illustrative/{backbone}/seed0/run.json").read_text())
        assert run["identity"]["model"]["init_args"]["net_kwargs"] == {"backbone": backbone, "K": 5}
    # equal capacity: same conv + linear MACs, 522 / 524 / 524 parameters; only the PDE adds element-wise work
    assert value["conv_macs"] == value["residual_macs"] == value["pde_macs"] == 2 * 32 * 32 * 9 + 49 * 10
    assert (value["conv_params"], value["residual_params"], value["pde_params"]) == (522, 524, 524)
    assert value["pde_elementwise"] == 32 * 32 * (10 + 9 * 5)
    assert metrics(runs / "global_illustrative/residual/seed0", "test")["counts/elementwise_macs"] == 0
    assert report["claims"]["same_conv_macs"]["points"][""]["status"] == "met"
    assert report["claims"]["pde_beats_residual"]["points"][""]["status"] == "pending"  # 1 seed

    # the probes: accuracies in range; confusions bounded by the test images of classes 3 and 5
    from datamodules.glyphs import GlyphsDataModule

    init = json.loads((runs / "global_illustrative/pde/seed0/run.json").read_text())["identity"]["data"]["init_args"]
    dm = GlyphsDataModule(**init)
    dm.setup()
    threes_and_fives = int(((dm.test_labels == 3) | (dm.test_labels == 5)).sum())
    for backbone in ("conv", "residual", "pde"):
        assert 0 <= value[f"{backbone}_confusions"] <= threes_and_fives
        assert 0 <= value[f"{backbone}_train_acc"] <= 100 and 0 <= value[f"{backbone}_acc"] <= 100
