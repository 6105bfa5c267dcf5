"""studies/avae_glyphs.yaml at a few steps: the VAE trained on upright glyphs, evaluated by the RotationSweep probe on
its test glyphs rotated by 0, 90 and 180 degrees, with and without the pose search. The defining property of the
Affine VAE: the searched pose lowers the loss of a rotated input, and the loss of the net trained upright rises with
the rotation more without the search than with it. The report reads the probe's metrics and the hook draws the
curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.studies.tiny import REPO, studies

SWEEP = {"class_path": "studies.probes_avae.RotationSweep",
         "init_args": {"angles": [0, 90, 180], "restarts": 8, "steps": 3, "recon_images": 4}}
TINY = {"data.init_args.train_size": 256, "data.init_args.test_size": 20, "data.init_args.batch_size": 32,
        "trainer.max_epochs": 4, "model.init_args.width": 0.25,
        "model.init_args.optimizer.init_args.lr": 3.0e-3, "trainer.callbacks": [SWEEP]}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def test_avae_glyphs_tiny(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "studies/avae_glyphs.yaml").read_text())
    data["seeds"] = [0]
    data["stages"] = {"vae_single": {**data["stages"]["vae_single"], "overrides": TINY}}
    data["metrics"] = {k: v for k, v in data["metrics"].items() if v.get("stage") == "vae_single"}
    data["claims"] = {k: v for k, v in data["claims"].items()
                      if {v["a"], v["b"]} <= set(data["metrics"])}
    data.pop("plots")
    study = tmp_path / "avae_glyphs.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    results = tmp_path / "results"
    assert studies("report", study, "--runs-root", runs, "--results-dir", results, "--no-wandb") == 0

    run = runs / "avae_glyphs/vae_single/seed0"
    m = json.loads((run / "metrics/fit.json").read_text())["metrics"]
    # the pose search lowers the loss of the rotated input (the AVAE's point) ...
    assert m["rotation/search_loss_deg90"] < m["rotation/loss_deg90"] - 5.0
    # ... and the net trained upright rises away from 0 degrees without the search, much less with it
    assert m["rotation/rise"] > 3.0
    assert m["rotation/search_rise"] < 0.5 * m["rotation/rise"]
    sweep = json.loads((run / "rotation_sweep.json").read_text())
    assert sweep["angles"] == [0.0, 90.0, 180.0] and sweep["images"] == 20
    assert sweep["curves"]["identity"][1] == pytest.approx(m["rotation/loss_deg90"], rel=1e-6)

    report = json.loads((results / "avae_glyphs.json").read_text())
    assert report["metrics"]["vae_single_rise"]["points"][""]["per_seed"]["0"] == pytest.approx(m["rotation/rise"])
    status = {k: c["points"][""]["status"] for k, c in report["claims"].items()}
    assert status["vae_rises_avae_flat"] == "pending"  # an interval needs more seeds
    flat = m["rotation/search_rise"] <= 0.25 * m["rotation/rise"]  # a ratio is decided on every seed
    assert status["avae_rise_below_quarter"] == ("met" if flat else "not met")
    md = (results / "avae_glyphs.md").read_text()
    assert "Loss against test rotation" in md and (results / "avae_glyphs.png").is_file()
    assert (results / "avae_glyphs_recon_seed0.png").is_file()


def test_sweep_leaves_the_training_random_state_alone() -> None:
    """The probe draws its restarts from its own generators: the global RNG after a sweep is what it was before,
    so adding the probe to a recipe does not change the training it measures."""
    from modules.affine_vae import AffineVAE
    from studies.probes_avae import RotationSweep, RotationSweepError

    torch.manual_seed(0)
    model = AffineVAE(width=0.25, restarts=4, steps=1, log_images=False).eval()
    images = torch.rand(3, 1, 32, 32)
    probe = RotationSweep(angles=[0, 90], restarts=4, steps=1)
    state = torch.get_rng_state()
    curves = probe.sweep(model, images, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert set(curves) == {"identity", "search"} and len(curves["search"]) == 2
    assert curves == probe.sweep(model, images, seed=0)  # its own generators: the same numbers again
    with pytest.raises(RotationSweepError, match="angles must include 0"):
        RotationSweep(angles=[30, 90])


def test_rise_is_far_angles_minus_upright() -> None:
    from studies.probes_avae import RotationSweepError, rise

    assert rise([10.0, 11.0, 20.0, 30.0], [0.0, 30.0, 60.0, 90.0]) == pytest.approx(15.0)
    with pytest.raises(RotationSweepError, match="angle 0"):
        rise([10.0, 20.0], [30.0, 90.0])
