"""Constraint engine shared by OSP, the hybrid router, DiSK (and later DCL): constraints ``g <= bound`` turned
into penalty terms by a Lagrange multiplier whose update rule is chosen by ``mode``.

A :class:`Constraint` holds one multiplier per constraint component (``shape``, e.g. one per class for OSP)
and a bound (a constant, a :class:`CosineSchedule`, or a tensor given at call time such as OSP's learnable
per-class slack). ``c.penalty(value)`` returns the scalar term added to the loss; ``c.update(...)`` advances
the multiplier and the schedules. A ``Constraint`` is an ``nn.Module``: its multiplier, epoch and last values
are parameters/buffers, so they travel in every Lightning checkpoint (``state_dict``) and survive
``--ckpt_path``. ``c.log_dict()`` gives the numbers to log (multiplier, bound, last value and violation).

Multiplier modes (``violation = value - bound``):

=============  =====================================================  ======================================
mode           penalty term                                           update
=============  =====================================================  ======================================
``learned``    ``relu(lam) * violation``, lam an ``nn.Parameter``;    the model's optimizer: lam's gradient
               the gradient reaching lam is negated                   is reversed, so its descent step is an
                                                                      ascent step on the Lagrangian (OSP's
                                                                      released code, Gangrade, Kag &
                                                                      Saligrama AISTATS 2021)
``dual_ascent`` ``lam * violation`` with lam a buffer (no gradient)   ``update(value)``:
                                                                      ``lam <- clamp(lam + lr * violation,
                                                                      0, max_value)`` (projected dual ascent)
``scheduled``  ``lam(e) * relu(violation)``                           ``update(epoch=e)``: lam and a scheduled
                                                                      bound follow cosine schedules of the
                                                                      epoch (DiSK, Kag et al. ICLR 2023:
                                                                      lambda 1..5 period 50, delta 0.6..0.4
                                                                      period 20, max x0.9 every 20 epochs)
``fixed``      ``lam * relu(violation)`` (weighted hinge)             never moves (the hybrid code's coverage
                                                                      hinge, Kag et al. ICLR 2023)
=============  =====================================================  ======================================

``hinge`` (default: on for ``scheduled`` and ``fixed``, off for the two Lagrangian modes) chooses between
``lam * relu(violation)`` and ``lam * violation``; ``reduction`` sums (default) or averages the per-component
terms. ``direction="ge"`` states a constraint ``value >= bound`` (violation ``bound - value``).

Example::

    from modules.constraints import Constraint, CosineSchedule
    cov = Constraint("coverage", mode="fixed", init=1.0, bound=0.7, direction="ge")      # keep rate >= 0.7
    loss = task_loss + cov.penalty(keep_rate)

    osp = Constraint("osp_error", mode="learned", shape=(10,), init=0.5 - 1.67, hinge=False)
    loss = sum_L + osp.penalty(C_k, bound=relu(eps_k))     # lam's gradient is reversed: the optimizer ascends it

    budget = Constraint("disk_budget", mode="scheduled",
                        schedule=CosineSchedule(1.0, 5.0, period=50),
                        bound=CosineSchedule(0.6, 0.4, period=20, decay=0.9, decay_every=20, decay_start=True))
    budget.update(epoch=outer_epoch)                      # at each epoch start
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

Mode = Literal["learned", "dual_ascent", "scheduled", "fixed"]
MODES = ("learned", "dual_ascent", "scheduled", "fixed")

__all__ = ["MODES", "Constraint", "ConstraintError", "CosineSchedule", "check_fraction", "grad_reverse"]


class ConstraintError(ValueError):
    """A constraint or budget argument is out of range (one paragraph naming the argument to change)."""

    user_facing = True


def check_fraction(name: str, value: float, what: str = "a fraction") -> float:
    """``value`` as a float in (0, 1]; otherwise a :class:`ConstraintError` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConstraintError(f"{name} must be a number in (0, 1] ({what}), got {value!r}.") from None
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ConstraintError(
            f"{name} must be in (0, 1] ({what}), got {value!r}. Set the argument {name} "
            f"to a share such as 0.7 (70%); 0 or less, or more than 1, is not a share."
        )
    return v


@torch.no_grad()
def _record(buffer: Tensor, value: Tensor | float) -> None:
    """Copy ``value`` into ``buffer`` (broadcast to its shape; a larger value is averaged to a scalar)."""
    t = torch.as_tensor(value).detach().to(buffer.device, buffer.dtype)
    try:
        buffer.copy_(t.expand(buffer.shape))
    except RuntimeError:
        buffer.fill_(float(t.mean()))


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def grad_reverse(x: Tensor) -> Tensor:
    """Identity forward, negated gradient backward (turns a minimiser's step on ``x`` into an ascent step)."""
    return _GradReverse.apply(x)


