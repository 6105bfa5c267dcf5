"""Distributional constraints for distributionally constrained learning (DCL, :mod:`modules.dcl`).

**The project's design** (docs/dcl.md: no DCL paper or code is public). Each constraint is a
statistic g(P) of a distribution P that the model induces on the training data -- per-class losses, the
per-example loss distribution, the predicted labels, the confidences -- with a bound ``eps``: g(P) <= eps.

Running estimates. A single batch is a poor estimate of a distribution (a class may have 2 examples in it), so
every constraint keeps exponential moving averages (``momentum``) of the batch's sufficient statistics (sums and
counts, all-reduced across DDP ranks before they enter the average, so every rank sees the same value). The
constraint's *value* is g of the running statistics; its *gradient* is that of g at the current batch through a
straight-through estimate ``s = s_running + (s_batch - s_batch.detach())``: the forward value is the running
one, the backward pass differentiates the batch statistic. The running statistics are buffers: they are in
every checkpoint.

=====================  =========================================================================================
name                   g(P)
=====================  =========================================================================================
``worst_class_loss``   max over classes k of the mean cross-entropy of class k (running per-class means); the
                       gradient is that of a smoothed max: the batch's class means weighted by
                       softmax(running means / ``tau``) over the classes present in the batch (``tau`` -> 0:
                       the worst class alone), so the step spreads over the hard classes, as group DRO's
``cvar``               CVaR_a of the per-example loss: the mean of its worst ``a`` share (``alpha``), per batch
                       ``mean(top ceil(a n) losses)``, averaged over batches
``label_prior_kl``     KL(p_bar || pi): p_bar the mean predicted class distribution (running), pi the label prior:
                       ``prior: labels`` (running training label frequencies, default), ``uniform`` or a list
``calibration_gap``    expected calibration error with ``bins`` equal-width confidence bins:
                       sum_b (n_b / n) |conf_b - acc_b| from running per-bin sums; gradient through conf_b
``loss_floor``         ``floor`` - (running mean per-example training loss): with g <= eps the mean loss may not
                       fall below ``floor - eps`` -- the constrained form of flooding (Ishida et al., ICML 2020,
                       "Do We Need Zero Training Loss After Achieving Zero Training Error?"); while the loss sits
                       below the floor the multiplier grows and pushes the loss *up* (gradient ascent on it)
=====================  =========================================================================================

Build one by name with :func:`build_constraint` (``eps`` > 0 is required; an unknown name or option is a clear
error).
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONSTRAINTS", "CalibrationGap", "DCLConfigError", "DistributionalConstraint", "LabelPriorKL",
           "LossCVaR", "LossFloor", "WorstClassLoss", "build_constraint", "straight_through"]


class DCLConfigError(ValueError):
    """A DCL constraint is misconfigured (one paragraph naming the argument to change)."""

    user_facing = True


def straight_through(running: Tensor, batch: Tensor) -> Tensor:
    """Forward: ``running``; backward: the gradient of ``batch`` (``running + batch - batch.detach()``)."""
    return running.detach() + (batch - batch.detach())


def _all_reduce_sum(t: Tensor) -> Tensor:
    t = t.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class DistributionalConstraint(nn.Module):
    """Base class: running (EMA) sufficient statistics and ``forward(logits, targets, losses) -> g``.

    Subclasses define ``batch_stats`` (a dict of local, differentiable sums/counts) and ``value`` (g from a dict
    of statistics). Args: eps: the bound (> 0); momentum: EMA momentum in [0, 1) (0 = this batch only).
    """

    name = "constraint"

    def __init__(self, eps: float, momentum: float = 0.9) -> None:
        super().__init__()
        if not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
            raise DCLConfigError(
                f"DCL constraint {self.name!r}: eps must be a number > 0 (the bound g <= eps), got {eps!r}. Set "
                f"constraints={{{self.name!r}: {{'eps': ...}}}} to a positive bound.")
        if not 0.0 <= momentum < 1.0:
            raise DCLConfigError(f"DCL constraint {self.name!r}: momentum must be in [0, 1), got {momentum!r}.")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    # -- to override ------------------------------------------------------------------------------------------
    def batch_stats(self, logits: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def value(self, stats: dict[str, Tensor], batch: dict[str, Tensor] | None = None) -> Tensor:
        raise NotImplementedError

    # -- running statistics -----------------------------------------------------------------------------------
    def _running(self, key: str) -> Tensor:
        return getattr(self, f"running_{key}")

    def _register_stats(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Create the running-statistic buffers (``running_<key>``), so checkpoints always hold them."""
        for key, shape in shapes.items():
            self.register_buffer(f"running_{key}", torch.zeros(shape))

    def _update_running(self, stats: dict[str, Tensor]) -> None:
        # the first batch is copied, later ones blended; chosen on the device (no host read of the flag per step)
        initialised = self.initialised.bool()
        for key, value in stats.items():
            running = self._running(key)
            reduced = _all_reduce_sum(value.float())
            blended = torch.add(running * self.momentum, reduced, alpha=1.0 - self.momentum)
            running.copy_(torch.where(initialised, blended, reduced))
        self.initialised.fill_(True)

    def running_stats(self) -> dict[str, Tensor]:
        return {name[len("running_"):]: buf for name, buf in self.named_buffers(recurse=False)
                if name.startswith("running_")}

    def forward(self, logits: Tensor, targets: Tensor, losses: Tensor) -> Tensor:
        """Update the running statistics with this batch; return g (running value, batch gradient)."""
        stats = self.batch_stats(logits, targets, losses)
        if self.training:
            with torch.no_grad():
                self._update_running(stats)
        return self.value(self.running_stats(), stats)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, momentum={self.momentum}"


