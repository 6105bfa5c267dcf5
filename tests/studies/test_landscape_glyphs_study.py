"""studies/landscape_glyphs.yaml at a few steps: the small- and large-batch runs train through main.py with the
LossLandscape callback, the `fit: false` stages measure their last.ckpt at validate time, and the numbers agree
where they must: the validate-time surface at the origin and the sharpness equal the fit-end ones of the same
run (same weights, same directions), and the interpolation's ends are the two runs' minima."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.studies.tiny import REPO, metrics, studies

KEEP = ("small", "large", "surface_small", "interpolate")  # the batch study's chain, one seed
TINY = {"data.init_args.train_size": 64, "data.init_args.test_size": 32, "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1, "trainer.logger": False, "trainer.enable_progress_bar": False,
        "trainer.callbacks.init_args.max_samples": 48, "trainer.callbacks.init_args.batch_size": 16}
FIT = {"trainer.max_epochs": 1, "trainer.check_val_every_n_epoch": 1,
       "trainer.callbacks.init_args.x_grid": "-1:1:3", "trainer.callbacks.init_args.sharpness_directions": 2}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def _tiny_study(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO / "studies/landscape_glyphs.yaml").read_text())
    data["seeds"] = [0]
    data["stages"] = {k: v for k, v in data["stages"].items() if k in KEEP}
    for name, stage in data["stages"].items():
        stage.pop("seeds", None)
        extra = dict(FIT) if stage.get("fit", True) else {}
        if name == "surface_small":
            extra = {"trainer.callbacks.init_args.x_grid": "-1:1:3", "trainer.callbacks.init_args.y_grid": "-1:1:3",
                     "trainer.callbacks.init_args.sharpness_directions": 2}
        if name == "interpolate":
            extra = {"trainer.callbacks.init_args.interpolate_grid": "-0.5:1.5:9"}
        stage["overrides"] = {**stage.get("overrides", {}), **TINY, **extra}
    data["metrics"] = {k: m for k, m in data["metrics"].items() if m.get("stage") in KEEP}
    data["claims"] = {k: c for k, c in data["claims"].items()
                      if data["metrics"].get(c["a"]) and data["metrics"].get(c["b"])}
    data["plots"] = [p for p in data["plots"] if all(m in data["metrics"] for m in p["metrics"])]
    path = tmp_path / "landscape_glyphs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_landscape_glyphs_tiny(tmp_path: Path) -> None:
    study = _tiny_study(tmp_path)
    runs = tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    root = runs / "landscape_glyphs"
    small, large = metrics(root / "small/seed0", "fit"), metrics(root / "large/seed0", "fit")
    surface = metrics(root / "surface_small/seed0", "validate")
    interp = metrics(root / "interpolate/seed0", "validate")
    # the validate-time stage measured the small run's trained net: the 2-D surface's origin is its fit-end loss,
    # and the sharpness along the same seeded directions is the same number, bit for bit
    s2 = np.load(root / "surface_small/seed0/landscape/validate_last/surface_2d.npz")
    assert s2["loss"].shape == (3, 3) and s2["loss"][1, 1] == surface["landscape/center_loss"]
    assert surface["landscape/center_loss"] == small["landscape/center_loss"]
    assert surface["landscape/sharpness"] == small["landscape/sharpness"]
    assert surface["landscape/local_minima"] >= 0 and 0 <= surface["landscape/nonconvex_fraction"] <= 1
    # the interpolation runs from the small-batch minimum (a = 0, exactly) to the large-batch one (a = 1)
    assert interp["interpolation/loss_at_0"] == small["landscape/center_loss"]
    assert interp["interpolation/loss_at_1"] == pytest.approx(large["landscape/center_loss"], rel=1e-4)
    assert small["landscape/center_loss"] != large["landscape/center_loss"]  # two different nets
    assert interp["landscape/interpolation_distance"] > 0 and interp["interpolation/barrier"] >= 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb") == 0
    report = json.loads((tmp_path / "results/landscape_glyphs.json").read_text())
    assert report["metrics"]["small_sharpness"]["points"][""]["per_seed"]["0"] == small["landscape/sharpness"]
    assert report["extra"]["figures"]["batch"] == "landscape_glyphs_batch.png"
    assert (tmp_path / "results/landscape_glyphs_batch.png").is_file()
    assert "![batch](landscape_glyphs_batch.png)" in (tmp_path / "results/landscape_glyphs.md").read_text()


def test_trajectory_recipe_keeps_one_checkpoint_per_epoch(tmp_path: Path) -> None:
    """The trajectory recipe validates only at its last epoch; its ModelCheckpoint must still save at every epoch's
    end (it saved at validation only, so the PCA trajectory found 2 checkpoints and the study's run failed)."""
    from main import cli_main

    epochs = 3  # below the recipe's check_val_every_n_epoch (40), which stays as it is
    cli_main(["fit", "--config", "recipes/glyphs/landscape_vgg9n_glyphs_bs32_trajectory.yaml",
              f"--runs_root={tmp_path}", "--run_name=traj", f"--trainer.max_epochs={epochs}",
              *[f"--{k}={v}" for k, v in TINY.items() if k.startswith(("data.", "trainer.limit_train", "trainer.log",
                                                                         "trainer.enable"))],
              "--trainer.callbacks.init_args.x_grid=-1:1:3", "--trainer.callbacks.init_args.sharpness_directions=2",
              "--trainer.callbacks.init_args.trajectory_points=3"])
    run = tmp_path / "traj"
    saved = sorted(p.name for p in (run / "checkpoints").glob("epoch=*.ckpt"))
    assert saved == [f"epoch={e}-step={2 * (e + 1)}.ckpt" for e in range(epochs)], saved
    fit = metrics(run, "fit")
    assert 0 < fit["landscape/trajectory_variance_1"] <= 1 and (run / "landscape/fit_end/trajectory.npz").is_file()


def test_interpolation_rise_is_left_out_where_the_curve_is_not_finite() -> None:
    """Past a net's end the interpolated BN running variances can turn negative (NaN loss): the rise at that end
    is not logged, the other end's rise and the barrier still are."""
    from studies.probes_landscape import interpolation_scalars

    alpha = np.linspace(-0.5, 1.5, 41)
    loss = (alpha - 0.5) ** 2 * -1 + 1.0  # a barrier of 1 between two ends at loss 0.75
    loss[alpha > 1.0 + 1e-9] = np.nan
    out = interpolation_scalars(alpha, loss, np.ones_like(alpha))
    assert "rise_at_1" not in out and out["barrier"] == pytest.approx(0.25)
    assert out["rise_at_0"] == pytest.approx(np.mean([-(x - 0.5) ** 2 + 1.0 for x in (-0.25, 0.25)]) - 0.75)
    assert np.isfinite(list(out.values())).all()
