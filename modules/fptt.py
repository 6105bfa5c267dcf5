"""FPTT: Forward Propagation Through Time (Kag & Saligrama, ICML 2021), by manual optimisation over windows.

REFERENCE.md section 6.2. A sequence of length T is cut into P = ``parts`` windows of floor(T/P) steps plus one
remainder window if any (``window_bounds``); the state is detached at each boundary. Every parameter tensor W has
a running average W_bar (initialised to W at the start of training) and a gradient memory lambda (0). For each
window p:

1. one optimizer step (``inner_steps`` for language modelling) on  l_p(W) + R(W),
   R(W) = -<W, lambda> + (c * alpha / 2) * ||W - W_bar||^2   (c = ``reg_scale``: 1 for the classification and
   adding-task runs, 2 for PTB as in the release's ``--lmbda``), with gradient-norm clipping;
2. lambda <- lambda - alpha * (W - W_bar);
3. W_bar <- (1 - beta) W_bar + beta W - (beta / alpha) lambda   (with the new lambda).

At the end of each training epoch W <- W_bar (``reset_to_average``, explicit as REFERENCE.md section 6.6 asks) and
lambda <- 0 (``reset_lambda``; the release keeps lambda for PTB-300 and PTB-Char). The reset happens after the
epoch's last training batch, before validation, so validation and the epoch's checkpoint see the averaged weights.

Window losses (section 6.3), with P' the number of windows and w_p = (p + 1) / P' (the intended weight; the
release's ``p + 1/P`` is a precedence slip):

* terminal regression (adding task): l_p = w_p * MSE(o_p, y), o_p the output at the end of window p; every
  window, the last included, is trained (the release skips the last one and never applies R on this task);
* terminal classification: l_p = w_p * CE(o_p, y) + (1 - w_p) * mean_c[-q_{p,c} log softmax(o_p)_c], with the
  soft target q_p uniform for the first ``soft_target_epochs`` epochs, then (``soft_targets="adaptive"``) the
  stored mean softmax of the misclassified examples of class y at window p (all-reduced over DDP ranks), and
  one-hot(y) for the last window;
* per-step (copy task, language modelling): l_p = cross-entropy over the window's targets.

State in checkpoints: W_bar, lambda, the soft-target table and an ``initialised`` flag are registered buffers of
``FPTTState`` (``fptt.*`` keys of the state dict), so ``--ckpt_path`` resumes them. Under DDP they stay identical
across ranks: W is identical (gradients are all-reduced), the updates are deterministic functions of W, W_bar and
lambda, and the soft targets are all-reduced. One batch is one global step (see ``modules.sequence_model``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from modules.sequence_model import SequenceError, SequenceModel, window_bounds


def _key(name: str) -> str:
    return name.replace(".", "__")


class FPTTState(nn.Module):
    """W_bar and lambda for each parameter of a model, as buffers (``bar__<name>``, ``lam__<name>``)."""

    def __init__(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        super().__init__()
        self.names = [n for n, _ in named_params]
        for name, p in named_params:
            self.register_buffer(f"bar__{_key(name)}", p.detach().clone())
            self.register_buffer(f"lam__{_key(name)}", torch.zeros_like(p))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.long))

    def bar(self, name: str) -> torch.Tensor:
        return getattr(self, f"bar__{_key(name)}")

    def lam(self, name: str) -> torch.Tensor:
        return getattr(self, f"lam__{_key(name)}")

    @torch.no_grad()
    def start(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        """W_bar <- W and lambda <- 0, once (not after a resume: the flag is in the checkpoint)."""
        if int(self.initialised):
            return
        for name, p in named_params:
            self.bar(name).copy_(p)
            self.lam(name).zero_()
        self.initialised.fill_(1)

    def regularizer(self, named_params: list[tuple[str, torch.Tensor]], alpha: float,
                    reg_scale: float) -> torch.Tensor:
        """R(W) = sum over tensors of -<W, lambda> + (c alpha / 2) ||W - W_bar||^2."""
        total = None
        for name, p in named_params:
            lam, bar = self.lam(name), self.bar(name)
            term = -(p * lam).sum() + 0.5 * reg_scale * alpha * (p - bar).pow(2).sum()
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def update(self, named_params: list[tuple[str, torch.Tensor]], alpha: float, beta: float) -> None:
        """lambda <- lambda - alpha (W - W_bar);  W_bar <- (1 - beta) W_bar + beta W - (beta / alpha) lambda."""
        for name, p in named_params:
            lam, bar = self.lam(name), self.bar(name)
            lam.sub_(alpha * (p - bar))
            bar.mul_(1 - beta).add_(beta * p).sub_((beta / alpha) * lam)

    @torch.no_grad()
    def reset_weights(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        for name, p in named_params:
            p.copy_(self.bar(name))

    @torch.no_grad()
    def reset_lambda(self) -> None:
        for name in self.names:
            self.lam(name).zero_()


class FPTTSequenceModel(SequenceModel):
    """A ``SequenceModel`` trained by FPTT (module docstring). Extra args:

    Args:
        parts: P, the number of windows.
        alpha, beta: the FPTT constants (adding task 0.5/0.5; MNIST/CIFAR 0.1/0.5; PTB-300 0.5/0.5).
        reg_scale: c in R(W) (1: classification and adding task; 2: PTB, the release's default ``--lmbda``).
        inner_steps: optimizer steps per window (PTB uses K > 1).
        reset_to_average: W <- W_bar at each epoch end.
        reset_lambda: lambda <- 0 at each epoch end.
        soft_targets: ``uniform`` (always uniform q_p), ``adaptive`` (the release's misclassified-mean table after
            ``soft_target_epochs``) or ``none`` (no soft-target term: l_p = w_p CE).
        soft_target_epochs: epochs with uniform soft targets before ``adaptive`` starts.
    """

    def __init__(self, *args: Any, parts: int = 10, alpha: float = 0.5, beta: float = 0.5, reg_scale: float = 1.0,
                 inner_steps: int = 1, reset_to_average: bool = True, reset_lambda: bool = True,
                 soft_targets: Literal["uniform", "adaptive", "none"] = "uniform", soft_target_epochs: int = 20,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if parts < 1:
            raise SequenceError(f"model.init_args.parts (FPTT windows) must be >= 1, got {parts}")
        if alpha <= 0 or not 0 < beta <= 1:
            raise SequenceError(f"FPTT needs alpha > 0 and 0 < beta <= 1, got alpha={alpha}, beta={beta}")
        if inner_steps < 1:
            raise SequenceError(f"model.init_args.inner_steps must be >= 1, got {inner_steps}")
        if soft_targets not in ("uniform", "adaptive", "none"):
            raise SequenceError(f"soft_targets must be uniform, adaptive or none, got {soft_targets!r}")
        self.parts, self.alpha, self.beta, self.reg_scale = int(parts), float(alpha), float(beta), float(reg_scale)
        self.inner_steps = int(inner_steps)
        self.fptt = FPTTState(self._fptt_params())
        n_cls = self.hparams.num_classes
        # per-window, per-class soft targets; only the adaptive classification mode needs them (a (P+1) x C x C
        # table would be gigabytes for a 10k-word vocabulary)
        adaptive = self.task == "classification" and soft_targets == "adaptive"
        shape = (self.parts + 1, n_cls, n_cls) if adaptive else (0, n_cls, n_cls)
        self.register_buffer("soft_table", torch.full(shape, 1.0 / n_cls))
        self._reset_epoch = -1

    def _fptt_params(self) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------ FPTT pieces
    def on_train_start(self) -> None:
        self.fptt.start(self._fptt_params())  # after init_from / DDP broadcast; skipped on resume

    def _soft_target(self, p: int, n_windows: int, y: torch.Tensor) -> torch.Tensor | None:
        mode = self.hparams.soft_targets
        if mode == "none" or p >= n_windows - 1:
            return None
        if mode == "adaptive" and self.current_epoch >= self.hparams.soft_target_epochs:
            return self.soft_table[p][y]
        n = self.hparams.num_classes
        return torch.full((y.shape[0], n), 1.0 / n, device=y.device)

    def window_loss(self, out: torch.Tensor, y: torch.Tensor, p: int, n_windows: int) -> torch.Tensor:
        """l_p of the module docstring for the terminal tasks (``out``: the output at the end of window p)."""
        w = (p + 1) / n_windows
        if self.task == "regression":
            return w * F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
        ce = F.cross_entropy(out, y)
        q = self._soft_target(p, n_windows, y)
        if q is None:
            return ce if p >= n_windows - 1 else w * ce
        soft = -(q * F.log_softmax(out, dim=-1)).mean(dim=-1).mean()
        return w * ce + (1 - w) * soft

    @torch.no_grad()
    def _update_soft_table(self, outs: list[torch.Tensor], y: torch.Tensor) -> None:
        n = self.hparams.num_classes
        for p, out in enumerate(outs[: self.parts + 1]):
            prob = out.softmax(-1)
            wrong = (out.argmax(-1) != y).float()
            sums = torch.zeros(n, n, device=out.device).index_add_(0, y, prob * wrong[:, None])
            counts = torch.zeros(n, device=out.device).index_add_(0, y, wrong)
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(sums)
                dist.all_reduce(counts)
            have = counts > 0
            self.soft_table[p][have] = sums[have] / counts[have, None]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        self._check_batch(x)
        opt = self.optimizers()
        params = self._fptt_params()
        bounds = window_bounds(x.shape[1], self.parts)
        n_windows = len(bounds)
        state = None
        total_task = x.new_zeros(())
        total_reg = x.new_zeros(())
        outs: list[torch.Tensor] = []
        for p, (a, b) in enumerate(bounds):
            start_state = state
            for k in range(self.inner_steps):
                hidden, state = self.net(x[:, a:b], start_state, t0=a)
                if self.task == "sequence":
                    out = self.net.readout(hidden)
                    task_loss = self._sequence_loss(out, y[:, a:b])
                else:
                    out = self.net.readout(hidden[:, -1])
                    task_loss = self.window_loss(out, y, p, n_windows)
                reg = self.fptt.regularizer(params, self.alpha, self.reg_scale)
                opt.zero_grad()
                self.manual_backward(task_loss + reg)
                if self.hparams.gradient_clip_val:
                    self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val,
                                        gradient_clip_algorithm="norm")
                self._opt_step(opt, last=p == n_windows - 1 and k == self.inner_steps - 1)
            self.fptt.update(params, self.alpha, self.beta)
            state = self.net.detach_state(state)
            total_task = total_task + task_loss.detach() * ((b - a) if self.task == "sequence" else 1)
            total_reg = total_reg + reg.detach()
            outs.append(out.detach())
        if self.task == "classification" and self.hparams.soft_targets == "adaptive":
            self._update_soft_table(outs, y)
        out_last = outs[-1]
        if self.task == "sequence":
            loss = total_task / x.shape[1]
            y_log = y[:, bounds[-1][0]:]
        else:
            loss = self._terminal_loss(out_last, y)  # the true terminal loss of the last window, comparable to BPTT
            y_log = y
        self._log_metrics("train", loss, out_last, y_log)
        self.log("train/fptt_reg", total_reg / n_windows, on_step=True, on_epoch=False, batch_size=y.shape[0])
        self._step_scheduler("step")
        if self._is_last_batch(batch_idx):
            self._epoch_reset()
        return loss

    def _is_last_batch(self, batch_idx: int) -> bool:
        n = self.trainer.num_training_batches
        return isinstance(n, int) and batch_idx == n - 1

    def _epoch_reset(self) -> None:
        if self._reset_epoch == self.current_epoch:
            return
        self._reset_epoch = self.current_epoch
        if self.hparams.reset_to_average:
            self.fptt.reset_weights(self._fptt_params())
        if self.hparams.reset_lambda:
            self.fptt.reset_lambda()
