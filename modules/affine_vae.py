"""Affine VAE: a VAE wrapped in an affine resampler whose pose is optimised per sample (Bidart and Wong,
"Affine Variational Autoencoders", ICML 2019 UDL workshop, arXiv:1905.05300; 3D as in Bidart's thesis;
docs/affine_vae.md).

Model. q_phi(z|x) = N(mu(x), diag(exp(logvar(x)))) and p_rho(x|z) with mean x_hat(z) = decoder(z) in [0, 1]. The
loss of one sample at pose alpha is the negative ELBO of the warped input, scored against the **original** x:

    L(x; alpha) = R( A_alpha^-1( x_hat(z) ), x ) + beta * KL( q(z | A_alpha(x)) || N(0, I) ),
    KL = 1/2 * sum_j ( mu_j^2 + exp(logvar_j) - 1 - logvar_j ),   z = mu + exp(logvar / 2) * eps,

with R the summed squared error (``recon="mse"``, the paper's "summed MSE + KL"; a unit-variance Gaussian decoder up
to a constant) or the summed binary cross-entropy (``recon="bce"``). One variance convention throughout: ``logvar``
is log sigma^2, sampling uses sigma = exp(logvar / 2) and the KL above is the exact KL for that sigma (the authors'
2D code mixes a log-sigma KL with exp(logvar/2) sampling, docs/affine_vae.md#differences-from-the-released-code). Training uses the sampled z (the
ELBO); pose search and evaluation use z = mu (deterministic encoder, as the authors' search), so the reported
``loss`` is R(x_hat(mu)) + beta KL per sample.

Pose search (``search_alpha``), with the VAE frozen (eval mode, so BatchNorm uses running statistics and samples
do not interact; gradients taken with ``torch.autograd.grad`` w.r.t. alpha only, so nothing leaks into the weight
update -- the 3D trap of docs/affine_vae.md#differences-from-the-released-code):

    alpha*(x) = argmin_alpha L(x; alpha):  draw ``restarts`` random alphas per sample, keep the ``keep`` best,
    run ``steps`` Adam steps (lr ``alpha_lr``) from each, return the best alpha seen.

All samples x restarts are one batched tensor computation: the B*K poses are a single (B*K, P) leaf tensor and one
Adam optimiser (Adam is element-wise, so this is exactly the per-sample search; ``batched=False`` runs the per-sample
loop, which the tests and benchmarks/avae_search_speed.py compare against). ``mode="cube24"`` evaluates the 24
axis-aligned rotations by brute force. Restarts: rotation U(-pi, pi); affine U(-1.5, 1.5)^4 (the paper's general
affine search, no translation); euler uniform on SO(3) (not U(0, 2 pi)^3).

Training (``optimize_in_training=True``, the paper's "transformation optimisation"): per minibatch, solve alpha*
with the VAE frozen, then one gradient step on the ELBO at the detached alpha*. With ``optimize_in_training=False``
the net trains at the identity pose (a plain VAE; the paper's "AVAE single orientation / random rotations" rows are
such nets evaluated with the search). ``mode="none"`` is a plain VAE everywhere.

The encoder/decoder is ``nets.affine_vae_nets.VAENet`` by default; ``net`` takes any ``nn.Module`` with
``encode(x) -> (mu, logvar)`` and ``decode(z) -> x_hat`` (in [0, 1], the input's shape), or a class_path
description of one.

Logged: ``train/loss`` (ELBO), ``val/loss`` (with the search unless ``mode="none"`` or ``val_search=False``),
``val/loss_identity`` (no search), ``val/recon``, ``val/kl``, and a reconstruction grid (W&B) each validation.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

import lightning.pytorch as pl
from modules.net_args import _given_hparams, net_hparam
from modules.step_logging import log_train_value
from nets.affine_vae_nets import InputShapeError, VAENet
from nets.affine_warp import (
    MODES, NUM_PARAMS, SPATIAL_DIMS, AffineModeError, check_mode, identity_params, inverse_theta, matrix_to_euler,
    random_rotations, theta_from_params, warp,
)
from nets.registry import instantiate_class_path


class AffineVAEConfigError(ValueError):
    """A search budget or option the Affine VAE cannot use."""

    user_facing = True


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2) -- the same convention as :func:`kl_divergence`."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-sample summed squared error (``mse``) or summed binary cross-entropy (``bce``)."""
    if kind == "mse":
        return (x_hat - x).pow(2).flatten(1).sum(1)
    if kind == "bce":
        return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x.clamp(0, 1), reduction="none").flatten(1).sum(1)
    raise AffineVAEConfigError(f"recon must be 'mse' or 'bce', got {kind!r}")


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4)


