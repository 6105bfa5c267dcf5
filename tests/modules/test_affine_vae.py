"""Affine VAE (modules/affine_vae.py): the ELBO terms on hand-set values and their one variance convention, the loss
at a pose, the batched pose search against the per-sample loop, pose recovery, frozen weights during the search,
a Lightning fit/resume round trip, and bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lightning.pytorch as pl
from modules.affine_vae import (
    AffineVAE, AffineVAEConfigError, kl_divergence, reconstruction_loss, reparameterize,
)
from nets.affine_vae_nets import InputShapeError
from nets.affine_warp import AffineModeError, inverse_theta, rotate_2d, theta_from_params, warp


def test_kl_on_hand_set_values():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # 1/2 [(1 + 1 - 1 - 0) + (0 + 4 - 1 - log 4)]
    assert kl_divergence(mu, logvar).item() == pytest.approx(0.5 * (1 + 3 - math.log(4.0)), rel=1e-6)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def test_sampling_and_kl_use_the_same_variance():
    """z ~ reparameterize has variance exp(logvar), and the Monte-Carlo KL E[log q(z) - log p(z)] over those
    samples equals the closed form: one convention (the authors' 2D code mixed log-sigma and log-variance)."""
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[math.log(4.0), math.log(0.25)]])
    z = reparameterize(mu.expand(200_000, 2), logvar.expand(200_000, 2))
    assert torch.allclose(z.var(0), logvar.exp()[0], rtol=0.02)
    q = torch.distributions.Normal(mu[0], torch.exp(0.5 * logvar[0]))
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(1).mean()
    assert mc.item() == pytest.approx(kl_divergence(mu, logvar).item(), rel=0.02)