class WorstClassLoss(DistributionalConstraint):
    """max_k E[loss | y = k] <= eps (per-class running means of the cross-entropy; gradient of a smoothed max)."""

    name = "worst_class_loss"

    def __init__(self, eps: float, num_classes: int, tau: float = 0.2, momentum: float = 0.9) -> None:
        super().__init__(eps, momentum)
        if not tau >= 0:
            raise DCLConfigError(f"DCL constraint 'worst_class_loss': tau must be >= 0 (softmax temperature of the "
                                 f"class weights; 0 = the worst class only), got {tau!r}.")
        self.num_classes = int(num_classes)
        self.tau = float(tau)
        self._register_stats({"loss_sum": (self.num_classes,), "count": (self.num_classes,)})

    def batch_stats(self, logits: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
        onehot = F.one_hot(targets, self.num_classes).to(losses.dtype)
        return {"loss_sum": onehot.t() @ losses, "count": onehot.sum(0)}

    def class_means(self, stats: dict[str, Tensor]) -> Tensor:
        return stats["loss_sum"] / stats["count"].clamp_min(1e-12)

    def value(self, stats: dict[str, Tensor], batch: dict[str, Tensor] | None = None) -> Tensor:
        running = self.class_means(stats)
        seen = stats["count"] > 0
        worst = torch.where(seen, running, torch.full_like(running, -math.inf)).max()
        if batch is None:
            return worst.detach()
        present = batch["count"] > 0
        scores = torch.where(present, running, torch.full_like(running, -math.inf)).detach()
        if self.tau == 0:
            weights = F.one_hot(scores.argmax(), self.num_classes).to(running.dtype)
        else:
            weights = (scores / self.tau).softmax(-1)
        return straight_through(worst, (weights * self.class_means(batch)).sum())


class LossCVaR(DistributionalConstraint):
    """CVaR_alpha(loss) <= eps: the mean of the worst ``alpha`` share of per-example losses."""

    name = "cvar"

    def __init__(self, eps: float, alpha: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__(eps, momentum)
        if not 0.0 < alpha <= 1.0:
            raise DCLConfigError(f"DCL constraint 'cvar': alpha must be in (0, 1] (the tail share), got {alpha!r}.")
        self.alpha = float(alpha)
        self._register_stats({"tail_sum": (), "batches": ()})

    def batch_stats(self, logits: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
        k = max(1, math.ceil(self.alpha * losses.numel()))
        tail = losses.topk(k).values.mean()
        return {"tail_sum": tail, "batches": torch.ones((), device=losses.device)}

    def value(self, stats: dict[str, Tensor], batch: dict[str, Tensor] | None = None) -> Tensor:
        running = stats["tail_sum"] / stats["batches"].clamp_min(1e-12)
        if batch is None:
            return running.detach()
        return straight_through(running, batch["tail_sum"] / batch["batches"])


class LabelPriorKL(DistributionalConstraint):
    """KL(p_bar || pi) <= eps for the mean predicted distribution p_bar and the label prior pi."""

    name = "label_prior_kl"

    def __init__(self, eps: float, num_classes: int, prior: str | list[float] = "labels",
                 momentum: float = 0.9) -> None:
        super().__init__(eps, momentum)
        self.num_classes = int(num_classes)
        if isinstance(prior, str) and prior not in ("labels", "uniform"):
            raise DCLConfigError(f"DCL constraint 'label_prior_kl': prior must be 'labels', 'uniform' or a list of "
                                 f"{num_classes} class probabilities, got {prior!r}.")
        if not isinstance(prior, str):
            p = torch.as_tensor(prior, dtype=torch.float32)
            if p.shape != (self.num_classes,) or (p <= 0).any():
                raise DCLConfigError(f"DCL constraint 'label_prior_kl': a prior list needs {num_classes} positive "
                                     f"entries, got {prior!r}.")
            prior = (p / p.sum()).tolist()
        self.prior = prior
        self._register_stats({"prob_sum": (self.num_classes,), "label_count": (self.num_classes,), "n": ()})

    def batch_stats(self, logits: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
        probs = logits.float().softmax(-1)
        return {"prob_sum": probs.sum(0), "label_count": F.one_hot(targets, self.num_classes).float().sum(0),
                "n": torch.tensor(float(len(targets)), device=logits.device)}

    def prior_of(self, stats: dict[str, Tensor]) -> Tensor:
        device = stats["prob_sum"].device
        if self.prior == "uniform":
            return torch.full((self.num_classes,), 1.0 / self.num_classes, device=device)
        if self.prior == "labels":
            c = stats["label_count"].detach() + 1e-6
            return c / c.sum()
        return torch.as_tensor(self.prior, device=device)

    def value(self, stats: dict[str, Tensor], batch: dict[str, Tensor] | None = None) -> Tensor:
        p_run = stats["prob_sum"] / stats["n"].clamp_min(1e-12)
        p = p_run if batch is None else straight_through(p_run, batch["prob_sum"] / batch["n"])
        p = p.clamp_min(1e-12)
        return (p * (p.log() - self.prior_of(stats).log())).sum()


class CalibrationGap(DistributionalConstraint):
    """ECE = sum_b (n_b / n) |conf_b - acc_b| <= eps over ``bins`` equal-width confidence bins."""

    name = "calibration_gap"

    def __init__(self, eps: float, bins: int = 15, momentum: float = 0.9) -> None:
        super().__init__(eps, momentum)
        if int(bins) < 1:
            raise DCLConfigError(f"DCL constraint 'calibration_gap': bins must be >= 1, got {bins!r}.")
        self.bins = int(bins)
        self._register_stats({"count": (self.bins,), "conf_sum": (self.bins,), "correct_sum": (self.bins,)})

    def batch_stats(self, logits: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
        conf, pred = logits.float().softmax(-1).max(-1)
        idx = (conf.detach() * self.bins).long().clamp_max(self.bins - 1)
        member = F.one_hot(idx, self.bins).float()
        return {"count": member.sum(0), "conf_sum": member.t() @ conf,
                "correct_sum": member.t() @ (pred == targets).float()}

    def value(self, stats: dict[str, Tensor], batch: dict[str, Tensor] | None = None) -> Tensor:
        count = stats["count"].clamp_min(1e-12)
        conf = stats["conf_sum"] / count
        if batch is not None:
            conf = straight_through(conf, batch["conf_sum"] / batch["count"].clamp_min(1e-12))
        acc = (stats["correct_sum"] / count).detach()
        weight = stats["count"] / stats["count"].sum().clamp_min(1e-12)
        return (weight * (conf - acc).abs()).sum()


class LossFloor(DistributionalConstraint):
    """floor - E[loss] <= eps, i.e. the running mean per-example training loss stays >= ``floor - eps``.

    The constrained form of *flooding* (Ishida, Yamane, Sakai, Niu, Sugiyama, ICML 2020, "Do We Need Zero Training
    Loss After Achieving Zero Training Error?"), which trains on ``|L - b| + b``: descent above the flood level b,
    ascent below it. Here the level is a constraint with a multiplier instead: g = ``floor`` - running mean loss
    (EMA of the loss sum over the EMA of the example count), gradient d g / d loss_i = -1/n for each example of
    the current batch (straight-through). The constraint only binds once the model pushes its training loss below
    the floor; the multiplier lambda then grows and the Lagrangian ``L + lambda (floor - L - eps)`` has weight
    ``1 - lambda`` on the mean loss: for lambda > 1 the primal step is gradient *ascent* on the loss, so the
    model is pushed back up to the floor and hovers there (lambda near 1), as flooding's alternating steps do.
    Use: a floor near the irreducible loss of the training labels (label noise) keeps the model from memorising
    them. Args: floor: the level b > 0; eps: the slack (> 0, below ``floor``, else the constraint never binds).
    """

    name = "loss_floor"

    def __init__(self, eps: float, floor: float | None = None, momentum: float = 0.9) -> None:
        super().__init__(eps, momentum)
        if floor is None or isinstance(floor, bool) or not isinstance(floor, int | float) \
                or not math.isfinite(floor) or floor <= 0:
            raise DCLConfigError(
                f"DCL constraint 'loss_floor': floor must be a number > 0 (the lowest mean training loss allowed, "
                f"e.g. near the label noise's irreducible cross-entropy), got {floor!r}. Set "
                f"constraints={{'loss_floor': {{'floor': ..., 'eps': ...}}}}.")
        if self.eps >= floor:
            raise DCLConfigError(
                f"DCL constraint 'loss_floor': eps ({eps!r}) must be below floor ({floor!r}): the constraint is "
                f"mean loss >= floor - eps, which never binds when floor - eps <= 0.")
        self.floor = float(floor)
        self._register_stats({"loss_sum": (), "count": ()})

    def batch_stats(self, logits: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
        return {"loss_sum": losses.sum(), "count": torch.tensor(float(losses.numel()), device=losses.device)}

    def mean_loss(self, stats: dict[str, Tensor]) -> Tensor:
        return stats["loss_sum"] / stats["count"].clamp_min(1e-12)

    def value(self, stats: dict[str, Tensor], batch: dict[str, Tensor] | None = None) -> Tensor:
        running = self.mean_loss(stats)
        if batch is None:
            return self.floor - running.detach()
        return self.floor - straight_through(running, self.mean_loss(batch))

    def extra_repr(self) -> str:
        return f"floor={self.floor}, " + super().extra_repr()


CONSTRAINTS: dict[str, type[DistributionalConstraint]] = {
    c.name: c for c in (WorstClassLoss, LossCVaR, LabelPriorKL, CalibrationGap, LossFloor)
}
_NEEDS_CLASSES = {"worst_class_loss", "label_prior_kl"}


def build_constraint(name: str, num_classes: int, options: dict[str, Any]) -> DistributionalConstraint:
    """The constraint ``name`` with ``options`` (``eps`` required), e.g. ``("cvar", 10, {"eps": 2, "alpha": .1})``."""
    if name not in CONSTRAINTS:
        close = difflib.get_close_matches(name, CONSTRAINTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DCLConfigError(f"Unknown DCL constraint {name!r} in constraints.{hint} Known: "
                             f"{', '.join(CONSTRAINTS)}.")
    options = dict(options or {})
    if "eps" not in options:
        raise DCLConfigError(f"DCL constraint {name!r} needs a bound: set constraints={{{name!r}: {{'eps': ...}}}} "
                             f"to a number > 0.")
    cls = CONSTRAINTS[name]
    if name in _NEEDS_CLASSES:
        options["num_classes"] = num_classes
    try:
        return cls(**options)
    except TypeError as err:
        raise DCLConfigError(f"DCL constraint {name!r}: bad options {sorted(options)} ({err}). See the table in "
                             f"modules/dcl_constraints.py for its options.") from None
