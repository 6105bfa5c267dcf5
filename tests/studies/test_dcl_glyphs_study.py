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


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


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
    for metric in data["metrics"].values():  # the seed subsets (seeds 0-4 of the 10-seed plain stage) -> seed 0
        if "seeds" in metric:
            metric["seeds"] = [0]
    study = tmp_path / "dcl_glyphs.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug", "--only", *only) == 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb",
                   "--only", *only) == 0
    report = json.loads((tmp_path / "results/dcl_glyphs.json").read_text())
    read = 0
    values = {name: m["points"][""]["per_seed"] for name, m in report["metrics"].items() if "points" in m}
    for name, spec in data["metrics"].items():
        if spec.get("stage") in only:
            assert set(values[name]) == {"0"} and all(0 <= v <= 100 for v in values[name].values()), name
            read += 1
        elif "expr" in spec and all(data["metrics"][o].get("stage") in only for o in spec["expr"].split(" - ")):
            # the generalization gap: training-split accuracy (the probe) minus test accuracy, per seed
            train, test = spec["expr"].split(" - ")
            assert values[name]["0"] == pytest.approx(values[train]["0"] - values[test]["0"]), name
            read += 1
    assert read == (29 if only == ALL else 14)
    assert all(c["points"][""]["status"] == "pending" for c in report["claims"].values())  # 1 seed

    # the probe measures the training split as trained on (noisy labels), in eval mode, with the last weights:
    # recomputed here from the checkpoint, the datamodule's tensors and the labels, as the old script did
    import torch

    from datamodules.glyphs import GlyphsDataModule
    from modules.dcl import DCLClassifier

    for stage in only:
        run_dir = runs / f"dcl_glyphs/{stage}/seed0"
        logged = json.loads((run_dir / "metrics/fit.json").read_text())["metrics"]
        init = json.loads((run_dir / "run.json").read_text())["identity"]["data"]["init_args"]
        dm = GlyphsDataModule(**init)
        dm.setup()
        model = DCLClassifier.load_from_checkpoint(run_dir / "checkpoints/last.ckpt", map_location="cpu").eval()
        with torch.no_grad():
            pred = model(dm.train_images).argmax(1)
        assert logged["end/train_acc1"] == pytest.approx(100 * (pred == dm.train_labels).float().mean().item(),
                                                         abs=1e-4), stage
        assert logged["end/train_acc1_clean"] == pytest.approx(
            100 * (pred == dm.train_clean_labels).float().mean().item(), abs=1e-4), stage

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
