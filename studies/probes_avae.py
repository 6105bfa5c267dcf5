"""Affine VAE measurements inside a run (studies/avae_glyphs.yaml, studies/avae_table1_mnist.yaml): the loss of the
trained net on the canonical test images rotated by a list of angles, with and without the pose search.

The paper's Table 1 protocol (docs/affine_vae.md#published-numbers): every test image at every angle, loss = summed
squared error of the reconstruction at z = mu (after A_alpha^-1 when the pose is searched) plus the KL, per image,
averaged over the images; the table's number is the mean over the angles. Fig. 3's point, the loss of a net trained
at one orientation rising away from it, is the ``rise``: the mean loss over the angles at or beyond ``far_deg``
minus the loss at 0 degrees.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


class RotationSweepError(ValueError):
    """A sweep setting or a datamodule the sweep cannot use."""

    user_facing = True


def rise(losses: list[float], angles: list[float], far_deg: float = 60.0) -> float:
    """Mean loss over the angles >= ``far_deg`` minus the loss at 0 degrees (``angles`` must contain 0)."""
    far = [v for v, a in zip(losses, angles) if abs(a) >= far_deg]
    if 0.0 not in angles or not far:
        raise RotationSweepError(f"rise needs the angle 0 and at least one angle >= {far_deg} degrees, got {angles}")
    return sum(far) / len(far) - losses[angles.index(0.0)]


def _deg(a: float) -> str:
    return f"{a:g}".replace("-", "m").replace(".", "p")


class RotationSweep(pl.Callback):
    """Loss of an :class:`~modules.affine_vae.AffineVAE` on the datamodule's test images rotated by ``angles``.

    Runs once, at the end of the last training epoch (``trainer.max_epochs``), or at the end of a ``main.py
    validate`` (a ``fit: false`` study stage on an upstream checkpoint). The module is put in eval mode for the
    sweep and restored afterwards; the global random state is not touched (the searches draw from their own
    generators), so adding the probe does not change the training.

    Logged (``key`` prefix, default ``rotation``): ``{key}/loss_deg<a>`` per angle without search (identity pose),
    ``{key}/loss_mean`` (mean over the angles: Table 1's number) and ``{key}/rise``; with ``search`` also
    ``{key}/search_loss_deg<a>``, ``{key}/search_loss_mean`` and ``{key}/search_rise`` (the pose searched per image
    with ``restarts`` random draws and ``steps`` Adam steps, the best ``keep`` refined). Written to the run
    directory: ``rotation_sweep.json`` (the same numbers) and, with ``recon_deg`` set, ``rotation_recon.pt`` (the
    first ``recon_images`` test images rotated by ``recon_deg`` and their reconstructions without and with search;
    studies/hooks_avae.py draws them).

    Args:
        angles: test rotations in degrees (counter-clockwise as displayed); must include 0 for the rise.
        search: also evaluate with the pose search (not for ``mode="none"``).
        restarts / steps / keep: the search budget (``None``: the module's ``eval_restarts``/``eval_steps``/1).
        chunk: images per search batch; the search generator of chunk ``s`` (first image index) at angle index
            ``i`` is seeded ``10000 * seed + 100 * i + s`` (the protocol of the script this replaces).
        seed: seed of the search generators; ``None``: the run's ``seed_everything`` (``PL_GLOBAL_SEED``), else 0.
        max_images: use only the first ``max_images`` test images (``None``: all).
        far_deg: the rise averages the angles at or beyond this.
        images: where the test images come from: ``test_images`` (the datamodule attribute, as
            ``RotatedGlyphsDataModule`` has; test split at ``test_rotation: 0``) or ``test_dataloader`` (the first
            element of each batch).
        recon_deg / recon_images: the reconstruction grid's rotation and number of images (``None``: no grid).
    """

    def __init__(self, angles: list[float] = (0, 30, 60, 90, 120, 150, 180), search: bool = True,
                 restarts: int | None = None, steps: int | None = None, keep: int = 1, chunk: int = 100,
                 seed: int | None = None, max_images: int | None = None, far_deg: float = 60.0,
                 images: str = "test_images", recon_deg: float | None = 90.0, recon_images: int = 10,
                 key: str = "rotation") -> None:
        self.angles = [float(a) for a in angles]
        if not self.angles or 0.0 not in self.angles:
            raise RotationSweepError(f"RotationSweep: angles must include 0 (the rise is measured from it), got "
                                     f"{list(angles)}; set trainer.callbacks[...].init_args.angles")
        if images not in ("test_images", "test_dataloader"):
            raise RotationSweepError(f"RotationSweep: images must be 'test_images' or 'test_dataloader', got "
                                     f"{images!r}")
        if chunk < 1 or keep < 1 or (max_images is not None and max_images < 1) or recon_images < 1:
            raise RotationSweepError("RotationSweep: chunk, keep, max_images and recon_images must be >= 1")
        self.search, self.restarts, self.steps, self.keep = search, restarts, steps, keep
        self.chunk, self.seed, self.max_images, self.far_deg = chunk, seed, max_images, far_deg
        self.images, self.recon_deg, self.recon_images, self.key = images, recon_deg, recon_images, key
        self.values: dict[str, float] | None = None

    # ---------------------------------------------------------------------------------------------- hooks
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            self._run(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.values is not None:  # resumed from a checkpoint taken after the sweep: report it again
            self._log(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self._run(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.values = state_dict.get("values")

    # ---------------------------------------------------------------------------------------------- the sweep
    def _test_images(self, trainer: pl.Trainer) -> torch.Tensor:
        dm = trainer.datamodule
        if dm is None:
            raise RotationSweepError("RotationSweep needs a datamodule (its test split is the sweep's images)")
        if self.images == "test_images":
            x = getattr(dm, "test_images", None)
            if x is None:
                dm.setup("test")
                x = getattr(dm, "test_images", None)
            if x is None:
                raise RotationSweepError(
                    f"RotationSweep: the datamodule {type(dm).__name__} has no test_images; set the callback's "
                    "images: test_dataloader")
        else:
            x = torch.cat([b[0] if isinstance(b, list | tuple) else b for b in dm.test_dataloader()])
        return x[: self.max_images] if self.max_images else x

    def _seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", "0"))

    def _search(self, pl_module, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha*, the loss at alpha*) per image, the search's own best loss."""
        restarts = self.restarts or pl_module.hparams.get("eval_restarts") or pl_module.hparams.restarts
        steps = self.steps if self.steps is not None else pl_module.hparams.get("eval_steps")
        steps = pl_module.hparams.steps if steps is None else steps
        return pl_module.search_alpha(x, restarts, steps, min(self.keep, restarts), generator=generator)

    @torch.no_grad()
    def sweep(self, pl_module, images: torch.Tensor, seed: int) -> dict[str, list[float]]:
        """Per-angle mean loss without (``identity``) and with (``search``) the pose search."""
        from nets.affine_warp import rotate_2d

        search = self.search and getattr(pl_module, "mode", "none") != "none"
        out: dict[str, list[float]] = {"identity": []} | ({"search": []} if search else {})
        for i, deg in enumerate(self.angles):
            x = rotate_2d(images, math.radians(deg)).clamp(0, 1)
            ident, found = [], []
            for s in range(0, len(x), self.chunk):
                xb = x[s : s + self.chunk]
                ident.append(pl_module.pose_loss(xb, None))
                if search:
                    g = torch.Generator().manual_seed(10_000 * seed + 100 * i + s)
                    found.append(self._search(pl_module, xb, g)[1])
            out["identity"].append(float(torch.cat(ident).mean()))
            if search:
                out["search"].append(float(torch.cat(found).mean()))
        return out

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(pl_module, "net", None) is None or not hasattr(pl_module, "pose_loss"):
            raise RotationSweepError(f"RotationSweep measures an AffineVAE, got {type(pl_module).__name__}")
        was_training = pl_module.training
        pl_module.eval()
        try:
            images = self._test_images(trainer).to(pl_module.device)
            if images.dim() != 4:
                raise RotationSweepError(f"RotationSweep rotates 2D images (N, C, H, W), got {tuple(images.shape)}")
            seed = self._seed()
            curves = self.sweep(pl_module, images, seed)
            values: dict[str, float] = {}
            for kind, prefix in (("identity", ""), ("search", "search_")):
                if kind not in curves:
                    continue
                for a, v in zip(self.angles, curves[kind]):
                    values[f"{prefix}loss_deg{_deg(a)}"] = v
                values[f"{prefix}loss_mean"] = sum(curves[kind]) / len(curves[kind])
                values[f"{prefix}rise"] = rise(curves[kind], self.angles, self.far_deg)
            self.values = values
            if trainer.is_global_zero:
                self._write(trainer, pl_module, images, curves, seed)
        finally:
            pl_module.train(was_training)
        self._log(pl_module)

    def _log(self, pl_module: pl.LightningModule) -> None:
        for k, v in (self.values or {}).items():
            pl_module.log(f"{self.key}/{k}", v, on_step=False, on_epoch=True, sync_dist=False)

    def _write(self, trainer, pl_module, images: torch.Tensor, curves: dict[str, list[float]], seed: int) -> None:
        import json

        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        (root / "rotation_sweep.json").write_text(json.dumps(
            {"angles": self.angles, "seed": seed, "images": len(images), "curves": curves, "values": self.values},
            indent=1))
        if self.recon_deg is None:
            return
        from nets.affine_warp import rotate_2d

        with torch.no_grad():
            x = rotate_2d(images[: self.recon_images], math.radians(self.recon_deg)).clamp(0, 1)
            rows = {"input": x, "identity": pl_module.pose_loss(x, None, return_parts=True)[3]}
            if "search" in curves:
                alpha = self._search(pl_module, x, torch.Generator().manual_seed(seed))[0]
                rows["search"] = pl_module.pose_loss(x, alpha, return_parts=True)[3]
        torch.save({k: v.detach().cpu() for k, v in rows.items()} | {"deg": self.recon_deg},
                   root / "rotation_recon.pt")
        loggers = [lg for lg in trainer.loggers if hasattr(lg, "log_image")]
        if loggers:
            from torchvision.utils import make_grid

            grid = make_grid(torch.cat([rows[k].cpu() for k in rows]), nrow=len(x), pad_value=0.5)
            for lg in loggers:
                lg.log_image(key=f"{self.key}/reconstructions", images=[grid],
                             caption=[f"rows: {', '.join(rows)}; inputs rotated by {self.recon_deg:g} deg"])
