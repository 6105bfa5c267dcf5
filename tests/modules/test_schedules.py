"""modules/schedules.py: the epoch schedules equal timm's schedulers epoch by epoch, resume, and refuse bad input."""

from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler, StepLRScheduler

from modules.schedules import WarmupCosineLR, WarmupStepDecayLR


def _opt(lr: float = 0.192) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _ours(cls, epochs: int, **kw) -> list[float]:
    opt = _opt()
    sched = cls(opt, **kw)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _timm(cls, epochs: int, **kw) -> list[float]:
    """timm's trainer loop with t_in_epochs: the rate of epoch e is set by step(e) (the constructor sets epoch 0's)."""
    opt = _opt()
    sched = cls(opt, t_in_epochs=True, **kw)
    lrs = []
    for epoch in range(epochs):
        if epoch > 0:
            sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_step_decay_equals_timm_step_scheduler_with_warmup_and_noise():
    ours = _ours(WarmupStepDecayLR, 40, decay_epochs=2.4, decay_rate=0.973, warmup_epochs=3, warmup_lr_init=1e-6,
                 noise_range_epochs=[10, 30])
    # timm's create_scheduler (what the released train.py calls) builds it with warmup_prefix=False: the decay
    # counts from epoch 0, not from the end of the warm-up
    ref = _timm(StepLRScheduler, 40, decay_t=2.4, decay_rate=0.973, warmup_t=3, warmup_lr_init=1e-6,
                warmup_prefix=False, noise_range_t=[10, 30], noise_pct=0.67, noise_std=1.0, noise_seed=42)
    assert ours == pytest.approx(ref, rel=1e-12)
    assert ours[0] == pytest.approx(1e-6) and ours[3] == pytest.approx(0.192 * 0.973)  # 3 // 2.4 = 1 decay
    assert ours[12] != pytest.approx(0.192 * 0.973 ** 5)  # noise is on in [10, 30)


def test_cosine_equals_timm_cosine_scheduler_including_cooldown():
    ours = _ours(WarmupCosineLR, 110, total_epochs=100, min_lr=1e-5, warmup_epochs=5, warmup_lr_init=1e-6)
    ref = _timm(CosineLRScheduler, 110, t_initial=100, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6)
    assert ours == pytest.approx(ref, rel=1e-12)


def test_state_survives_state_dict():
    opt = _opt()
    sched = WarmupStepDecayLR(opt, decay_epochs=2.4, decay_rate=0.97, warmup_epochs=3, warmup_lr_init=1e-6)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = _opt()
    sched2 = WarmupStepDecayLR(opt2, decay_epochs=2.4, decay_rate=0.97, warmup_epochs=3, warmup_lr_init=1e-6)
    sched2.load_state_dict(sched.state_dict())
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.192 * 0.97 ** 3)


@pytest.mark.parametrize("kw, key", [
    ({"decay_epochs": 0, "decay_rate": 0.97}, "decay_epochs"),
    ({"decay_epochs": 2.4, "decay_rate": 1.5}, "decay_rate"),
    ({"decay_epochs": 2.4, "decay_rate": 0.97, "warmup_epochs": 2.5}, "warmup_epochs"),
    ({"decay_epochs": 2.4, "decay_rate": 0.97, "noise_range_epochs": [5, 2]}, "noise_range_epochs"),
])
def test_bad_arguments_name_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        WarmupStepDecayLR(_opt(), **kw)


def test_schedule_that_does_not_fit_the_run_is_refused():
    sched = WarmupStepDecayLR(_opt(), decay_epochs=2.4, decay_rate=0.97, warmup_epochs=3,
                              noise_range_epochs=[252, 540])
    sched.check_run_length(600)
    with pytest.raises(ValueError, match="warmup_epochs=3 .*max_epochs=2"):
        sched.check_run_length(2)
    with pytest.raises(ValueError, match="noise_range_epochs"):
        sched.check_run_length(300)
    with pytest.raises(ValueError, match="no epoch limit"):
        sched.check_run_length(-1)
    cos = WarmupCosineLR(_opt(), total_epochs=100)
    with pytest.raises(ValueError, match="total_epochs=100"):
        cos.check_run_length(50)


def test_rmsprop_tf_puts_eps_inside_the_square_root_and_skips_decay_on_1d():
    from timm.optim import RMSpropTF

    from modules.schedules import TimmRMSpropTF

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = TimmRMSpropTF(net.parameters(), lr=0.1, eps=1e-3, weight_decay=1e-5)
    assert isinstance(opt, RMSpropTF)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(net[0].weight)] == 1e-5
    assert decay[id(net[0].bias)] == decay[id(net[1].weight)] == decay[id(net[1].bias)] == 0.0
    assert all(g["alpha"] == 0.9 and g["momentum"] == 0.9 and g["eps"] == 1e-3 for g in opt.param_groups)

    # one step on a tiny gradient: TF's update is lr * g / sqrt(v + eps) with v starting at 1 (0.9 * 1 + 0.1 g^2);
    # torch's RMSprop is lr * g / (sqrt(v) + eps) with v starting at 0 -- eps matters here
    g = 1e-4
    p_tf = torch.nn.Parameter(torch.zeros(1))
    p_torch = torch.nn.Parameter(torch.zeros(1))
    tf = RMSpropTF([p_tf], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.0)
    th = torch.optim.RMSprop([p_torch], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.0)
    for p, o in ((p_tf, tf), (p_torch, th)):
        p.grad = torch.full((1,), g)
        o.step()
    v_tf = 0.9 * 1.0 + 0.1 * g * g
    assert p_tf.item() == pytest.approx(-0.1 * g / (v_tf + 1e-3) ** 0.5, rel=1e-5)
    v_th = 0.1 * g * g
    assert p_torch.item() == pytest.approx(-0.1 * g / (v_th ** 0.5 + 1e-3), rel=1e-5)
    assert abs(p_torch.item()) > 100 * abs(p_tf.item())


def test_held_cosine_restarts_equal_the_released_disk_loop():
    """The released DiSK loop: outer epochs of 3 student epochs, CosineAnnealingWarmRestarts(T_0=50).step(e) after
    outer epoch e; ours is stepped after every student epoch."""
    from modules.schedules import HeldCosineRestartsLR

    ref_opt = _opt(0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, 50)
    released = []
    for outer in range(200):
        released += [ref_opt.param_groups[0]["lr"]] * 3  # the 3 student epochs of this outer epoch
        ref_opt.step()
        ref.step(outer)
    ours = _ours_lr(HeldCosineRestartsLR, 600, lr=0.1, restart_every=50, steps_per_cycle=3)
    assert ours == pytest.approx(released, rel=1e-12, abs=1e-15)
    assert ours[3] == pytest.approx(0.1) and ours[6] < 0.1 and min(ours) < 1e-3  # late by one; restarts
    with pytest.raises(ValueError, match="restart_every"):
        HeldCosineRestartsLR(_opt(), restart_every=0)


def _ours_lr(cls, steps: int, lr: float, **kw) -> list[float]:
    opt = _opt(lr)
    sched = cls(opt, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out
