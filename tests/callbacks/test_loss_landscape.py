"""LossLandscape (Li et al., NeurIPS 2018): filter normalisation, exact restore, surface centre, interpolation,
PCA trajectory, Hessian eigenvalues, clear errors, the validate-on-a-checkpoint CLI path with W&B images, and
grid points split over 2 DDP ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from callbacks.loss_landscape import (
    LandscapeError,
    LossLandscape,
    ModelSnapshot,
    compute_surface,
    direction_targets,
    evaluate,
    hessian_extreme_eigs,
    load_directions,
    load_state_dict_file,
    make_eval_data,
    parse_grid,
    pca_directions,
    random_direction,
    save_directions,
    surface_stats,
)

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: on a shared, busy machine 2 OpenMP threads made them ~50x slower than 1."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TinyNet(nn.Module):
    """conv (with bias) -> BN -> ReLU -> pool -> linear (with bias): every kind of tensor the rules distinguish."""

    def __init__(self, channels: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _trained_tiny(seed: int = 0, steps: int = 20) -> tuple[TinyNet, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    torch.manual_seed(seed)
    net = TinyNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):  # also moves the BN running statistics away from their init
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net, TensorDataset(x, y)


class TinyData(pl.LightningDataModule):
    def __init__(self, dataset: TensorDataset, batch_size: int = 32) -> None:
        super().__init__()
        self.train_set = self.val_set = dataset
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _trainer(tmp_path: Path, callbacks: list, **kw) -> pl.Trainer:
    kw = {"max_epochs": 3, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
          "enable_model_summary": False, "default_root_dir": str(tmp_path), **kw}
    return pl.Trainer(callbacks=callbacks, **kw)


# ------------------------------------------------------------------------------------------------ grids
def test_grid_spec_is_an_inclusive_linspace_with_an_exact_zero():
    g = parse_grid("-1:1:51")
    assert len(g) == 51 and g[0] == -1.0 and g[-1] == 1.0
    assert g[25] == 0.0 and np.allclose(np.diff(g), 0.04)
    assert list(parse_grid("0:0:1")) == [0.0]
    assert len(parse_grid("-0.5:1.5:401")) == 401 and parse_grid("-0.5:1.5:401")[100] == 0.0
    assert list(parse_grid(" 1e-1 : 2.5E-1 : 2 ")) == [0.1, 0.25]


@pytest.mark.parametrize("spec", ["-1:1", "-1:1:0", "1:-1:5", "a:b:5", "-1:1:5.5", "", "1:1:3", "-1:1:51:2"])
def test_malformed_grid_spec_is_a_clear_error(spec):
    with pytest.raises(LandscapeError, match="min:max:num|number of points|larger than|same"):
        parse_grid(spec, "x_grid")
    with pytest.raises(LandscapeError, match="x_grid"):
        LossLandscape(x_grid=spec)


# ------------------------------------------------------------------------------------------------ directions
def test_filter_normalised_direction_has_the_weights_filter_norms_and_ignores_bias_and_bn():
    net, _ = _trained_tiny()
    targets = direction_targets(net, "weights")
    d = random_direction(targets, "filter", "biasbn", torch.Generator().manual_seed(123))
    assert list(d) == [n for n, _ in net.named_parameters()]
    for name, w in targets.items():
        if w.dim() <= 1:  # conv.bias, bn.weight, bn.bias, fc.bias
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        dn = d[name].reshape(w.shape[0], -1).norm(dim=1)
        wn = w.detach().reshape(w.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-5, atol=0), name  # one norm per filter (output channel / row)
    # states: BN running statistics are part of the direction, zero when ignored; integer buffers never are
    states = direction_targets(net, "states")
    assert "bn.running_mean" in states and "bn.num_batches_tracked" not in states
    ds = random_direction(states, "filter", "biasbn", torch.Generator().manual_seed(123))
    assert torch.count_nonzero(ds["bn.running_var"]) == 0 and torch.count_nonzero(ds["conv.weight"]) > 0


def test_other_normalisations_and_not_ignoring_bias_bn():
    net, _ = _trained_tiny()
    targets = direction_targets(net, "weights")
    g = torch.Generator().manual_seed(0)
    layer = random_direction(targets, "layer", "biasbn", g)
    torch.testing.assert_close(layer["fc.weight"].norm(), targets["fc.weight"].detach().norm(), rtol=1e-5, atol=0)
    weight = random_direction(targets, "weight", "biasbn", torch.Generator().manual_seed(1))
    raw = torch.randn(targets["conv.weight"].shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(weight["conv.weight"], raw * targets["conv.weight"].detach())
    unit = random_direction(targets, "dfilter", "biasbn", g)
    torch.testing.assert_close(unit["conv.weight"].reshape(6, -1).norm(dim=1), torch.ones(6), rtol=1e-5, atol=0)
    # ignore="none": 1-D tensors get *random* directions normalised element-wise, not the reference's d = theta
    full = random_direction(targets, "filter", "none", torch.Generator().manual_seed(2))
    bn_w = targets["bn.weight"].detach()
    torch.testing.assert_close(full["bn.weight"].abs(), bn_w.abs(), rtol=1e-5, atol=1e-7)
    assert not torch.equal(full["bn.weight"], bn_w) or not torch.equal(full["fc.bias"], targets["fc.bias"].detach())


# ------------------------------------------------------------------------------------------------ surfaces
def test_surface_centre_is_the_models_own_loss_and_the_model_is_restored_exactly():
    net, ds = _trained_tiny()
    net.train()  # the surface must switch to eval() itself and switch back
    before = _state(net)
    data = make_eval_data(ds, batch_size=40)
    targets = direction_targets(net)
    dirs = [random_direction(targets, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    s2 = compute_surface(net, data, targets, dirs, parse_grid("-1:1:5"), parse_grid("-0.5:0.5:3"))
    s1 = compute_surface(net, data, targets, dirs, parse_grid("-1:1:5"))
    assert s2["loss"].shape == (3, 5)
    # independent plain evaluation: eval mode, whole split, mean cross-entropy
    net.eval()
    with torch.no_grad():
        logits = net(ds.tensors[0])
        own_loss = F.cross_entropy(logits, ds.tensors[1]).item()
        own_acc = 100.0 * (logits.argmax(1) == ds.tensors[1]).float().mean().item()
    net.train()
    assert s2["loss"][1, 2] == pytest.approx(own_loss, rel=1e-6) and s1["loss"][2] == s2["loss"][1, 2]
    assert s2["acc"][1, 2] == pytest.approx(own_acc)
    assert s2["loss"].min() == s2["loss"][1, 2]  # a trained net sits in a basin along random directions
    after = _state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert net.training and all(m.training for m in net.modules())


def test_interpolation_end_points_are_the_two_models():
    a, ds = _trained_tiny(seed=0)
    b, _ = _trained_tiny(seed=1, steps=30)
    data = make_eval_data(ds, batch_size=96)
    targets = direction_targets(a, "states")
    d = {k: b.state_dict()[k] - t.detach() for k, t in targets.items()}
    out = compute_surface(a, data, targets, [d], parse_grid("-0.5:1.5:9"))
    a.eval()
    b.eval()
    assert out["loss"][2] == evaluate(a, data)[0]
    assert out["loss"][6] == pytest.approx(evaluate(b, data)[0], rel=1e-5)  # BN statistics interpolated too


def test_surface_stats_count_minima_and_non_convexity():
    x = y = parse_grid("-1:1:21")
    gx, gy = np.meshgrid(x, y)
    bowl = gx**2 + 2 * gy**2
    s = surface_stats(x, y, bowl, radius=0.5)
    assert s["local_minima"] == 1 and s["nonconvex_fraction"] == 0.0
    assert s["mean_increase_at_radius"] > 0
    wavy = bowl + 0.3 * np.sin(12 * gx) * np.sin(12 * gy)
    w = surface_stats(x, y, wavy)
    assert w["local_minima"] > 1 and w["nonconvex_fraction"] > 0.1


# ------------------------------------------------------------------------------------------------ PCA, Hessian
def test_pca_recovers_the_plane_of_the_path_and_its_variance():
    g = torch.Generator().manual_seed(0)
    center = {"w": torch.randn(8, 5, generator=g), "b": torch.randn(8, generator=g)}
    u = torch.zeros(8, 5)
    u[0] = 1.0
    u /= u.norm()
    v = torch.zeros(8, 5)
    v[3, :2] = 1.0
    v /= v.norm()
    a = torch.tensor([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])  # uncorrelated with b: the principal axes are u and v
    b = torch.tensor([1.0, -1.0, -1.0, -1.0, -1.0, 1.0])
    rows = [{"w": center["w"] + ai * u + bi * v, "b": center["b"] + 0.1} for ai, bi in zip(a, b, strict=True)]
    pca = pca_directions(rows, center, ignore="biasbn")
    dx, dy = pca["directions"]
    assert torch.count_nonzero(dx["b"]) == 0  # 1-D entries ignored
    assert abs(float((dx["w"] * u).sum())) == pytest.approx(1.0, abs=1e-5)
    assert abs(float((dy["w"] * v).sum())) == pytest.approx(1.0, abs=1e-5)
    assert float(dx["w"].norm()) == pytest.approx(1.0, abs=1e-6)  # unit norm, not filter-normalised
    assert float((a - a.mean()) @ (b - b.mean())) == pytest.approx(0.0, abs=1e-6)
    var_a, var_b = float(a.var()), float(b.var())
    assert pca["explained_variance_ratio"][0] == pytest.approx(var_a / (var_a + var_b), abs=1e-5)
    assert sum(pca["explained_variance_ratio"]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.abs(pca["x"]), np.abs(a.numpy()), atol=1e-5)
    assert pca["x"][0] <= 0 and pca["y"][0] <= 0


def test_hessian_extreme_eigenvalues_match_the_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(40, 3), torch.randint(0, 3, (40,))
    data = make_eval_data(TensorDataset(x, y), batch_size=16)
    params = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    lo, hi, hvps = hessian_extreme_eigs(model, data, params, tol=1e-10, maxiter=None)
    names = list(params)
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss_of(v: torch.Tensor) -> torch.Tensor:
        pieces = dict(zip(names, [c.view(s) for c, s in zip(v.split([s.numel() for s in shapes]), shapes,
                                                            strict=True)], strict=True))
        out = torch.func.functional_call(model, pieces, (x,))
        return F.cross_entropy(out, y)

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat).double())
    assert lo == pytest.approx(float(eig[0]), abs=1e-5) and hi == pytest.approx(float(eig[-1]), rel=1e-5)
    assert hvps > 0 and all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------ callback
class _Before(pl.Callback):
    """Listed before LossLandscape: records the state the landscape callback starts from."""

    def on_train_end(self, trainer, pl_module):
        self.state = _state(pl_module)
        self.modes = {n: m.training for n, m in pl_module.named_modules()}


class _ImageLogger(pl.loggers.CSVLogger):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.images = []

    def log_image(self, key, images, step=None):
        self.images.append((key, images))


def test_callback_at_fit_end_writes_everything_and_leaves_the_weights_bit_identical(tmp_path):
    _, ds = _trained_tiny()
    pl.seed_everything(0)
    module, before = TinyModule(), _Before()
    ckpt_dir = tmp_path / "ckpts"
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": _state(TinyModule())}, other)
    cb = LossLandscape(x_grid="-1:1:7", y_grid="-1:1:5", sharpness_directions=2, interpolate_to=str(other),
                       interpolate_grid="-0.5:1.5:5", trajectory="auto", save_initial=True, trajectory_points=4,
                       hessian_grid="0:0:1", hessian_max_samples=32, out_dir=str(tmp_path / "ll"))
    logger = _ImageLogger(str(tmp_path / "logs"))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), save_top_k=-1, every_n_epochs=1)
    trainer = _trainer(tmp_path, [before, cb, checkpoint], logger=logger)
    trainer.fit(module, datamodule=TinyData(ds))
    after = _state(module)
    assert all(torch.equal(before.state[k], after[k]) for k in after), "weights or buffers changed"
    assert {n: m.training for n, m in module.named_modules()} == before.modes
    out = tmp_path / "ll"
    for name in ("surface_1d.npz", "surface_2d.npz", "interpolation.npz", "trajectory.npz", "hessian.npz",
                 "directions.pt", "directions_pca.pt", "summary.json", "surface_1d.png", "surface_2d_contour.png",
                 "surface_2d_contourf.png", "surface_2d_3d.png", "trajectory.png", "interpolation.png",
                 "hessian_ratio.png", "initial.ckpt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    s2 = np.load(out / "surface_2d.npz")
    assert s2["loss"].shape == (5, 7) and s2["loss"][2, 3] == summary["center_loss"]
    assert summary["trajectory"]["checkpoints"] == 4  # initial + 3 epochs
    assert 0.99 < sum(summary["trajectory"]["explained_variance_ratio"]) <= 1.0 + 1e-9
    assert summary["sharpness"]["num_directions"] == 2 and math.isfinite(summary["sharpness"]["mean_increase"])
    assert summary["hessian"]["center_ratio"] >= 0
    # the scalars reach trainer.callback_metrics (main.py writes them to metrics/fit.json), equal to the summary's
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("landscape/")}
    assert metrics["landscape/center_loss"] == summary["center_loss"] == s2["loss"][2, 3]
    assert metrics["landscape/sharpness"] == summary["sharpness"]["mean_increase"]
    assert metrics["landscape/local_minima"] == summary["surface_2d"]["local_minima"]
    assert metrics["landscape/nonconvex_fraction"] == summary["surface_2d"]["nonconvex_fraction"]
    assert metrics["landscape/interpolation_distance"] == summary["interpolation"]["distance"]
    assert metrics["landscape/trajectory_variance_1"] == summary["trajectory"]["explained_variance_ratio"][0]
    logged = {key for key, _ in logger.images}
    assert {"landscape/surface_1d", "landscape/surface_2d_contour", "landscape/surface_2d_3d",
            "landscape/trajectory", "landscape/interpolation", "landscape/hessian_ratio"} <= logged


def test_fast_dev_run_computes_a_minimal_surface_and_skips_the_rest(tmp_path, capsys):
    _, ds = _trained_tiny()
    cb = LossLandscape(x_grid="-1:1:51", y_grid="-1:1:51", trajectory="auto", sharpness_directions=4,
                       out_dir=str(tmp_path / "ll"))
    _trainer(tmp_path, [cb], fast_dev_run=1).fit(TinyModule(), datamodule=TinyData(ds, batch_size=8))
    assert cb.summary["surface_1d"]["points"] == 3 and "surface_2d" not in cb.summary
    assert cb.summary["num_samples"] == 8 and "trajectory" not in cb.summary
    assert "skipped 2-D surface, sharpness, trajectory" in capsys.readouterr().out
    assert not list((tmp_path / "ll").glob("*.png"))


def test_evaluation_removes_augmentation_and_refuses_unknown_random_transforms(tmp_path):
    from torchvision import transforms

    from callbacks.loss_landscape import _clean_dataset
    from datamodules.cifar import CIFAR10DataModule
    from tests import fakedata

    dm = CIFAR10DataModule(data_dir=fakedata.write_cifar10(str(tmp_path)), augment=True)
    dm.setup("validate")  # like `main.py validate`: no train split yet
    ds = _clean_dataset(dm, "train")
    assert not any(type(t).__name__.startswith("Random") for t in ds.transform.transforms)
    assert any(type(t).__name__.startswith("Random") for t in dm.train_set.transform.transforms)  # untouched
    assert torch.equal(ds[0][0], ds[0][0])

    class FlippedDataset:  # a dataset with a random transform and a datamodule without eval_transform()
        transform = transforms.Compose([transforms.RandomHorizontalFlip()])

    aug = pl.LightningDataModule()
    aug.train_set = FlippedDataset()
    with pytest.raises(LandscapeError, match="random augmentation"):
        _clean_dataset(aug, "train")


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_checkpoint_and_files_for_another_model_are_clear_errors(tmp_path):
    net, ds = _trained_tiny()
    with pytest.raises(FileNotFoundError, match="interpolation checkpoint .*missing.ckpt does not exist"):
        _trainer(tmp_path, [LossLandscape(interpolate_to=str(tmp_path / "missing.ckpt"))]).fit(
            TinyModule(), datamodule=TinyData(ds))
    with pytest.raises(FileNotFoundError, match="nope.ckpt does not exist"):
        load_state_dict_file(tmp_path / "nope.ckpt", direction_targets(net))
    # a directions file made for another model
    wide = TinyNet(channels=8)
    path = tmp_path / "directions.pt"
    save_directions(path, [random_direction(direction_targets(wide))], "weights")
    with pytest.raises(LandscapeError, match=r"made for another model: .*shapes differ \(e\.g\. conv\.weight"):
        load_directions(path, direction_targets(net), "weights")
    with pytest.raises(LandscapeError, match="not a directions file"):
        torch.save({"x": 1}, tmp_path / "junk.pt")
        load_directions(tmp_path / "junk.pt", direction_targets(net))
    # a checkpoint of another architecture
    torch.save({"state_dict": wide.state_dict()}, tmp_path / "wide.ckpt")
    with pytest.raises(LandscapeError, match="another architecture"):
        load_state_dict_file(tmp_path / "wide.ckpt", direction_targets(net, "states"), reference=net.state_dict())
    snapshot = ModelSnapshot(net)  # and nothing was changed on the way
    snapshot.restore()


# ------------------------------------------------------------------------------------------------ CLI and DDP
@pytest.fixture(scope="module")
def quickstart_ckpt(tmp_path_factory):
    """A real checkpoint of recipes/quickstart.yaml (small CNN on digits) after 6 steps."""
    from main import cli_main

    root = tmp_path_factory.mktemp("qs")
    cli_main(["fit", "--config", str(REPO / "recipes/quickstart.yaml"), f"--runs_root={root}",
              "--trainer.max_steps=6", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
              "--model.init_args.log_images=false", "--trainer.logger=false", "--trainer.callbacks=[]"])
    ckpt = root / "quickstart" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


GRID_ARGS = ["--trainer.callbacks+=callbacks.loss_landscape.LossLandscape",
             "--trainer.callbacks.init_args.x_grid=-1:1:5", "--trainer.callbacks.init_args.y_grid=-1:1:3",
             "--trainer.callbacks.init_args.max_samples=300", "--trainer.callbacks.init_args.batch_size=50"]


def test_validate_on_a_checkpoint_writes_the_surface_and_logs_images_to_wandb(quickstart_ckpt, tmp_path):
    import wandb

    from main import cli_main

    cli = cli_main(["validate", "--config", str(REPO / "recipes/quickstart.yaml"), f"--runs_root={tmp_path}",
                    "--ckpt_path", str(quickstart_ckpt), "--trainer.enable_progress_bar=false", *GRID_ARGS,
                    "--trainer.callbacks.init_args.run_on=validate_end"])
    out = tmp_path / "quickstart" / "landscape" / "validate_last"
    assert (out / "surface_2d_contourf.png").is_file() and (out / "surface_1d.npz").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "validate" and summary["num_samples"] == 300
    # the weights are the checkpoint's (validate loaded it) and are unchanged after the callback
    saved = torch.load(quickstart_ckpt, weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v.cpu()) for k, v in cli.model.state_dict().items())
    assert wandb.run is not None and "landscape/surface_2d_3d" in dict(wandb.run.summary)
    assert "landscape/center_loss" in dict(wandb.run.summary)


def test_ddp_two_ranks_split_the_grid_and_match_one_rank(quickstart_ckpt, tmp_path):
    from modules.image_classifier import ImageClassifier
    from datamodules.digits import DigitsDataModule
    from tests.ddp import run_ddp

    run_ddp(["validate", "--config", "recipes/quickstart.yaml", "--ckpt_path", str(quickstart_ckpt),
             "--trainer.logger=false", *GRID_ARGS], tmp_path / "runs", timeout=180)
    out = tmp_path / "runs" / "quickstart" / "landscape" / "validate_last"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["surface_1d"]["points_per_rank"] == 3 and summary["surface_2d"]["points_per_rank"] == 8
    # one rank, in process, with the directions the DDP run drew (and saved): the same numbers
    model = ImageClassifier.load_from_checkpoint(quickstart_ckpt, map_location="cpu").eval()
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    data = make_eval_data(dm.train_set, batch_size=50, max_samples=300)
    targets = direction_targets(model)
    dirs = load_directions(out / "directions.pt", targets, "weights")
    ref = compute_surface(model, data, targets, dirs, parse_grid("-1:1:5"), parse_grid("-1:1:3"))
    ddp = np.load(out / "surface_2d.npz")
    np.testing.assert_allclose(ddp["loss"], ref["loss"], rtol=1e-6)
    np.testing.assert_allclose(ddp["acc"], ref["acc"])
    # the directions are the seeded ones: drawing them here gives the same tensors
    g = torch.Generator().manual_seed(123)
    again = [random_direction(targets, generator=g) for _ in range(2)]
    assert all(torch.equal(again[i][k], dirs[i][k]) for i in range(2) for k in targets)
