"""Metrics of selective classification (Geifman & El-Yaniv 2017; Gangrade, Kag & Saligrama AISTATS 2021,
docs/selective.md#osp-one-sided-prediction): a classifier predicts on the inputs whose selection ``score`` passes a threshold and
abstains on the rest.

* **coverage** ``phi(t) = P(score >= t)``, **selective risk** ``r(t) = P(wrong | score >= t)``;
* the **risk-coverage curve**: ``(phi, r)`` at every threshold, i.e. after sorting by decreasing score, the
  first ``m`` inputs are covered for m = 1..n (ties in the score are kept together);
* **AURC**: the area under that curve, the mean of ``r`` over the n coverage levels m/n;
* **coverage at target error** ``eps``: the largest coverage whose selective risk is ``<= eps`` (the
  threshold is searched over every distinct score, which is at least as fine as the paper's 1000 values);
* **error at target coverage** ``c``: the selective risk of the smallest threshold set that covers ``>= c``.

All functions take 1-D tensors ``score`` (higher = more confident) and ``correct`` (bool: the prediction on
that input is right) and return plain floats (fractions, not percent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SelectivePoint", "aurc", "coverage_at_error", "error_at_coverage", "risk_coverage_curve",
           "selective_summary"]


@dataclass(frozen=True)
class SelectivePoint:
    """One operating point: coverage, selective risk (error on covered inputs) and the score threshold."""

    coverage: float
    risk: float
    threshold: float


def _check(score: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    score = torch.as_tensor(score).detach().flatten().double().cpu()
    correct = torch.as_tensor(correct).detach().flatten().bool().cpu()
    if score.numel() != correct.numel() or score.numel() == 0:
        raise ValueError(f"selective metrics: score and correct need the same non-zero length, got "
                         f"{score.numel()} and {correct.numel()}")
    return score, correct


def risk_coverage_curve(score: Tensor, correct: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(coverage, risk, threshold)`` at every distinct threshold, from the highest score down (coverage rises).

    Inputs with equal scores are covered together, so each point is attainable by a threshold rule.
    """
    score, correct = _check(score, correct)
    order = torch.argsort(score, descending=True, stable=True)
    s, wrong = score[order], (~correct[order]).double()
    n = s.numel()
    cum_wrong = torch.cumsum(wrong, 0)
    # the last index of each run of equal scores: covering a threshold covers the whole run
    last = torch.ones(n, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    idx = torch.nonzero(last).squeeze(1)
    covered = (idx + 1).double()
    return covered / n, cum_wrong[idx] / covered, s[idx]


def aurc(score: Tensor, correct: Tensor) -> float:
    """Area under the risk-coverage curve: mean over m = 1..n of the risk of the m most confident inputs
    (ties: every input of a tied run gets the risk of covering the whole run)."""
    score, correct = _check(score, correct)
    coverage, risk, _ = risk_coverage_curve(score, correct)
    counts = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), coverage * score.numel()]))
    return float((risk * counts).sum() / score.numel())


def coverage_at_error(score: Tensor, correct: Tensor, target_error: float) -> SelectivePoint:
    """The largest coverage with selective risk ``<= target_error`` (coverage 0, risk 0 when none reaches it)."""
    if not 0.0 <= target_error <= 1.0:
        raise ValueError(f"coverage_at_error: target_error must be in [0, 1], got {target_error}")
    coverage, risk, threshold = risk_coverage_curve(score, correct)
    ok = torch.nonzero(risk <= target_error + 1e-12).squeeze(1)
    if ok.numel() == 0:
        return SelectivePoint(0.0, 0.0, float("inf"))
    i = int(ok[-1])
    return SelectivePoint(float(coverage[i]), float(risk[i]), float(threshold[i]))


def error_at_coverage(score: Tensor, correct: Tensor, target_coverage: float) -> SelectivePoint:
    """The selective risk at the first threshold whose coverage is ``>= target_coverage``."""
    if not 0.0 < target_coverage <= 1.0:
        raise ValueError(f"error_at_coverage: target_coverage must be in (0, 1], got {target_coverage}")
    coverage, risk, threshold = risk_coverage_curve(score, correct)
    i = int(torch.nonzero(coverage >= target_coverage - 1e-12).squeeze(1)[0])
    return SelectivePoint(float(coverage[i]), float(risk[i]), float(threshold[i]))


def selective_summary(score: Tensor, correct: Tensor, target_errors: tuple[float, ...] = (0.02, 0.01, 0.005),
                      target_coverages: tuple[float, ...] = (1.0, 0.95, 0.9)) -> dict[str, float]:
    """The paper's table entries as a flat dict: ``cov@err2``/``risk@err2`` (percent-free fractions, the key
    uses the error in percent), ``err@cov95``, and ``aurc``."""
    out: dict[str, float] = {"aurc": aurc(score, correct)}
    for e in target_errors:
        p = coverage_at_error(score, correct, e)
        key = f"{e * 100:g}".replace(".", "_")
        out[f"cov@err{key}"] = p.coverage
        out[f"risk@err{key}"] = p.risk
    for c in target_coverages:
        out[f"err@cov{c * 100:g}"] = error_at_coverage(score, correct, c).risk
    return out
