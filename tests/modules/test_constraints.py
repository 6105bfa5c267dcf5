"""Constraint engine: each multiplier mode's penalty and update equal their definitions on hand-set values; the
multipliers are logged and survive a state_dict round trip; out-of-range shares raise a clear error."""

from __future__ import annotations

import math

import pytest
import torch

from modules.constraints import Constraint, ConstraintError, CosineSchedule, check_fraction, grad_reverse


def test_learned_mode_gradient_ascends_the_multiplier():
    c = Constraint("err", mode="learned", shape=(3,), init=0.5, hinge=False)
    value = torch.tensor([0.3, 0.1, 0.2])
    bound = torch.tensor([0.1, 0.2, 0.2])
    term = c.penalty(value, bound=bound)
    # penalty = sum relu(lam) (value - bound)
    torch.testing.assert_close(term, (0.5 * (value - bound)).sum())
    term.backward()
    opt = torch.optim.SGD(c.parameters(), lr=0.1)
    opt.step()
    # descent on the reversed gradient = ascent: lam <- lam + lr * violation
    torch.testing.assert_close(c.lam.detach(), 0.5 + 0.1 * (value - bound))
    assert c.update(value) is not None and torch.allclose(c.lam.detach(), 0.5 + 0.1 * (value - bound))


def test_learned_mode_relu_and_gradient_to_the_value_is_not_reversed():
    c = Constraint("err", mode="learned", shape=(2,), init=-0.2, hinge=False)
    value = torch.tensor([0.5, 0.5], requires_grad=True)
    c.lam.data = torch.tensor([-0.2, 2.0])
    c.penalty(value, bound=0.0).backward()
    torch.testing.assert_close(value.grad, torch.tensor([0.0, 2.0]))  # d/dvalue = relu(lam), not negated
    torch.testing.assert_close(c.lam.grad, torch.tensor([0.0, -0.5]))  # relu kills the negative one
    torch.testing.assert_close(c.multiplier, torch.tensor([0.0, 2.0]))


def test_dual_ascent_projected_step_and_clamp():
    c = Constraint("b", mode="dual_ascent", init=0.2, bound=0.5, lr=2.0, max_value=1.0)
    v = torch.tensor(0.6, requires_grad=True)
    term = c.penalty(v)
    torch.testing.assert_close(term, torch.tensor(0.2 * 0.1))
    term.backward()
    assert v.grad == pytest.approx(0.2) and not c.lam.requires_grad
    assert float(c.update(torch.tensor(0.6))) == pytest.approx(0.2 + 2.0 * 0.1)
    assert float(c.update(torch.tensor(0.9))) == pytest.approx(1.0)  # 0.4 + 0.8 clamped to max_value
    assert float(c.update(torch.tensor(0.0))) == pytest.approx(0.0)  # 1.0 - 1.0: projected at 0
    assert float(c.update(torch.tensor(0.0))) == 0.0
    with pytest.raises(ConstraintError, match="needs the constraint value"):
        c.update()


def test_scheduled_mode_follows_the_published_cosines():
    lam = CosineSchedule(1.0, 5.0, period=50)
    delta = CosineSchedule(0.6, 0.4, period=20, decay=0.9, decay_every=20)
    c = Constraint("budget", mode="scheduled", schedule=lam, bound=delta)
    assert c.hinge
    expected_lam = {0: 1.0, 25: 3.0, 49: 1 + 4 * (1 - math.cos(math.pi * 49 / 50)) / 2, 50: 1.0}
    for e, want in expected_lam.items():
        assert float(c.update(epoch=e)) == pytest.approx(want)
    # DiSK: delta = max + (min - max)(1 - cos(pi T/Ti))/2, max shrinking x0.9 every 20 epochs
    assert delta(0) == pytest.approx(0.6)
    assert delta(10) == pytest.approx(0.5)
    assert delta(20) == pytest.approx(0.4 + 0.2 * 0.9)
    assert delta(45) == pytest.approx(0.4 + 0.2 * 0.81 * (1 + math.cos(math.pi * 5 / 20)) / 2)
    # the released DiSK code multiplies the maximum itself by 0.9 (budget_g_max *= 0.9): decay_start=True
    released = CosineSchedule(0.6, 0.4, period=20, decay=0.9, decay_every=20, decay_start=True)
    assert released(0) == pytest.approx(0.6) and released(10) == pytest.approx(0.5)
    assert released(20) == pytest.approx(0.54)
    assert released(45) == pytest.approx(0.4 + (0.6 * 0.81 - 0.4) * (1 + math.cos(math.pi * 5 / 20)) / 2)
    c.update(epoch=10)
    value = torch.tensor(0.7)
    # lambda(10) relu(value - delta(10))
    assert float(c.penalty(value)) == pytest.approx(lam(10) * (0.7 - 0.5))
    assert float(c.penalty(torch.tensor(0.3))) == 0.0
    logged = c.log_dict()
    assert logged["constraints/budget/lambda"] == pytest.approx(lam(10))
    assert logged["constraints/budget/bound"] == pytest.approx(0.5)


def test_fixed_mode_is_a_weighted_hinge_that_never_moves():
    c = Constraint("coverage", mode="fixed", init=2.0, bound=0.7, direction="ge")
    assert float(c.penalty(torch.tensor(0.6))) == pytest.approx(2.0 * 0.1)  # lam relu(c - value)
    assert float(c.penalty(torch.tensor(0.9))) == 0.0
    for v in (0.0, 0.5, 1.0):
        c.update(torch.tensor(v), epoch=3)
    assert float(c.multiplier) == 2.0 and int(c.epoch) == 3


def test_state_dict_round_trip_and_log_keys():
    a = Constraint("b", mode="dual_ascent", shape=(4,), init=0.0, bound=0.1, lr=1.0)
    a.update(torch.tensor([0.3, 0.0, 0.2, 0.1]), epoch=7)
    b = Constraint("b", mode="dual_ascent", shape=(4,), init=0.0, bound=0.1, lr=1.0)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.multiplier, torch.tensor([0.2, 0.0, 0.1, 0.0]))
    assert int(b.epoch) == 7
    assert set(a.log_dict()) == {f"constraints/b/{k}" for k in ("lambda", "value", "violation", "bound")}
    learned = Constraint("l", mode="learned", shape=(2,), init=1.0)
    assert "lam" in dict(learned.named_parameters())  # a parameter: checkpointed and optimised


def test_grad_reverse():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (grad_reverse(x) * torch.tensor([3.0, 4.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-3.0, -4.0]))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), "x"])
def test_fraction_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ConstraintError, match=r"coverage must be .*\(0, 1\]") as err:
        check_fraction("coverage", bad)
    assert err.value.user_facing
    assert check_fraction("coverage", 1.0) == 1.0


def test_bad_constraint_arguments():
    with pytest.raises(ConstraintError, match="mode must be one of"):
        Constraint("x", mode="adam")
    with pytest.raises(ConstraintError, match="needs schedule"):
        Constraint("x", mode="scheduled")
    with pytest.raises(ConstraintError, match="period"):
        CosineSchedule(1.0, 2.0, period=0)