@dataclass(frozen=True)
class CosineSchedule:
    """Cosine between ``start`` (epoch 0) and ``end`` (epoch ``period``), restarting every ``period`` epochs.

    ``value(e) = end + (start_e - end) * (1 + cos(pi * (e mod period) / period)) / 2``. With ``decay`` the
    start shrinks every ``decay_every`` epochs, ``k = e // decay_every``: by default (``decay_start=False``) the
    distance to ``end`` shrinks, ``start_e = end + (start - end) * decay ** k``, so the schedule never crosses
    ``end``; with ``decay_start=True`` the start itself shrinks, ``start_e = start * decay ** k`` (the released
    DiSK code: ``budget_g_max *= 0.9`` every 20 epochs, so delta(20) = 0.54 and, once ``start_e < end``, the
    cosine rises from ``start_e`` to ``end``). ``start < end`` gives an increasing cosine (DiSK's lambda 1 -> 5).
    """

    start: float
    end: float
    period: int = 1
    decay: float = 1.0
    decay_every: int = 0
    decay_start: bool = False

    def __post_init__(self) -> None:
        if int(self.period) < 1:
            raise ConstraintError(f"CosineSchedule: period must be >= 1 epoch, got {self.period!r}.")
        if not 0.0 < float(self.decay) <= 1.0:
            raise ConstraintError(f"CosineSchedule: decay must be in (0, 1], got {self.decay!r}.")

    def __call__(self, epoch: int) -> float:
        e = max(int(epoch), 0)
        start = self.start
        if self.decay_every and self.decay != 1.0:
            k = e // int(self.decay_every)
            start = self.start * self.decay ** k if self.decay_start else \
                self.end + (self.start - self.end) * self.decay ** k
        phase = (e % int(self.period)) / int(self.period)
        return float(self.end + (start - self.end) * 0.5 * (1.0 + math.cos(math.pi * phase)))


