"""FPTT: Forward Propagation Through Time (Kag & Saligrama, ICML 2021), by manual optimisation over windows.

docs/fptt.md#algorithm. A sequence of length T is cut into P = ``parts`` windows of floor(T/P) steps plus one
remainder window if any (``window_bounds``; the release's split, which takes the remainder as one more window --
the release clips that window to floor(T/P) steps, which only matters when the remainder is longer than
floor(T/P), never in the recipes; here it always holds all remaining steps); the state is detached at each
boundary. Every parameter tensor W has a running average W_bar (initialised to W at
the start of training) and a gradient memory lambda (0). For each window p:

1. one optimizer step (``inner_steps`` for language modelling) on  l_p(W) + R(W),
   R(W) = -<W, lambda> + (c * alpha / 2) * ||W - W_bar||^2   (c = ``reg_scale``: 1 for the classification and
   adding-task runs, 2 for PTB as in the release's ``--lmbda``), with gradient-norm clipping;
2. lambda <- lambda - alpha * (W - W_bar);
3. W_bar <- (1 - beta) W_bar + beta W - (beta / alpha) lambda   (with the new lambda).

At the end of each training epoch W <- W_bar (``reset_to_average``, explicit as docs/fptt.md#differences-from-the-released-code asks) and
lambda <- 0 (``reset_lambda``; the release keeps lambda for PTB-300 and PTB-Char). The reset happens after the
epoch's last training batch, before validation, so validation and the epoch's checkpoint see the averaged weights.

Window losses (docs/fptt.md#window-losses), with P' the number of windows (P, or P + 1 with a remainder window) and
w_p = (p + 1) / P' (the intended weight; the release's ``p + 1/P`` on the adding task is a precedence slip):

* terminal regression (adding task): l_p = w_p * MSE(o_p, y), o_p the output at the end of window p; every
  window, the last included, is trained (the release skips the last one and never applies R on this task);
* terminal classification: l_p = w_p * CE(o_p, y) + (1 - w_p) * mean_{b,c}[-q_{p,c} log softmax(o_p)_c], the
  mean running over the batch and the C classes, with the target q_p (``window_target``) as released:

  - one-hot(y) for every window p >= P - 1 (the last window, and with a remainder window the one before it too,
    whose loss is then w_p CE + (1 - w_p) CE / C);
  - otherwise uniform (1/C) during the first ``soft_target_epochs`` = 19 epochs (the release's ``epoch < 20``
    counts epochs from 1), then with ``soft_targets="adaptive"`` the table entry for (window p, class y);
  - the table has one row per window p < P - 1 and class, starts at zeros (an entry never filled makes the soft
    term 0), and after each batch, for each window p < P - 1 and class, holds the softmax output of the
    **first** example of that class in the batch that the window misclassified (entries of classes with no
    such example are kept). Under DDP "first" is taken in the batch made of rank 0's examples, then rank 1's,
    and so on, so the table stays identical on every rank.

  Deviations kept as named options (the project's earlier behaviour): ``one_hot_windows="last"`` (one-hot for
  the last window only, so a remainder run trains window P - 1 on the soft target), ``soft_table_fill="mean"``
  (the mean softmax of all misclassified examples of the class, all-reduced over ranks),
  ``soft_table_init="uniform"`` (the table starts at 1/C) and ``soft_target_epochs=20`` (adaptive targets one
  epoch later);
* per-step (copy task, language modelling): l_p = cross-entropy over the window's targets.

Gradient accumulation (``accumulate_grad_batches`` = k; see ``modules.sequence_model``): one accumulated step is
FPTT on the union of the k batches. For each window p, every batch's window loss is back-propagated (weighted by
its share of the group's examples; R(W) is added once), each batch carrying its own recurrent state; then one
optimizer step, then **one** lambda and one W_bar update. So lambda and W_bar advance once per window of an
accumulated step -- k batches move them exactly as one batch k times larger would, not k times as far -- and the
soft-target table is filled from the union (first misclassified example in batch order). A global step is one
group of k batches.

The net is any recurrent ``nn.Module`` of the protocol in ``modules.sequence_model`` (argument ``net``; an
``nn.LSTM``/``nn.GRU`` or a cell is wrapped for you), or a ``SequenceNet`` built from ``cell``. W_bar and lambda
cover the net's trainable parameters.

State in checkpoints: W_bar, lambda, the soft-target table and an ``initialised`` flag are registered buffers of
``FPTTState`` (``fptt.*`` keys of the state dict), so ``--ckpt_path`` resumes them. Under DDP they stay identical
across ranks: W is identical (gradients are all-reduced), the updates are deterministic functions of W, W_bar and
lambda, and the soft targets are gathered from all ranks. One batch (one group of accumulated batches) is one
global step (see ``modules.sequence_model``).
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
        parts: P, the number of windows (plus one remainder window when P does not divide T).
        alpha, beta: the FPTT constants (adding task 0.5/0.5; MNIST/CIFAR 0.1/0.5; PTB-300 0.5/0.5).
        reg_scale: c in R(W) (1: classification and adding task; 2: PTB, the release's default ``--lmbda``).
        inner_steps: optimizer steps per window (PTB uses K > 1).
        reset_to_average: W <- W_bar at each epoch end.
        reset_lambda: lambda <- 0 at each epoch end.
        soft_targets: ``uniform`` (q_p uniform whenever it is not one-hot), ``adaptive`` (the released table after
            ``soft_target_epochs``) or ``none`` (no soft-target term: l_p = w_p CE).
        soft_target_epochs: epochs (from the first) with uniform targets before ``adaptive`` starts; 19 as
            released (``epoch < 20`` with epochs counted from 1). Deviation: 20, the project's earlier value.
        one_hot_windows: ``release`` (one-hot target for every window p >= P - 1) or, a deviation, ``last``
            (one-hot for the last window only).
        soft_table_fill: ``first`` (as released: the first misclassified example of the class in the batch) or, a
            deviation, ``mean`` (the mean over all of them).
        soft_table_init: ``zeros`` (as released) or, a deviation, ``uniform`` (1/C).
    """

    def __init__(self, *args: Any, parts: int = 10, alpha: float = 0.5, beta: float = 0.5, reg_scale: float = 1.0,
                 inner_steps: int = 1, reset_to_average: bool = True, reset_lambda: bool = True,
                 soft_targets: Literal["uniform", "adaptive", "none"] = "uniform", soft_target_epochs: int = 19,
                 one_hot_windows: Literal["release", "last"] = "release",
                 soft_table_fill: Literal["first", "mean"] = "first",
                 soft_table_init: Literal["zeros", "uniform"] = "zeros", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "net"])
        self._record_net(kwargs.get("net"))
        if parts < 1:
            raise SequenceError(f"parts (the number of FPTT windows) must be >= 1, got {parts}")
        if alpha <= 0 or not 0 < beta <= 1:
            raise SequenceError(f"FPTT needs alpha > 0 and 0 < beta <= 1, got alpha={alpha}, beta={beta}")
        if inner_steps < 1:
            raise SequenceError(f"inner_steps (optimizer steps per window) must be >= 1, got {inner_steps}")
        for name, value, allowed in (("soft_targets", soft_targets, ("uniform", "adaptive", "none")),
                                     ("one_hot_windows", one_hot_windows, ("release", "last")),
                                     ("soft_table_fill", soft_table_fill, ("first", "mean")),
                                     ("soft_table_init", soft_table_init, ("zeros", "uniform"))):
            if value not in allowed:
                raise SequenceError(f"{name} must be one of {allowed}, got {value!r}")
        if soft_target_epochs < 0:
            raise SequenceError(f"soft_target_epochs must be >= 0, got {soft_target_epochs}")
        self.parts, self.alpha, self.beta, self.reg_scale = int(parts), float(alpha), float(beta), float(reg_scale)
        self.inner_steps = int(inner_steps)
        self.fptt = FPTTState(self._fptt_params())
        n_cls = self.hparams.num_classes
        # per-window, per-class soft targets (rows p < P; the release fills p < P - 1); only the adaptive
        # classification mode needs them (a P x C x C table would be gigabytes for a 10k-word vocabulary)
        adaptive = self.task == "classification" and soft_targets == "adaptive"
        shape = (self.parts, n_cls, n_cls) if adaptive else (0, n_cls, n_cls)
        fill = 0.0 if soft_table_init == "zeros" else 1.0 / n_cls
        self.register_buffer("soft_table", torch.full(shape, fill))
        self._reset_epoch = -1
        self.window_record: list[tuple[torch.Tensor | None, torch.Tensor]] = []

    def _fptt_params(self) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the table lost its unused last row (P + 1 rows) load into P rows."""
        sd = checkpoint.get("state_dict", {})
        table = sd.get("soft_table")
        if isinstance(table, torch.Tensor) and table.dim() == 3 and table.shape[0] == self.soft_table.shape[0] + 1:
            sd["soft_table"] = table[: self.soft_table.shape[0]]

    # ------------------------------------------------------------------ FPTT pieces
    def on_train_start(self) -> None:
        self.fptt.start(self._fptt_params())  # after init_from / DDP broadcast; skipped on resume

    def adaptive_at(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (counted from 0, Lightning's ``current_epoch``) uses the adaptive table."""
        return self.hparams.soft_targets == "adaptive" and epoch >= self.hparams.soft_target_epochs

    def _one_hot_from(self, n_windows: int) -> int:
        """The first window trained on the one-hot target."""
        return self.parts - 1 if self.hparams.one_hot_windows == "release" else n_windows - 1

    def window_target(self, p: int, n_windows: int, y: torch.Tensor) -> torch.Tensor | None:
        """q_p of the module docstring, ``(B, C)``, for terminal classification; ``None`` with ``soft_targets="none"``."""
        if self.hparams.soft_targets == "none":
            return None
        n = self.hparams.num_classes
        if p >= self._one_hot_from(n_windows):
            return F.one_hot(y, n).float()
        if self.adaptive_at(self.current_epoch):
            return self.soft_table[p][y].float()
        return torch.full((y.shape[0], n), 1.0 / n, device=y.device)

    def window_loss(self, out: torch.Tensor, y: torch.Tensor, p: int, n_windows: int,
                    q: torch.Tensor | None = None) -> torch.Tensor:
        """l_p of the module docstring for the terminal tasks (``out``: the output at the end of window p; ``q``:
        the target, ``window_target`` when not given)."""
        w = (p + 1) / n_windows
        if self.task == "regression":
            return w * F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
        ce = F.cross_entropy(out, y)
        if q is None:
            q = self.window_target(p, n_windows, y)
        if q is None:
            return w * ce
        soft = -(q * F.log_softmax(out.float(), dim=-1)).mean()
        return w * ce + (1 - w) * soft

    @torch.no_grad()
    def _update_soft_table(self, outs: list[torch.Tensor], y: torch.Tensor) -> None:
        """Fill the table from the windows' outputs ``outs[p]`` ``(B, C)`` on labels ``y`` (module docstring)."""
        n = self.hparams.num_classes
        rows = min(self._one_hot_from(len(outs)), self.soft_table.shape[0])
        ddp = dist.is_available() and dist.is_initialized()
        for p, out in enumerate(outs[:rows]):
            prob = out.float().softmax(-1)
            wrong = out.argmax(-1) != y
            if self.hparams.soft_table_fill == "mean":
                w = wrong.float()
                sums = torch.zeros(n, n, device=out.device).index_add_(0, y, prob * w[:, None])
                counts = torch.zeros(n, device=out.device).index_add_(0, y, w)
                if ddp:
                    dist.all_reduce(sums)
                    dist.all_reduce(counts)
                have = counts > 0
                self.soft_table[p][have] = (sums[have] / counts[have, None]).to(self.soft_table.dtype)
                continue
            mine = (y[None, :] == torch.arange(n, device=y.device)[:, None]) & wrong[None, :]  # (C, B)
            have = mine.any(1)
            first = prob[mine.int().argmax(1)]  # argmax gives the first True; rows of classes without one unused
            if ddp:
                world = dist.get_world_size()
                have = have.to(torch.uint8)  # gloo gathers no bools
                haves = [torch.empty_like(have) for _ in range(world)]
                firsts = [torch.empty_like(first) for _ in range(world)]
                dist.all_gather(haves, have)
                dist.all_gather(firsts, first.contiguous())
                have_all, first_all = torch.stack(haves).bool(), torch.stack(firsts)  # (R, C), (R, C, C)
                rank = have_all.int().argmax(0)  # the first rank that has one, per class
                have = have_all.any(0)
                first = first_all[rank, torch.arange(n, device=y.device)]
            self.soft_table[p][have] = first[have].to(self.soft_table.dtype)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        group = self._collect(batch, batch_idx)
        if group is None:
            return None
        loss = self._train_group(group)
        self._step_scheduler("step")
        if self._is_last_batch(batch_idx):
            self._epoch_reset()
        return loss

    def _train_group(self, group: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """FPTT on the union of the group's batches (one batch without accumulation); module docstring."""
        opt = self.optimizers()
        params = self._fptt_params()
        n_all = sum(int(x.shape[0]) for x, _ in group)
        shares = [x.shape[0] / n_all for x, _ in group]
        length = group[0][0].shape[1]
        bounds = window_bounds(length, self.parts)
        n_windows = len(bounds)
        terminal_cls = self.task == "classification"
        states: list[Any] = [None] * len(group)
        total_task = torch.zeros((), device=group[0][0].device)
        total_reg = torch.zeros((), device=group[0][0].device)
        outs: list[list[torch.Tensor]] = []  # outs[p][j]: output at the end of window p for batch j
        self.window_record = []
        for p, (a, b) in enumerate(bounds):
            start = list(states)
            targets = [self.window_target(p, n_windows, y) if terminal_cls else None for _, y in group]
            for k in range(self.inner_steps):
                opt.zero_grad()
                reg = self.fptt.regularizer(params, self.alpha, self.reg_scale)
                window_outs, window_loss = [], torch.zeros((), device=total_task.device)
                for j, (x, y) in enumerate(group):
                    hidden, state = self._run_net(x[:, a:b], start[j], t0=a)
                    if self.task == "sequence":
                        out = self.net.readout(hidden)
                        task_loss = self._sequence_loss(out, y[:, a:b])
                    else:
                        out = self.net.readout(hidden[:, -1])
                        task_loss = self.window_loss(out, y, p, n_windows, q=targets[j])
                    loss = task_loss * shares[j]
                    if j == len(group) - 1:
                        loss = loss + reg  # R(W) once per optimizer step
                    self.manual_backward(loss)
                    states[j] = state
                    window_outs.append(out.detach())
                    window_loss = window_loss + task_loss.detach().float() * shares[j]
                if self.hparams.gradient_clip_val:
                    self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val,
                                        gradient_clip_algorithm="norm")
                self._opt_step(opt, last=p == n_windows - 1 and k == self.inner_steps - 1)
            self.fptt.update(params, self.alpha, self.beta)
            states = [self._detach(s) for s in states]
            total_task = total_task + window_loss * ((b - a) if self.task == "sequence" else 1)
            total_reg = total_reg + reg.detach().float()
            outs.append(window_outs)
            if terminal_cls:
                q = None if targets[0] is None else torch.cat(targets)
                self.window_record.append((q, window_loss))
        ys = torch.cat([y for _, y in group])
        out_last = torch.cat(outs[-1])
        if terminal_cls and self.hparams.soft_targets == "adaptive":
            self._update_soft_table([torch.cat(o) for o in outs], ys)
        if self.task == "sequence":
            loss = total_task / length
            y_log = ys[:, bounds[-1][0]:]
        else:
            loss = self._terminal_loss(out_last, ys)  # the true terminal loss of the last window, comparable to BPTT
            y_log = ys
        self._log_metrics("train", loss, out_last, y_log)
        self.log("train/fptt_reg", total_reg / n_windows, on_step=True, on_epoch=False, batch_size=ys.shape[0])
        return loss

    def _epoch_reset(self) -> None:
        if self._reset_epoch == self.current_epoch:
            return
        self._reset_epoch = self.current_epoch
        if self.hparams.reset_to_average:
            self.fptt.reset_weights(self._fptt_params())
        if self.hparams.reset_lambda:
            self.fptt.reset_lambda()


FPTT = FPTTSequenceModel
"""Short name: ``FPTT(net=nn.GRU(...), num_classes=..., input_shape=...)``."""
