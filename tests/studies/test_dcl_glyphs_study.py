"""studies/dcl_glyphs.yaml at a few steps per stage: plain and DCL runs of both shifted settings train through
main.py with the same module and data, the plain runs carry no constraint and the DCL runs the configured one
(with its multiplier in the checkpoint), the calibration variant replaces the noisy constraint rather than adding
to it, the training split is long-tailed / noisy as configured, and the report reads every metric the study names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.studies.tiny import REPO, studies

TINY = {"data.init_args.train_size": 200, "data.init_args.test_size": 40, "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


ALL = ["plain_imbalanced", "dcl_imbalanced", "plain_noisy", "dcl_noisy", "dcl_noisy_calibration"]


@pytest.mark.parametrize("only", [pytest.param(["plain_noisy", "dcl_noisy_calibration"], id="2stages"),
                                  pytest.param(ALL, id="all", marks=pytest.mark.slow)])
def test_dcl_glyphs_tiny(tmp_path: Path, only: list[str]) -> None:
    """Two stages in the default run (a plain run and the variant whose override replaces the constraint); every
    stage in the slow tier."""
    data = yaml.safe_load((REPO / "studies/dcl_glyphs.yaml").read_text())
    data["seeds"] = [0]
    for stage in data["stages"].values():
        stage.pop("seeds", None)
        stage["overrides"] = {**stage.get("overrides", {}), **TINY}
    study = tmp_path / "dcl_glyphs.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug", "--only", *only) == 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb",
                   "--only", *only) == 0
    report = json.loads((tmp_path / "results/dcl_glyphs.json").read_text())
    read = 0
    for name, metric in report["metrics"].items():
        if data["metrics"][name]["stage"] in only:
            per_seed = metric["points"][""]["per_seed"]
            assert set(per_seed) == {"0"} and all(0 <= v <= 100 for v in per_seed.values()), name
            read += 1
    assert read == (13 if only == ALL else 5)
    assert all(c["points"][""]["status"] == "pending" for c in report["claims"].values())  # 1 seed

    from main import load_checkpoint

    def constraints(stage: str) -> dict:
        run = json.loads((runs / f"dcl_glyphs/{stage}/seed0/run.json").read_text())
        return run["identity"]["model"]["init_args"]["constraints"]

    expected = {"plain_imbalanced": None, "plain_noisy": None, "dcl_imbalanced": "worst_class_loss",
                "dcl_noisy": "loss_floor", "dcl_noisy_calibration": "calibration_gap"}
    for stage in only:
        name = expected[stage]
        assert list(constraints(stage)) == ([name] if name else []), stage  # replaced, not merged
        # a DCL run carries its constraint's multiplier in the checkpoint; a plain run none
        state = load_checkpoint(runs / f"dcl_glyphs/{stage}/seed0/checkpoints/last.ckpt")["state_dict"]
        keys = {k.split(".")[1] for k in state if k.startswith("multipliers.")}
        assert keys == ({name} if name else set()), (stage, keys)
    assert constraints("dcl_noisy_calibration") == {"calibration_gap": {"eps": 0.02}}
    # the shifts: the imbalanced split is long-tailed (class 0 : class 9 = 20 : 1), the noisy one keeps its size
    from datamodules.glyphs import GlyphsDataModule

    for stage, check in (("plain_imbalanced", "imbalance"), ("plain_noisy", "label_noise")):
        if stage not in only:
            continue
        init = json.loads((runs / f"dcl_glyphs/{stage}/seed0/run.json").read_text())["identity"]["data"]["init_args"]
        dm = GlyphsDataModule(**init)
        dm.setup()
        counts = dm.train_labels.bincount(minlength=10)
        if check == "imbalance":
            assert counts[0] / counts[9] == pytest.approx(20, rel=0.15)
        else:
            assert len(dm.train_labels) == 200
            assert (dm.train_labels != dm.train_clean_labels).float().mean() == pytest.approx(0.2, abs=0.01)