_MODULE_GIVEN = "<nn.Module passed in>"  # hparams marker: the net was an object, give it again when loading


class AffineVAE(pl.LightningModule):
    """VAE with per-sample affine pose optimisation (see the module docstring).

    Args:
        input_shape: (C, H, W) or (C, D, H, W), linked from the datamodule.
        latent_dim: size of z (of the default net).
        width: channel multiplier of the default encoder/decoder (1.0 = the published nets).
        net: ``None`` (``VAENet(input_shape, latent_dim, width)``), or your own ``nn.Module`` with ``encode`` and
            ``decode`` (see the module doc), or a class_path description of one. A module is not stored in the
            hyperparameters: give it again to ``load_from_checkpoint(path, net=...)``.
        mode: ``rotation`` | ``affine`` (2D), ``euler`` | ``cube24`` (3D), or ``none`` (plain VAE).
        restarts: random poses drawn per sample before the gradient steps (> 0).
        keep: how many of the best restarts are refined by Adam (1 = the 2D paper, 8 = the 3D thesis code).
        steps: Adam steps on alpha (>= 0).
        alpha_lr: Adam learning rate of the pose (0.01 rotation, 0.03 affine / 3D in the authors' code).
        optimize_in_training: search alpha* for every training batch (transformation optimisation).
        val_search: search alpha for validation/test (``val/loss``); ``eval_restarts`` / ``eval_steps`` override the
            training budget there.
        recon: ``mse`` (summed squared error, the paper) or ``bce``.
        beta: weight of the KL term (1 = the ELBO).
        affine_range: restarts of ``affine`` mode are drawn from U(-affine_range, affine_range)^4.
        optimizer / lr_scheduler: factories from the YAML (Adam lr 1e-3, weight decay 5e-4 by default).
        log_images: log reconstruction grids to loggers that take images (W&B).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 32, 32),
        latent_dim: int = 8,
        width: float = 1.0,
        mode: str = "rotation",
        restarts: int = 20,
        keep: int = 1,
        steps: int = 10,
        alpha_lr: float = 0.01,
        optimize_in_training: bool = True,
        val_search: bool = True,
        eval_restarts: int | None = None,
        eval_steps: int | None = None,
        recon: Literal["mse", "bce"] = "mse",
        beta: float = 1.0,
        affine_range: float = 1.5,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        log_images: bool = True,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        if net == _MODULE_GIVEN:
            raise AffineVAEConfigError(
                "AffineVAE: this checkpoint was saved from a module whose net was passed as an nn.Module, which is "
                "not stored; pass it again: AffineVAE.load_from_checkpoint(path, net=MyVAE(...)).")
        stored = net_hparam(net, (_given_hparams() or {}).get("net"))
        self.hparams["net"] = _MODULE_GIVEN if stored is None and net is not None else stored
        self._hparams_initial["net"] = self.hparams["net"]
        if mode != "none":
            check_mode(mode, len(input_shape) - 1)
        for name, value, low in (("restarts", restarts, 1), ("keep", keep, 1), ("steps", steps, 0),
                                 ("eval_restarts", eval_restarts, 1), ("eval_steps", eval_steps, 0)):
            if value is not None and (not isinstance(value, int) or value < low):
                raise AffineVAEConfigError(
                    f"AffineVAE: {name} must be an integer >= {low}, got {value!r}; set the argument {name} "
                    f"(restarts = random poses per sample, steps = Adam steps on the pose)"
                )
        if keep > restarts or (eval_restarts is not None and keep > eval_restarts):
            raise AffineVAEConfigError(
                f"AffineVAE: keep ({keep}) must be <= restarts ({restarts}) and eval_restarts ({eval_restarts}): "
                f"only restarts that were drawn can be kept"
            )
        if alpha_lr <= 0 or beta < 0:
            raise AffineVAEConfigError(f"AffineVAE: alpha_lr must be > 0 and beta >= 0, got {alpha_lr}, {beta}")
        reconstruction_loss(torch.zeros(1, 1), torch.zeros(1, 1), recon)  # validates recon
        if net is None:
            self.net = VAENet(tuple(input_shape), latent_dim, width)
        elif isinstance(net, nn.Module):
            self.net = net
        elif isinstance(net, dict) and "class_path" in net:
            self.net = instantiate_class_path(net, "net")
        else:
            raise AffineVAEConfigError(f"AffineVAE: net must be None, an nn.Module or a class_path description, got "
                                       f"{type(net).__name__}.")
        if not (callable(getattr(self.net, "encode", None)) and callable(getattr(self.net, "decode", None))):
            raise AffineVAEConfigError(
                f"AffineVAE: net ({type(self.net).__name__}) needs encode(x) -> (mu, logvar) and decode(z) -> x_hat "
                "methods.")
        self.mode = mode
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(2, *input_shape)
        self._val_grid_batch: torch.Tensor | None = None

    # -- the loss at a pose ---------------------------------------------------------------------------------------
    def _theta(self, alpha: torch.Tensor) -> torch.Tensor:
        return theta_from_params(alpha, self.mode)

    def pose_loss(self, x: torch.Tensor, alpha: torch.Tensor | None, sample: bool = False,
                  return_parts: bool = False) -> Any:
        """Per-sample loss L(x; alpha) (alpha ``None`` = no warp). ``sample``: z sampled (the ELBO), else z = mu."""
        if alpha is None or self.mode == "none":
            xt, theta = x, None
        else:
            theta = self._theta(alpha)
            xt = warp(x, theta)
        mu, logvar = self.net.encode(xt)
        z = reparameterize(mu, logvar) if sample else mu
        x_hat = self.net.decode(z)
        if theta is not None:
            x_hat = warp(x_hat, inverse_theta(theta, rigid=self.mode != "affine"))
        rec = reconstruction_loss(x_hat, x, self.hparams.recon)
        kl = kl_divergence(mu, logvar)
        loss = rec + self.hparams.beta * kl
        if return_parts:
            return loss, rec, kl, x_hat
        return loss

    def _check_input(self, x: torch.Tensor) -> None:
        check = getattr(self.net, "check_input", None)
        if callable(check):
            check(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deterministic reconstruction at the identity pose: (x_hat, mu, logvar)."""
        return self.net(x)

    # -- pose search ----------------------------------------------------------------------------------------------
    def sample_alpha(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random restarts ``(n, P)`` for the current mode (on CPU; moved by the caller)."""
        if self.mode == "rotation":
            return (torch.rand(n, 1, generator=generator) * 2 - 1) * torch.pi
        if self.mode == "affine":
            r = self.hparams.affine_range
            return (torch.rand(n, 4, generator=generator) * 2 - 1) * r
        if self.mode == "euler":
            return matrix_to_euler(random_rotations(n, generator))
        raise AffineModeError(f"sample_alpha: mode {self.mode!r} has no random restarts")

    def search_alpha(self, x: torch.Tensor, restarts: int | None = None, steps: int | None = None,
                     keep: int | None = None, generator: torch.Generator | None = None, batched: bool = True,
                     init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha*(x) per sample: ``(alpha (B, P), loss (B,))``, both detached. ``init`` (B, R, P) replaces the
        random draws (used to compare the batched search with the per-sample loop on the same restarts)."""
        if self.mode == "none":
            raise AffineModeError("search_alpha: mode is 'none' (a plain VAE has no pose to search)")
        restarts = self.hparams.restarts if restarts is None else restarts
        steps = self.hparams.steps if steps is None else steps
        keep = self.hparams.keep if keep is None else keep
        if restarts < 1 or steps < 0 or not 1 <= keep <= restarts:
            raise AffineVAEConfigError(
                f"search_alpha: need restarts >= 1, steps >= 0 and 1 <= keep <= restarts; got restarts={restarts}, "
                f"steps={steps}, keep={keep}"
            )
        self._check_input(x)
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = x.detach().clone() if x.is_inference() else x.detach()
                if self.mode == "cube24":
                    return self._search_cube(x, batched)
                b = x.shape[0]
                if init is None:
                    init = self.sample_alpha(b * restarts, generator).reshape(b, restarts, -1)
                init = init.to(device=x.device, dtype=x.dtype)
                fn = self._search_batched if batched else self._search_loop
                return fn(x, init, steps, keep)
        finally:
            self.net.train(was_training)

    def _score(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        loss = self.pose_loss(x, alpha)
        return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, float("inf")))  # singular affine maps

    def _search_batched(self, x, init, steps, keep):
        b, r, p = init.shape
        with torch.no_grad():
            loss0 = self._score(x.repeat_interleave(r, 0), init.reshape(b * r, p)).reshape(b, r)
        best_loss, idx = loss0.min(1)
        best = init[torch.arange(b), idx]
        if steps == 0:
            return best, best_loss
        top = loss0.topk(keep, dim=1, largest=False).indices  # (B, K)
        start = torch.gather(init, 1, top[..., None].expand(b, keep, p)).reshape(b * keep, p)
        alpha = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([alpha], lr=self.hparams.alpha_lr)
        xk = x.repeat_interleave(keep, 0)
        for step in range(steps + 1):
            loss = self._score(xk, alpha)
            with torch.no_grad():
                cand_loss, k = loss.reshape(b, keep).min(1)
                better = cand_loss < best_loss
                cand = alpha.detach().reshape(b, keep, p)[torch.arange(b), k]
                best = torch.where(better[:, None], cand, best)
                best_loss = torch.where(better, cand_loss, best_loss)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), alpha)  # w.r.t. the pose only
            alpha.grad = torch.nan_to_num(grad)
            opt.step()
        return best.detach(), best_loss.detach()

    def _search_loop(self, x, init, steps, keep):
        """The same search one sample (and one restart) at a time: the reference for the batched version."""
        b, r, p = init.shape
        best_all, loss_all = [], []
        for i in range(b):
            xi = x[i : i + 1]
            with torch.no_grad():
                losses = torch.stack([self._score(xi, init[i, j : j + 1])[0] for j in range(r)])
            best_loss, j = losses.min(0)
            best = init[i, j]
            for k in losses.topk(keep, largest=False).indices.tolist() if steps else []:
                alpha = init[i, k : k + 1].clone().requires_grad_(True)
                opt = torch.optim.Adam([alpha], lr=self.hparams.alpha_lr)
                for step in range(steps + 1):
                    loss = self._score(xi, alpha)[0]
                    if loss.detach() < best_loss:
                        best_loss, best = loss.detach(), alpha.detach()[0].clone()
                    if step == steps:
                        break
                    (grad,) = torch.autograd.grad(loss, alpha)
                    alpha.grad = torch.nan_to_num(grad)
                    opt.step()
            best_all.append(best)
            loss_all.append(best_loss)
        return torch.stack(best_all).detach(), torch.stack(loss_all).detach()

    def _search_cube(self, x, batched):
        b = x.shape[0]
        cand = torch.arange(24, device=x.device, dtype=x.dtype)[:, None]
        with torch.no_grad():
            if batched:
                loss = self._score(x.repeat_interleave(24, 0), cand.repeat(b, 1)).reshape(b, 24)
            else:
                loss = torch.stack([torch.stack([self._score(x[i : i + 1], cand[j : j + 1])[0] for j in range(24)])
                                    for i in range(b)])
        best_loss, idx = loss.min(1)
        return cand[idx], best_loss

    # -- Lightning ------------------------------------------------------------------------------------------------
    def _pose(self, x: torch.Tensor, search: bool, stage: str) -> torch.Tensor | None:
        if self.mode == "none":
            return None
        if not search:
            return identity_params(x.shape[0], self.mode, x.device, x.dtype)
        if stage == "train":
            return self.search_alpha(x)[0]
        restarts = self.hparams.eval_restarts or self.hparams.restarts
        steps = self.hparams.steps if self.hparams.eval_steps is None else self.hparams.eval_steps
        return self.search_alpha(x, restarts, steps, min(self.hparams.keep, restarts))[0]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self._check_input(x)
        alpha = self._pose(x, self.hparams.optimize_in_training, "train")
        loss, rec, kl, _ = self.pose_loss(x, alpha, sample=True, return_parts=True)
        n = x.shape[0]
        log_train_value(self, "train/loss", loss.mean(), prog_bar=True, batch_size=n)
        self.log("train/recon", rec.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train/kl", kl.mean(), on_step=False, on_epoch=True, batch_size=n)
        return loss.mean()

    def _eval_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self._check_input(x)
        n = x.shape[0]
        ident, _, _, _ = self.pose_loss(x, self._pose(x, False, stage), return_parts=True)
        self.log(f"{stage}/loss_identity", ident.mean(), sync_dist=True, batch_size=n)
        search = self.hparams.val_search and self.mode != "none"
        alpha = self._pose(x, True, stage) if search else self._pose(x, False, stage)
        loss, rec, kl, x_hat = self.pose_loss(x, alpha, return_parts=True)
        self.log(f"{stage}/loss", loss.mean(), prog_bar=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/recon", rec.mean(), sync_dist=True, batch_size=n)
        self.log(f"{stage}/kl", kl.mean(), sync_dist=True, batch_size=n)
        if stage == "val" and batch_idx == 0:
            self._val_grid_batch = torch.cat([x[:8], x_hat[:8]]).detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def encode_with_pose(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference: the representation (z, alpha) of each sample -- alpha* from the search (at the evaluation
        budget), z = mu(A_alpha*(x)) -- with the loss at alpha*. A plain VAE (``mode="none"``) returns alpha = None."""
        with torch.no_grad():
            alpha = self._pose(x, self.mode != "none", "test")
            xt = x if alpha is None else warp(x, self._theta(alpha))
            mu, _ = self.net.encode(xt)
            loss = self.pose_loss(x, alpha)
        return {"z": mu, "alpha": alpha, "loss": loss}

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.encode_with_pose(x)

    def on_validation_epoch_end(self) -> None:
        grid_batch, self._val_grid_batch = self._val_grid_batch, None
        if grid_batch is None or not self.hparams.log_images or self.trainer.sanity_checking:
            return
        loggers = [lg for lg in self.loggers if hasattr(lg, "log_image")]
        if not loggers or not self.trainer.is_global_zero:
            return
        from torchvision.utils import make_grid

        images = grid_batch.float().cpu()
        if images.dim() == 5:  # voxels: max projection along depth
            images = images.amax(dim=2)
        grid = make_grid(images.clamp(0, 1), nrow=images.shape[0] // 2, pad_value=0.5)
        for logger in loggers:
            logger.log_image(key="val/reconstructions", images=[grid], step=self.global_step,
                             caption=["top: inputs; bottom: A^-1(decoder(z)) at the searched pose"])

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}


__all__ = ["AffineVAE", "AffineVAEConfigError", "InputShapeError", "MODES", "NUM_PARAMS", "SPATIAL_DIMS",
           "kl_divergence", "reconstruction_loss", "reparameterize"]
