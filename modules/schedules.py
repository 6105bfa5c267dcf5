"""Learning-rate schedules written in epochs, as ``torch.optim.lr_scheduler.LRScheduler`` subclasses.

A schedule in epochs means the same run on 1, 8 or 64 devices: the number of optimizer steps per epoch changes
with the device count (or the gradient accumulation), an epoch does not. Step them once per epoch (Lightning's
``interval: epoch``, the default of the project's modules), e.g. in YAML::

    model:
      init_args:
        optimizer:
          class_path: timm.optim.RMSpropTF
          init_args: {lr: 0.192, alpha: 0.9, eps: 1.0e-3, momentum: 0.9, weight_decay: 1.0e-5}
        lr_scheduler:
          class_path: modules.schedules.WarmupStepDecayLR
          init_args: {decay_epochs: 2.4, decay_rate: 0.97, warmup_epochs: 3, warmup_lr_init: 1.0e-6}

:class:`WarmupStepDecayLR` is the "step" schedule of the timm ImageNet trainer used with ``t_in_epochs``: that
trainer sets the learning rate once per epoch, so during epoch ``t`` (counting from 0)

* ``t < warmup_epochs``: ``lr = warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_epochs``;
* otherwise ``lr = base_lr * decay_rate ** floor(t / decay_epochs)`` (the decay counts from epoch 0, not from
  the end of the warm-up);
* optional multiplicative noise ``lr * (1 + n)`` for ``noise_range_epochs[0] <= t < noise_range_epochs[1]``, where
  ``n`` is a standard normal draw times ``noise_std``, redrawn until ``|n| < noise_pct``, from a generator seeded
  with ``noise_seed + t`` (so a resumed run draws the same noise).

:class:`WarmupCosineLR` is the matching cosine schedule (linear warm-up, then a half cosine from ``base_lr`` to
``min_lr`` whose phase counts from epoch 0 like the step schedule, then ``min_lr`` from ``total_epochs`` on).

The optimizers of those runs: :class:`TimmRMSpropTF` (timm's ``RMSpropTF``: eps inside the square root, the
squared-gradient average starting at 1, the learning rate inside the momentum) and :class:`TimmAdamW`, both with
the timm optimizer factory's parameter groups (no weight decay on 1-D parameters: biases and normalisation
weights), so that ``optimizer: class_path: modules.schedules.TimmRMSpropTF`` builds what ``--opt rmsproptf``
built there from the plain parameter list a LightningModule passes.

The schedules keep their state in ``state_dict`` (``last_epoch``), so they resume with the checkpoint. A schedule that does
not fit the run (a warm-up as long as the run, a noise range past its end) is refused by
:meth:`check_run_length`, which callbacks/global_batch.py calls with the trainer's ``max_epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.optim import RMSpropTF
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def timm_decay_groups(params, weight_decay: float, exclude_1d: bool = True) -> list[dict]:
    """Parameter groups as timm's optimizer factory makes them (``filter_bias_and_bn``): parameters with at most
    one dimension (biases, batch-norm and layer-norm weights) get no weight decay. Given groups pass through."""
    params = list(params)
    if not params or isinstance(params[0], dict):
        return params
    params = [p[1] if isinstance(p, tuple) else p for p in params]
    params = [p for p in params if p.requires_grad]
    if not weight_decay or not exclude_1d:
        return [{"params": params, "weight_decay": weight_decay}]
    groups = [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
              {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]


class TimmRMSpropTF(RMSpropTF):
    """timm's ``RMSpropTF`` with the timm factory's weight-decay groups (see :func:`timm_decay_groups`).

    Args: as ``timm.optim.RMSpropTF`` (``alpha`` 0.9 and ``momentum`` 0.9 as ``--opt rmsproptf`` sets them), plus
    ``exclude_1d_from_decay`` (True: no weight decay on biases and normalisation weights).
    """

    def __init__(self, params, lr: float = 0.01, alpha: float = 0.9, eps: float = 1e-10, weight_decay: float = 0.0,
                 momentum: float = 0.9, exclude_1d_from_decay: bool = True, centered: bool = False,
                 decoupled_decay: bool = False, lr_in_momentum: bool = True) -> None:
        super().__init__(timm_decay_groups(params, weight_decay, exclude_1d_from_decay), lr=lr, alpha=alpha,
                         eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                         decoupled_decay=decoupled_decay, lr_in_momentum=lr_in_momentum)


class TimmAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (what timm's factory builds for ``--opt adamw``) with its weight-decay groups."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, exclude_1d_from_decay: bool = True) -> None:
        super().__init__(timm_decay_groups(params, weight_decay, exclude_1d_from_decay), lr=lr, betas=betas,
                         eps=eps, weight_decay=weight_decay)


def _positive(owner: str, key: str, value: float, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {key} must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: {key} must be finite and {bound}, got {value!r}.")
    return v


class _EpochSchedule(LRScheduler):
    """Shared warm-up, noise and checks; subclasses give ``_after_warmup(t, base_lr)``."""

    def __init__(self, optimizer: Optimizer, warmup_epochs: int = 0, warmup_lr_init: float = 0.0,
                 noise_range_epochs: Sequence[float] | None = None, noise_pct: float = 0.67,
                 noise_std: float = 1.0, noise_seed: int = 42, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"{owner}: warmup_epochs must be an integer >= 0 (the schedule changes once per epoch), "
                             f"got {warmup_epochs!r}.")
        self.warmup_epochs = warmup_epochs
        self.warmup_lr_init = _positive(owner, "warmup_lr_init", warmup_lr_init, allow_zero=True)
        if noise_range_epochs is not None:
            rng = list(noise_range_epochs)
            if len(rng) != 2 or not all(isinstance(v, int | float) for v in rng) or not 0 <= rng[0] < rng[1]:
                raise ValueError(f"{owner}: noise_range_epochs must be [first, end) epochs with 0 <= first < end, "
                                 f"got {noise_range_epochs!r}; leave it out for no noise.")
            noise_range_epochs = (float(rng[0]), float(rng[1]))
        self.noise_range_epochs = noise_range_epochs
        self.noise_pct = _positive(owner, "noise_pct", noise_pct)
        self.noise_std = _positive(owner, "noise_std", noise_std)
        self.noise_seed = int(noise_seed)
        super().__init__(optimizer, last_epoch)

    # the schedule as a pure function of the epoch ------------------------------------------------------------
    def _after_warmup(self, t: int, base_lr: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def noise(self, t: int) -> float:
        """The relative noise ``n`` of epoch ``t`` (0 outside ``noise_range_epochs``)."""
        rng = self.noise_range_epochs
        if rng is None or not rng[0] <= t < rng[1]:
            return 0.0
        g = torch.Generator()
        g.manual_seed(self.noise_seed + t)
        while True:
            n = torch.randn(1, generator=g).item() * self.noise_std
            if abs(n) < self.noise_pct:
                return n

    def lr_at(self, t: int, base_lr: float) -> float:
        """Learning rate during epoch ``t`` (from 0) of a parameter group whose configured rate is ``base_lr``."""
        if t < self.warmup_epochs:
            lr = self.warmup_lr_init + t * (base_lr - self.warmup_lr_init) / self.warmup_epochs
        else:
            lr = self._after_warmup(t, base_lr)
        return lr * (1.0 + self.noise(t))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    # checks against the run --------------------------------------------------------------------------------
    def check_run_length(self, max_epochs: int | None, key: str = "max_epochs") -> None:
        """Refuses a schedule that does not fit a run of ``max_epochs`` epochs (``key`` names that setting)."""
        owner = type(self).__name__
        if max_epochs is None or max_epochs < 0:
            raise ValueError(f"{owner} is written in epochs, but the run has no epoch limit ({key}={max_epochs}); "
                             f"set {key} to the number of epochs the schedule was written for.")
        if self.warmup_epochs >= max_epochs:
            raise ValueError(f"{owner}: warmup_epochs={self.warmup_epochs} does not fit a run of {key}={max_epochs} "
                             "epochs (the warm-up would never end); shorten the warm-up or lengthen the run.")
        if self.noise_range_epochs is not None and self.noise_range_epochs[1] > max_epochs:
            raise ValueError(f"{owner}: noise_range_epochs={list(self.noise_range_epochs)} ends after the run's "
                             f"{key}={max_epochs} epochs; scale the range to the run (the timm trainer gives it as "
                             "fractions of the epochs).")


class WarmupStepDecayLR(_EpochSchedule):
    """Linear warm-up, then ``lr = base_lr * decay_rate ** floor(epoch / decay_epochs)``; see the module docstring.

    Args:
        optimizer: the optimizer (its groups' ``lr`` are the base rates).
        decay_epochs: epochs between two decays (may be fractional, e.g. 2.4).
        decay_rate: multiplier of each decay, in (0, 1].
        warmup_epochs: epochs of linear warm-up from ``warmup_lr_init``.
        warmup_lr_init: learning rate of epoch 0 when there is a warm-up.
        noise_range_epochs: ``[first, end)`` epochs with multiplicative learning-rate noise (None: none).
        noise_pct, noise_std, noise_seed: the noise's bound, scale and seed.
    """

    def __init__(self, optimizer: Optimizer, decay_epochs: float, decay_rate: float, warmup_epochs: int = 0,
                 warmup_lr_init: float = 0.0, noise_range_epochs: Sequence[float] | None = None,
                 noise_pct: float = 0.67, noise_std: float = 1.0, noise_seed: int = 42,
                 last_epoch: int = -1) -> None:
        owner = type(self).__name__
        self.decay_epochs = _positive(owner, "decay_epochs", decay_epochs)
        rate = _positive(owner, "decay_rate", decay_rate)
        if rate > 1:
            raise ValueError(f"{owner}: decay_rate must be in (0, 1] (a multiplier per decay), got {decay_rate!r}.")
        self.decay_rate = rate
        super().__init__(optimizer, warmup_epochs, warmup_lr_init, noise_range_epochs, noise_pct, noise_std,
                         noise_seed, last_epoch)

    def _after_warmup(self, t: int, base_lr: float) -> float:
        return base_lr * self.decay_rate ** (t // self.decay_epochs)

    def check_run_length(self, max_epochs: int | None, key: str = "max_epochs") -> None:
        super().check_run_length(max_epochs, key)
        if self.decay_epochs >= max_epochs:  # type: ignore[operator]
            raise ValueError(f"{type(self).__name__}: decay_epochs={self.decay_epochs} does not fit a run of "
                             f"{key}={max_epochs} epochs (the rate would never decay); shorten decay_epochs or "
                             "lengthen the run.")


class WarmupCosineLR(_EpochSchedule):
    """Linear warm-up, then ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total_epochs)) / 2`` for epoch ``t``
    (timm's cosine schedule with ``t_in_epochs``, no restarts); from ``total_epochs`` on it stays at ``min_lr``
    (the timm trainer's cool-down epochs).

    Args:
        total_epochs: length of the cosine in epochs (the run's epochs without the cool-down).
        min_lr: the floor.
        warmup_epochs, warmup_lr_init, noise_*: as in :class:`WarmupStepDecayLR`.
    """

    def __init__(self, optimizer: Optimizer, total_epochs: int, min_lr: float = 0.0, warmup_epochs: int = 0,
                 warmup_lr_init: float = 0.0, noise_range_epochs: Sequence[float] | None = None,
                 noise_pct: float = 0.67, noise_std: float = 1.0, noise_seed: int = 42,
                 last_epoch: int = -1) -> None:
        owner = type(self).__name__
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs <= 0:
            raise ValueError(f"{owner}: total_epochs must be an integer > 0, got {total_epochs!r}.")
        self.total_epochs = total_epochs
        self.min_lr = _positive(owner, "min_lr", min_lr, allow_zero=True)
        super().__init__(optimizer, warmup_epochs, warmup_lr_init, noise_range_epochs, noise_pct, noise_std,
                         noise_seed, last_epoch)

    def _after_warmup(self, t: int, base_lr: float) -> float:
        if t >= self.total_epochs:
            return self.min_lr
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.total_epochs))

    def check_run_length(self, max_epochs: int | None, key: str = "max_epochs") -> None:
        super().check_run_length(max_epochs, key)
        if self.total_epochs > max_epochs:  # type: ignore[operator]
            raise ValueError(f"{type(self).__name__}: total_epochs={self.total_epochs} is longer than the run's "
                             f"{key}={max_epochs}, so the cosine would be cut short; set total_epochs <= {key}.")


class HeldCosineRestartsLR(LRScheduler):
    """Cosine with warm restarts whose rate is held for ``steps_per_cycle`` scheduler steps, optionally one cycle
    late: the student schedule of the released DiSK trainer when it is stepped once per student epoch.

    That trainer runs outer epochs of ``k_t`` student epochs (then guide epochs) and calls
    ``CosineAnnealingWarmRestarts(T_0=restart_every).step(e)`` after outer epoch ``e``, so the student's rate in
    outer epoch ``u`` is the cosine at ``c = (u - 1) mod restart_every`` (``c = 0`` for ``u = 0``):
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * c / restart_every)) / 2``. Here ``u = t // steps_per_cycle``
    for scheduler step ``t`` (``steps_per_cycle = k_t``); ``one_cycle_late=False`` uses ``c = u mod restart_every``.
    """

    def __init__(self, optimizer: Optimizer, restart_every: int, steps_per_cycle: int = 1, eta_min: float = 0.0,
                 one_cycle_late: bool = True, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        for key, value in (("restart_every", restart_every), ("steps_per_cycle", steps_per_cycle)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}: {key} must be an integer >= 1, got {value!r}.")
        self.restart_every, self.steps_per_cycle = restart_every, steps_per_cycle
        self.eta_min = _positive(owner, "eta_min", eta_min, allow_zero=True)
        self.one_cycle_late = bool(one_cycle_late)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        u = t // self.steps_per_cycle
        c = (max(u - 1, 0) if self.one_cycle_late else u) % self.restart_every
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * c / self.restart_every)) / 2

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def check_run_length(self, max_steps: int | None, key: str = "max_epochs") -> None:
        """Nothing to refuse: the restarts repeat for any run length."""