class Constraint(nn.Module):
    """One (vector of) constraint(s) ``value <= bound`` (or ``>=``) with its multiplier; see the module doc.

    Args:
        name: used in ``log_dict`` keys (``constraints/<name>/...``).
        mode: ``learned`` | ``dual_ascent`` | ``scheduled`` | ``fixed``.
        shape: shape of the multiplier (``()`` for one constraint, ``(K,)`` for K per-class constraints).
        init: initial multiplier (raw parameter for ``learned``; the effective multiplier is ``relu`` of it).
        bound: a float, a :class:`CosineSchedule` of the epoch, or ``None`` when it is passed to ``penalty``.
        schedule: the multiplier's :class:`CosineSchedule` (``scheduled`` mode; required there).
        lr: dual step size (``dual_ascent``).
        max_value: upper clamp of the multiplier in ``dual_ascent`` (``None``: unbounded).
        hinge: ``lam * relu(violation)`` if true, ``lam * violation`` if false (default depends on mode).
        direction: ``le`` (value <= bound) or ``ge`` (value >= bound).
        reduction: ``sum`` or ``mean`` over the components.
    """

    def __init__(
        self,
        name: str,
        mode: Mode = "dual_ascent",
        shape: tuple[int, ...] | list[int] = (),
        init: float = 0.0,
        bound: float | CosineSchedule | None = 0.0,
        schedule: CosineSchedule | None = None,
        lr: float = 0.01,
        max_value: float | None = None,
        hinge: bool | None = None,
        direction: Literal["le", "ge"] = "le",
        reduction: Literal["sum", "mean"] = "sum",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConstraintError(f"Constraint {name!r}: mode must be one of {', '.join(MODES)}, got {mode!r}.")
        if direction not in ("le", "ge"):
            raise ConstraintError(f"Constraint {name!r}: direction must be 'le' or 'ge', got {direction!r}.")
        if reduction not in ("sum", "mean"):
            raise ConstraintError(f"Constraint {name!r}: reduction must be 'sum' or 'mean', got {reduction!r}.")
        if mode == "scheduled" and schedule is None:
            raise ConstraintError(f"Constraint {name!r}: mode 'scheduled' needs schedule=CosineSchedule(...).")
        if mode == "dual_ascent" and not lr > 0:
            raise ConstraintError(f"Constraint {name!r}: the dual step lr must be > 0, got {lr!r}.")
        self.name = name
        self.mode = mode
        self.shape = tuple(int(s) for s in shape)
        self.bound = bound
        self.schedule = schedule
        self.lr = float(lr)
        self.max_value = max_value
        self.hinge = mode in ("scheduled", "fixed") if hinge is None else bool(hinge)
        self.direction = direction
        self.reduction = reduction
        start = schedule(0) if mode == "scheduled" else float(init)
        lam = torch.full(self.shape, start, dtype=torch.float32)
        if mode == "learned":
            self.lam = nn.Parameter(lam)
        else:
            self.register_buffer("lam", lam)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._epoch = 0  # a host copy of the ``epoch`` buffer: scheduled bounds read it without a device read
        self.register_buffer("last_value", torch.zeros(self.shape))
        self.register_buffer("last_violation", torch.zeros(self.shape))

    # ------------------------------------------------------------------------------------------------ values
    @property
    def multiplier(self) -> Tensor:
        """The effective multiplier (>= 0 for ``learned``, where the parameter is the raw value), detached."""
        lam = self.lam.detach()
        return lam.clamp_min(0) if self.mode == "learned" else lam.clone()

    def current_bound(self, bound: Tensor | float | None = None) -> Tensor | float:
        """The bound at the current epoch (a scheduled bound is evaluated at ``self.epoch``)."""
        if bound is not None:
            return bound
        if self.bound is None:
            raise ConstraintError(f"Constraint {self.name!r}: no bound was set; pass penalty(value, bound=...).")
        if isinstance(self.bound, CosineSchedule):
            return self.bound(self._epoch)
        return float(self.bound)

    def violation(self, value: Tensor, bound: Tensor | float | None = None) -> Tensor:
        """``value - bound`` (``le``) or ``bound - value`` (``ge``); positive means violated."""
        b = self.current_bound(bound)
        return value - b if self.direction == "le" else b - value

    def penalty(self, value: Tensor, bound: Tensor | float | None = None) -> Tensor:
        """The scalar term to add to the loss for ``value`` (shape broadcastable to the multiplier's)."""
        v = self.violation(value, bound)
        if self.hinge:
            v = torch.relu(v)
        if self.mode == "learned":
            lam = torch.relu(grad_reverse(self.lam))
        else:
            lam = self.lam.detach()
        term = lam * v
        _record(self.last_value, value)
        _record(self.last_violation, v)
        return term.sum() if self.reduction == "sum" else term.mean()

    # ----------------------------------------------------------------------------------------------- updates
    @torch.no_grad()
    def set_epoch(self, epoch: int) -> None:
        """Record the epoch only (it drives scheduled bounds); the multiplier does not move."""
        self._epoch = int(epoch)
        self.epoch.fill_(self._epoch)

    @torch.no_grad()
    def update(self, value: Tensor | None = None, bound: Tensor | float | None = None,
               epoch: int | None = None) -> Tensor:
        """Advance the multiplier; returns the new effective multiplier.

        * ``dual_ascent``: needs ``value``; ``lam <- clamp(lam + lr * violation(value), 0, max_value)``.
        * ``scheduled``: with ``epoch`` sets ``lam = schedule(epoch)`` (and the scheduled bound follows).
        * ``learned`` / ``fixed``: the multiplier is not moved here (the optimizer moves ``learned``).

        ``epoch`` is recorded in every mode (it drives scheduled bounds).
        """
        if epoch is not None:
            self._epoch = int(epoch)
            self.epoch.fill_(self._epoch)
        if self.mode == "dual_ascent":
            if value is None:
                raise ConstraintError(f"Constraint {self.name!r}: dual_ascent update needs the constraint value.")
            v = self.violation(torch.as_tensor(value, dtype=self.lam.dtype, device=self.lam.device), bound)
            new = (self.lam + self.lr * v).clamp_min(0.0)
            if self.max_value is not None:
                new = new.clamp_max(float(self.max_value))
            _record(self.lam, new)
        elif self.mode == "scheduled":
            self.lam.fill_(self.schedule(self._epoch))
        return self.multiplier

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._epoch = int(self.epoch)  # once per load, not per step

    def log_dict(self) -> dict[str, Tensor | float]:
        """Scalars to log: the multiplier (mean over components), bound, last value and violation. The first three
        are 0-dim tensors on the module's device (logging them reads nothing back until the logger writes)."""
        prefix = f"constraints/{self.name}"
        out: dict[str, Tensor | float] = {
            f"{prefix}/lambda": self.multiplier.detach().float().mean(),
            f"{prefix}/value": self.last_value.detach().float().mean(),
            f"{prefix}/violation": self.last_violation.detach().float().mean()}
        if self.bound is not None:
            out[f"{prefix}/bound"] = float(self.current_bound())
        return out

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, mode={self.mode!r}, shape={self.shape}, hinge={self.hinge}, "
                f"direction={self.direction!r}, bound={self.bound!r}")
