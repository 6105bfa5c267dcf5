"""NonFiniteLossGuard: stop training at the first NaN or inf loss, before it reaches the weights.

Drop-in Lightning callback (imports only torch and lightning). The check runs in ``on_before_backward``, i.e.
before the backward pass and the optimizer step, so the weights and every checkpoint written so far stay the last
good ones. Works with automatic and manual optimisation (``manual_backward`` calls the same hook).

Example::

    trainer = Trainer(callbacks=[NonFiniteLossGuard()])
"""

from __future__ import annotations

import torch

import lightning.pytorch as pl


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite."""


class NonFiniteLossGuard(pl.Callback):
    """Raises :class:`NonFiniteLossError` with a clear message when the loss is not finite.

    Args:
        check_every_n_steps: check one step in n (1 = every step; the check costs one device sync).
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, check_every_n_steps)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if trainer.global_step % self.check_every_n_steps:
            return
        if torch.isfinite(loss.detach()).all():
            return
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        where = (
            f"The last good checkpoint is {ckpt}; it was not overwritten."
            if ckpt
            else "No checkpoint had been written yet."
        )
        raise NonFiniteLossError(
            f"The training loss became {loss.detach().float().item()} at epoch {trainer.current_epoch}, "
            f"global step {trainer.global_step} ({type(pl_module).__name__}); the run was stopped before the "
            f"backward pass, so the weights were not updated with it. {where} Lower the learning rate, enable "
            "gradient clipping (trainer.gradient_clip_val) or check the inputs for NaN, then resume with "
            "`--ckpt_path last` or start again."
        )
