"""studies/prune_sensitivity.yaml at a short budget: a baseline trained for one epoch, then the evaluation-only
sweep stage (main.py validate on the baseline's last.ckpt) logs one accuracy per (layer, ratio). Defining
properties: ratio 0 is the unpruned net (the same accuracy as the run's own validation and as the baseline's test,
since validation uses the test split), an entry is the accuracy of the net pruned by the project's L1 rule
(callbacks/l1_filter_pruning.prune_layer, recomputed here), larger ratios lose more on average, and the report
hook draws the curves."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.studies.tiny import REPO, run_tiny

TINY = {"data.init_args.train_size": 1280, "data.init_args.test_size": 300}

pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def test_prune_sensitivity_tiny(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "studies/prune_sensitivity.yaml").read_text())
    data["seeds"] = [0]
    data["stages"]["baseline"]["overrides"] = {**TINY, "trainer.max_epochs": 5}
    sweep = yaml.safe_load((REPO / data["stages"]["sweep"]["recipe"]).read_text())
    callbacks = sweep["trainer"]["callbacks"]
    callbacks[0]["init_args"]["ratios"] = [0.0, 0.5, 0.9]
    data["stages"]["sweep"]["overrides"] = {**TINY, "trainer.callbacks": callbacks}
    kept = {"baseline_acc", "unpruned_acc", "mean_r0.50", "mean_r0.90"}  # the tiny sweep's ratios
    data["metrics"] = {k: v for k, v in data["metrics"].items() if k in kept}
    for plot in data.get("plots", []):
        plot["metrics"] = [m for m in plot["metrics"] if m in kept]
    for claim in data["claims"].values():
        claim["min_seeds"] = 2
    runs = run_tiny(data, tmp_path)

    sweep_dir = runs / "prune_sensitivity/sweep/seed0"
    assert not (sweep_dir / "checkpoints").exists()  # evaluation only: nothing trained
    logged = json.loads((sweep_dir / "metrics/validate.json").read_text())["metrics"]
    test = json.loads((runs / "prune_sensitivity/baseline/seed0/metrics/test.json").read_text())["metrics"]
    curves = json.loads((sweep_dir / "prune_sensitivity.json").read_text())
    layers = curves["layers"]
    assert len(layers) == 9 and all(name.endswith(".conv1") for name in layers)  # first conv of every block
    unpruned = logged["sensitivity/unpruned"]
    assert unpruned == pytest.approx(100 * logged["val/acc1"], abs=1e-3)
    assert unpruned == pytest.approx(100 * test["test/acc1"], abs=1e-3)  # the baseline's weights, the test split
    for name in layers:
        assert logged[f"sensitivity/{name}/r0.00"] == pytest.approx(unpruned, abs=1e-4)
    assert curves["kept"]["layer1.0.conv1"] == [16, 8, 1] and curves["kept"]["layer3.0.conv1"] == [64, 32, 6]
    # larger ratios lose more on average over the layers
    mean = {r: logged[f"sensitivity/mean/r{r}"] for r in ("0.00", "0.50", "0.90")}
    assert mean["0.90"] < mean["0.50"] <= mean["0.00"] and mean["0.90"] < unpruned - 5

    # one entry recomputed: the baseline's net with layer2.0.conv1 pruned by the project's L1 rule, no retraining
    from callbacks.l1_filter_pruning import prune_layer
    from modules.image_classifier import ImageClassifier
    from studies.glyphs import PooledGlyphsDataModule

    module = ImageClassifier.load_from_checkpoint(
        runs / "prune_sensitivity/baseline/seed0/checkpoints/last.ckpt", map_location="cpu").eval()
    init = json.loads((runs / "prune_sensitivity/baseline/seed0/run.json").read_text())["identity"]["data"]
    dm = PooledGlyphsDataModule(**init["init_args"])
    dm.setup("validate")
    net = copy.deepcopy(module.net)
    prune_layer(net, "layer2.0.conv1", 0.5, module.example_input_array)
    net.eval()
    import torch

    correct = total = 0
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    assert logged["sensitivity/layer2.0.conv1/r0.50"] == pytest.approx(100 * correct / total, abs=1e-3)

    md = (tmp_path / "results/prune_sensitivity.md").read_text()
    assert "## Sensitivity curves" in md and "layer3.2.conv1" in md
    assert (tmp_path / "results/prune_sensitivity_curves.png").stat().st_size > 0