def test_reconstruction_losses_are_per_sample_sums():
    x_hat, x = torch.tensor([[0.5, 1.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert reconstruction_loss(x_hat, x, "mse").tolist() == [0.25, 2.0]
    bce = reconstruction_loss(torch.tensor([[0.5]]), torch.tensor([[1.0]]), "bce")
    assert bce.item() == pytest.approx(math.log(2.0), rel=1e-4)


def _model(**kw):
    torch.manual_seed(0)
    args = dict(input_shape=(1, 32, 32), latent_dim=4, width=0.25, restarts=6, steps=4)
    args.update(kw)
    return AffineVAE(**args)


def test_pose_loss_scores_the_inverse_warped_reconstruction_against_the_original():
    m = _model().eval()
    x = torch.rand(3, 1, 32, 32)
    alpha = torch.tensor([[0.3], [-1.0], [2.0]])
    theta = theta_from_params(alpha, "rotation")
    with torch.no_grad():
        mu, logvar = m.net.encode(warp(x, theta))
        back = warp(m.net.decode(mu), inverse_theta(theta, rigid=True))
        expected = ((back - x) ** 2).flatten(1).sum(1) + kl_divergence(mu, logvar)
        assert torch.allclose(m.pose_loss(x, alpha), expected, rtol=1e-5)


@pytest.mark.parametrize("mode,shape,kw", [
    ("rotation", (1, 32, 32), {}),
    ("affine", (1, 32, 32), {"alpha_lr": 0.03}),
    ("euler", (1, 24, 24, 24), {"keep": 2, "alpha_lr": 0.03}),
])
def test_batched_search_equals_the_per_sample_loop(mode, shape, kw):
    m = _model(input_shape=shape, mode=mode, **kw)
    x = torch.rand(3, *shape)
    init = m.sample_alpha(3 * 6, torch.Generator().manual_seed(1)).reshape(3, 6, -1)
    a_batch, l_batch = m.search_alpha(x, init=init)
    a_loop, l_loop = m.search_alpha(x, init=init, batched=False)
    assert torch.allclose(l_batch, l_loop, rtol=1e-4)
    assert torch.allclose(a_batch, a_loop, atol=1e-3)
    # the result is the loss at the returned pose, and no worse than the best restart
    with torch.no_grad():
        m.net.eval()
        assert torch.allclose(m.pose_loss(x, a_batch), l_batch, rtol=1e-4)
        start = torch.stack([m.pose_loss(x, init[:, j]) for j in range(6)], 1).min(1).values
    assert (l_batch <= start + 1e-4).all()


def test_cube24_search_is_brute_force_over_the_24_rotations():
    m = _model(input_shape=(1, 24, 24, 24), mode="cube24")
    x = torch.rand(2, 1, 24, 24, 24)
    alpha, loss = m.search_alpha(x)
    alpha_loop, loss_loop = m.search_alpha(x, batched=False)
    assert torch.equal(alpha, alpha_loop) and torch.allclose(loss, loss_loop, rtol=1e-5)
    with torch.no_grad():
        m.net.eval()
        all_losses = torch.stack([m.pose_loss(x, torch.full((2, 1), float(k))) for k in range(24)], 1)
    assert torch.allclose(loss, all_losses.min(1).values, rtol=1e-5)


class TemplateNet(nn.Module):
    """A fixed 'VAE' (z ignored, KL 0) that always decodes the same asymmetric template: the loss at a pose is
    then the distance between the posed template and x, minimal at the true pose."""

    def __init__(self, template: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("template", template)
        self.dummy = nn.Parameter(torch.zeros(1))

    def check_input(self, x):
        pass

    def encode(self, x):
        z = torch.zeros(x.shape[0], 1) + 0 * self.dummy
        return z, z

    def decode(self, z):
        return self.template.expand(z.shape[0], *self.template.shape[1:]) + 0 * z.sum()


def test_search_recovers_the_rotation():
    c = (torch.arange(32) * 2 + 1) / 32 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    template = (torch.exp(-((xx - 0.35) ** 2 + yy ** 2) / 0.02) + 0.6 * torch.exp(-(xx ** 2 + (yy + 0.3) ** 2) / 0.01))
    template = template[None, None]
    m = _model(restarts=16, steps=40, alpha_lr=0.05)
    m.net = TemplateNet(template)
    true = torch.tensor([0.5, -2.0, 2.8])
    x = rotate_2d(template.expand(3, 1, 32, 32), true)
    alpha, loss = m.search_alpha(x, generator=torch.Generator().manual_seed(0))
    # A_alpha(x) must undo the rotation: alpha = -true (mod 2 pi)
    err = torch.remainder(alpha[:, 0] + true + math.pi, 2 * math.pi) - math.pi
    assert err.abs().max() < math.radians(3), err


def test_search_freezes_the_vae_and_restores_its_mode():
    m = _model()
    m.train()
    m.search_alpha(torch.rand(2, 1, 32, 32))
    assert m.net.training
    assert all(p.grad is None for p in m.parameters())  # gradients went to the pose only


def test_fit_logs_and_resumes(tmp_path):
    from datamodules.rotated_glyphs import RotatedGlyphsDataModule

    dm = RotatedGlyphsDataModule(batch_size=8, train_size=16, test_size=8, rotation=90)
    m = _model(restarts=3, steps=1, eval_restarts=2, eval_steps=1)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, enable_model_summary=False)
    trainer.fit(m, datamodule=dm)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/loss_identity", "val/kl"):
        assert key in metrics and torch.isfinite(metrics[key])
    assert metrics["val/loss"] <= metrics["val/loss_identity"] + 1e-3  # the search can only improve on identity
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = AffineVAE.load_from_checkpoint(ckpt)
    assert loaded.hparams.mode == "rotation" and loaded.hparams.restarts == 3
    x = torch.rand(2, 1, 32, 32)
    a1 = m.search_alpha(x, generator=torch.Generator().manual_seed(0))
    a2 = loaded.search_alpha(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a1[1], a2[1]) and torch.allclose(a1[0], a2[0])
    trainer2 = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                          default_root_dir=tmp_path, enable_model_summary=False, limit_val_batches=0)
    trainer2.fit(_model(restarts=3, steps=1), datamodule=dm, ckpt_path=ckpt)
    assert trainer2.global_step == 4


def test_bad_inputs_are_clear_errors():
    with pytest.raises(AffineVAEConfigError, match="restarts must be an integer >= 1, got 0"):
        _model(restarts=0)
    with pytest.raises(AffineVAEConfigError, match="keep"):
        _model(restarts=2, keep=3)
    with pytest.raises(AffineModeError, match="Unknown affine mode 'similarity'"):
        _model(mode="similarity")
    with pytest.raises(AffineModeError, match="3 spatial dimensions"):
        _model(input_shape=(1, 24, 24, 24), mode="rotation")
    m = _model()
    with pytest.raises(InputShapeError, match=r"\(1, 32, 32\)"):
        m.training_step((torch.rand(2, 1, 40, 40), torch.zeros(2)), 0)
    with pytest.raises(AffineVAEConfigError, match="restarts >= 1"):
        m.search_alpha(torch.rand(1, 1, 32, 32), restarts=0)
    assert AffineVAEConfigError.user_facing and AffineModeError.user_facing and InputShapeError.user_facing


def test_plain_vae_mode_has_no_search():
    m = _model(mode="none")
    with pytest.raises(AffineModeError, match="plain VAE"):
        m.search_alpha(torch.rand(1, 1, 32, 32))
    loss = m.training_step((torch.rand(2, 1, 32, 32),), 0)
    assert torch.isfinite(loss)


def test_inference_returns_the_pose_and_latent_pair():
    m = _model(eval_restarts=3, eval_steps=1).eval()
    out = m.encode_with_pose(torch.rand(2, 1, 32, 32))
    assert out["z"].shape == (2, 4) and out["alpha"].shape == (2, 1) and out["loss"].shape == (2,)
    with torch.no_grad():
        x = torch.rand(2, 1, 32, 32)
        out = m.encode_with_pose(x)
        assert torch.allclose(m.pose_loss(x, out["alpha"]), out["loss"], rtol=1e-5)


def test_recipe_run_logs_reconstruction_grid_to_wandb(runs_root):
    """The glyph recipe through main.py with W&B (real package, offline): val/loss in the live run's summary and the
    reconstruction grid written as an image in the offline run directory."""
    import glob
    import os
    from pathlib import Path

    import wandb

    from main import cli_main

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "avae_vae2d_glyphs_l8_rotopt.yaml"
    cli_main(["fit", "--config", str(recipe), f"--runs_root={runs_root}", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu",
              "--trainer.devices=1", "--data.init_args.train_size=8", "--data.init_args.test_size=8",
              "--data.init_args.batch_size=8", "--model.init_args.restarts=2", "--model.init_args.steps=1",
              "--model.init_args.eval_restarts=2", "--model.init_args.eval_steps=1"])
    run = wandb.run
    assert run is not None and run.offline
    assert "val/loss" in run.summary.keys() and "val/loss_identity" in run.summary.keys()
    assert run.config["model"]["init_args"]["mode"] == "rotation"
    offline = glob.glob(str(Path(runs_root) / "avae_vae2d_glyphs_l8_rotopt" / "wandb" / "offline-run-*"))
    assert len(offline) == 1
    images = glob.glob(os.path.join(offline[0], "files", "media", "images", "**", "*.png"), recursive=True)
    assert any("reconstructions" in p for p in images), images
