"""Selective classification: the OSP Lagrangian (paper and released forms), SelectiveNet and DeepGamblers losses
and the selective metrics equal their equations on hand-built values; the module trains, logs the metrics and
checkpoints its multipliers; bad coverages raise a clear error."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from modules.constraints import Constraint, ConstraintError
from modules.selective_classifier import (SelectiveClassifier, deepgamblers_loss, osp_loss, osp_terms,
                                          selectivenet_loss)
from modules.selective_metrics import (aurc, coverage_at_error, error_at_coverage, risk_coverage_curve,
                                       selective_summary)

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 2.0, 0.5]])
TARGETS = torch.tensor([0, 1, 2, 0])


def _by_hand(lam, eps, mu, form):
    p = F.softmax(LOGITS, 1).tolist()
    y = TARGETS.tolist()
    total = 0.0
    for k in range(3):
        pos = [i for i in range(4) if y[i] == k]
        neg = [i for i in range(4) if y[i] != k]
        L = sum(-math.log(p[i][k] + 1e-8) for i in pos) / (len(pos) + 0.1)
        C = sum(-math.log(1 - p[i][k] + 1e-8) for i in neg) / (len(neg) + 0.1)
        lk, ek = max(lam[k], 0.0), max(eps[k], 0.0)
        if form == "paper":
            total += L + lk * (C - ek) + mu * ek
        else:
            total += L + C - lk * ek + mu * ek
    return total


@pytest.mark.parametrize("form", ["paper", "code"])
def test_osp_lagrangian_equals_its_equation(form):
    lam, eps, mu = [0.7, -0.3, 1.2], [0.5, 0.1, -0.2], 1.67
    mult = Constraint("osp", mode="learned", shape=(3,), init=0.0, hinge=False)
    mult.lam.data = torch.tensor(lam)
    got = osp_loss(LOGITS, TARGETS, mult, torch.tensor(eps), mu, form)
    assert float(got) == pytest.approx(_by_hand(lam, eps, mu, form), rel=1e-5)


def test_osp_multiplier_ascends_on_a_violated_class():
    mult = Constraint("osp", mode="learned", shape=(3,), init=0.5, hinge=False)
    eps = torch.nn.Parameter(torch.zeros(3))
    _, err = osp_terms(LOGITS, TARGETS)
    osp_loss(LOGITS, TARGETS, mult, eps, 1.0, "paper").backward()
    torch.optim.SGD([mult.lam], lr=0.1).step()
    torch.testing.assert_close(mult.lam.detach(), 0.5 + 0.1 * err)  # ascent by the violation C_k - 0


def test_selectivenet_and_deepgamblers_losses():
    g = torch.tensor([0.9, 0.2, 0.6, 0.5])
    aux = LOGITS.flip(1)
    ce = F.cross_entropy(LOGITS, TARGETS, reduction="none")
    phi = g.mean()
    want = 0.5 * ((ce * g).mean() / phi + 32 * max(0.0, 0.8 - float(phi)) ** 2) + 0.5 * F.cross_entropy(aux, TARGETS)
    assert float(selectivenet_loss(LOGITS, g, aux, TARGETS, 0.8, 32.0, 0.5)) == pytest.approx(float(want), rel=1e-5)
    logits4 = torch.cat([LOGITS, torch.tensor([[0.0], [1.0], [-1.0], [2.0]])], 1)
    p = F.softmax(logits4, 1)
    want = -torch.log(p[torch.arange(4), TARGETS] + p[:, 3] / 2.2).mean()
    assert float(deepgamblers_loss(logits4, TARGETS, 2.2)) == pytest.approx(float(want), rel=1e-5)


def test_risk_coverage_metrics_by_hand():
    score = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, True, False, True])
    cov, risk, thr = risk_coverage_curve(score, correct)
    torch.testing.assert_close(cov, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(risk, torch.tensor([0, 0, 1 / 3, 1 / 4], dtype=torch.float64))
    assert aurc(score, correct) == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4)
    p = coverage_at_error(score, correct, 0.0)
    assert (p.coverage, p.risk, p.threshold) == (0.5, 0.0, pytest.approx(0.8))
    assert coverage_at_error(score, correct, 0.26).coverage == 1.0
    assert error_at_coverage(score, correct, 0.6).risk == pytest.approx(1 / 3)
    s = selective_summary(score, correct, (0.02,), (1.0,))
    assert s["cov@err2"] == 0.5 and s["err@cov100"] == 0.25


def test_ties_are_covered_together():
    score = torch.tensor([0.9, 0.5, 0.5, 0.1])
    correct = torch.tensor([True, True, False, True])
    cov, risk, _ = risk_coverage_curve(score, correct)
    torch.testing.assert_close(cov, torch.tensor([0.25, 0.75, 1.0], dtype=torch.float64))
    assert coverage_at_error(score, correct, 0.2).coverage == 0.25  # 0.5 coverage is not attainable
    assert aurc(score, correct) == pytest.approx((0 + 1 / 3 + 1 / 3 + 1 / 4) / 4)


def _loader(n=16, classes=3):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,),
                                                                                      generator=g)), batch_size=8)


@pytest.mark.parametrize("method", ["osp", "softmax_response", "selectivenet", "deepgamblers"])
def test_module_trains_logs_and_checkpoints(method, tmp_path):
    model = SelectiveClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), method=method,
                                net_kwargs={"widths": [4, 8]}, gambler_reward=2.0,
                                optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, _loader(), _loader())
    metrics = trainer.callback_metrics
    for key in ("val/aurc", "val/cov@err2", "val/cov@err0_5", "val/err@cov95", "val/acc1"):
        assert key in metrics, key
    if method == "osp":
        assert "constraints/osp_error/lambda" in metrics
        ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
        torch.testing.assert_close(ckpt["state_dict"]["multiplier.lam"], model.multiplier.lam.detach())
        assert not torch.allclose(model.multiplier.lam.detach(), torch.full((3,), 1.67 - 0.5))  # it moved


def test_osp_multiplier_steps_at_its_own_learning_rate():
    """``multiplier_lr`` (the release's separate multiplier optimizer, 1e-4 against 1e-2): lambda's group has that
    rate and no weight decay, the net keeps the factory's, and one SGD step moves lambda by exactly
    ``multiplier_lr`` times its (reversed, i.e. ascent) gradient."""
    model = SelectiveClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), method="osp",
                                net_kwargs={"widths": [4, 8]}, multiplier_lr=1e-3,
                                optimizer=lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=5e-4))
    opt = model.configure_optimizers()
    lam_group = next(g for g in opt.param_groups if any(p is model.multiplier.lam for p in g["params"]))
    net_group = next(g for g in opt.param_groups if any(p is model.aux_head.weight for p in g["params"]))
    assert (lam_group["lr"], lam_group["weight_decay"]) == (1e-3, 0.0)
    assert (net_group["lr"], net_group["weight_decay"]) == (0.1, 5e-4)
    x, y = next(iter(_loader()))
    before = model.multiplier.lam.detach().clone()
    model.loss(x, y).backward()
    grad = model.multiplier.lam.grad.clone()
    opt.step()
    torch.testing.assert_close(model.multiplier.lam.detach(), before - 1e-3 * grad)
    with pytest.raises(ConstraintError, match="multiplier_lr must be > 0"):
        SelectiveClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), multiplier_lr=0.0)


def test_bad_coverage_is_a_clear_error():
    with pytest.raises(ConstraintError, match=r"coverage must be in \(0, 1\]"):
        SelectiveClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), method="selectivenet",
                            coverage=1.2)
    with pytest.raises(ConstraintError, match="target_coverages"):
        SelectiveClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), target_coverages=(0.0,))
