"""DiSK: the top-K mask, the masked teacher, the distillation term and the budget term equal their equations on
hand-built logits; g = 0 reduces to top-K KD; raising g on a wrong example lowers L_DiSK; the scheduled budget
multiplier moves with the epoch; teacher chaining through init_from, and the bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from main import load_weights
from modules.constraints import Constraint, ConstraintError, CosineSchedule
from modules.disk import (DiSK, TeacherCheckpointError, budget_penalty, budget_value, disk_distill_loss, kd_loss,
                          masked_teacher, topk_mask)
from modules.image_classifier import ImageClassifier

T = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 4.0, -1.0, 1.0]])
S = torch.tensor([[0.5, 1.0, 0.0, -0.5], [1.0, 0.0, 0.5, 2.0]])
Y = torch.tensor([3, 1])


def test_topk_mask_keeps_teacher_topk_and_label():
    m = topk_mask(T, Y, 2)
    torch.testing.assert_close(m, torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]]))


def test_masked_teacher_equation():
    m = topk_mask(T, Y, 2)
    tau = 4.0
    got = masked_teacher(T, m, tau)
    for i in range(2):
        row_min = min(T[i].tolist())
        z = [T[i, c].item() / tau if m[i, c] else row_min for c in range(4)]
        e = [math.exp(v) for v in z]
        want = [m[i, c].item() * e[c] / sum(e) for c in range(4)]
        torch.testing.assert_close(got[i], torch.tensor(want))
    assert float(got.sum(1).max()) < 1.0  # not renormalised


def test_disk_term_equation_and_g0_is_topk_kd():
    m = topk_mask(T, Y, 2)
    g = torch.tensor([0.3, 0.7])
    ts, tt, lam = 3.5, 4.0, 0.9
    t_tilde = masked_teacher(T, m, tt)
    z = F.softmax(S / ts, 1) + g[:, None] * m
    want = lam * ts * tt * (-(t_tilde * z.log()).sum(1)).mean()
    torch.testing.assert_close(disk_distill_loss(S, T, g, m, ts, tt, lam), want)
    zero = disk_distill_loss(S, T, torch.zeros(2), m, ts, tt, lam)
    kd_topk = lam * ts * tt * (-(t_tilde * F.log_softmax(S / ts, 1)).sum(1)).mean()
    torch.testing.assert_close(zero, kd_topk)


def test_raising_g_on_a_wrong_example_lowers_the_loss():
    m = topk_mask(T, Y, 2)
    assert S[0].argmax() != Y[0]  # the student is wrong on example 0
    losses = [float(disk_distill_loss(S[:1], T[:1], torch.tensor([g]), m[:1])) for g in (0.0, 0.3, 0.9)]
    assert losses[0] > losses[1] > losses[2]


def test_budget_value_and_penalty_equations():
    g = torch.tensor([0.4, 0.8])
    hard = F.cross_entropy(S, T.argmax(1), reduction="none").clamp(max=1.0)
    n_err = int((S.argmax(1) != Y).sum())
    want = (g * hard).sum() / n_err
    got = budget_value(S, T, Y, g, max_ce=1.0)
    torch.testing.assert_close(got, want)
    poster = -(g * F.log_softmax(S, 1)[torch.arange(2), Y]).mean()
    torch.testing.assert_close(budget_value(S, T, Y, g, form="poster"), poster)
    c = Constraint("b", mode="scheduled", schedule=CosineSchedule(1.0, 5.0, period=50),
                   bound=CosineSchedule(0.6, 0.4, period=20))
    c.update(epoch=25)  # lambda 3, delta restarts at 0.6 + cosine at phase 5/20
    delta = 0.4 + 0.2 * (1 + math.cos(math.pi * 5 / 20)) / 2
    value = torch.tensor(0.9)
    pen = budget_penalty(c, value, g, 10, 0.9)
    assert float(pen) == pytest.approx(3.0 * (0.9 - delta) + 0.9 * float(torch.log(1 + 10 * g).mean()), rel=1e-5)


def test_kd_loss_equation():
    want = 0.9 * 16 * F.kl_div(F.log_softmax(S / 4, 1), F.softmax(T / 4, 1), reduction="batchmean") + \
        0.1 * F.cross_entropy(S, Y)
    torch.testing.assert_close(kd_loss(S, T, Y, 4.0, 0.9), want)


def _model(**kw):
    return DiSK(student="small_cnn", teacher="small_cnn", num_classes=4, input_shape=(1, 8, 8),
                student_kwargs={"widths": [4, 8]}, teacher_kwargs={"widths": [8, 16]}, guide_width=8, **kw)


def _data():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)),
                      batch_size=4)


def test_phases_and_scheduled_multiplier_through_training(tmp_path):
    model = _model(guide_warmup=1, student_epochs=1, guide_epochs=1, lambda_period=4,
                   optimizer=lambda p: torch.optim.SGD(p, lr=0.05), guide_optimizer=lambda p: torch.optim.SGD(p, lr=0.05))
    assert [model.phase(e) for e in range(5)] == ["guide", "student", "guide", "student", "guide"]
    data = _data()
    teacher0 = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    guide0 = [p.detach().clone() for p in model.guide.parameters()]
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="no teacher weights"):
        trainer.fit(model, data, data)
    # Lightning epoch 3 = outer epoch (3 - 1) // 2 = 1 of the released code, not schedule epoch 3
    assert float(model.budget.multiplier) == pytest.approx(CosineSchedule(1.0, 5.0, period=4)(1))
    assert int(model.budget.epoch) == 1
    for k, v in model.teacher.state_dict().items():  # the teacher is frozen (BN statistics included)
        torch.testing.assert_close(v, teacher0[k])
    assert any(not torch.equal(a, b) for a, b in zip(guide0, model.guide.parameters(), strict=True))
    assert "val/acc1" in trainer.callback_metrics
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert ckpt["state_dict"]["budget.lam"] == model.budget.lam


def test_schedule_epoch_is_the_released_outer_epoch_and_delta_max_shrinks_x09():
    """DiSK.py passes its outer-loop epoch (3 student + 3 guide epochs each, after 5 warm-up epochs) to the
    lambda/delta cosines, and multiplies budget_g_max by 0.9 every 20 outer epochs (runner.sh: delta(20) = 0.54)."""
    model = _model(guide_warmup=5, student_epochs=3, guide_epochs=3)
    got = [model.schedule_epoch(e) for e in (0, 4, 5, 10, 11, 5 + 6 * 25, 5 + 6 * 25 + 5, 1204)]
    assert got == [0, 4, 0, 0, 1, 25, 25, 199]
    delta = model.budget.bound
    assert delta(0) == pytest.approx(0.6)
    assert delta(10) == pytest.approx(0.5)
    assert delta(20) == pytest.approx(0.54)  # budget_g_max 0.6 * 0.9
    assert delta(100) == pytest.approx(0.6 * 0.9 ** 5)  # below delta_min 0.4: the cosine then rises towards 0.4
    assert delta(110) == pytest.approx(0.4 + (0.6 * 0.9 ** 5 - 0.4) * 0.5)
    lam = model.budget.schedule
    assert lam(25) == pytest.approx(3.0) and lam(50) == pytest.approx(1.0)


def test_dual_ascent_budget_option_moves_the_multiplier_in_guide_epochs(tmp_path):
    sgd = lambda p: torch.optim.SGD(p, lr=0.05)  # noqa: E731
    model = _model(guide_warmup=1, student_epochs=1, guide_epochs=1, budget_mode="dual_ascent", dual_lr=2.0,
                   optimizer=sgd, guide_optimizer=sgd)
    assert model.budget.mode == "dual_ascent" and float(model.budget.multiplier) == 1.0
    values = []
    update = model.budget.update

    def record(value=None, bound=None, epoch=None):
        values.append((float(value), float(model.budget.current_bound())))
        return update(value=value, bound=bound, epoch=epoch)

    model.budget.update = record
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="no teacher weights"):
        trainer.fit(model, _data(), _data())
    assert model.budget.lr == pytest.approx(2.0 / 2)  # dual_lr per epoch spread over the 2 batches
    assert len(values) == 2  # one update per guide batch (epoch 0), none in the student epoch
    want = 1.0
    for v, d in values:
        want = max(0.0, want + 1.0 * (v - d))
    assert float(model.budget.multiplier) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ConstraintError, match="budget_mode"):
        _model(budget_mode="hard")


def test_teacher_from_init_from_checkpoint_and_errors(tmp_path):
    teacher = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), net_kwargs={"widths": [8, 16]})
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    model = _model()
    load_weights(model, path)  # main.py's init_from path: restore_structure maps net.* onto teacher.*
    for k, v in teacher.net.state_dict().items():
        torch.testing.assert_close(model.teacher.state_dict()[k], v)
    assert model.teacher_loaded
    missing = _model(teacher_ckpt=str(tmp_path / "nope.ckpt"))
    with pytest.raises(TeacherCheckpointError, match="teacher_ckpt.*does not exist") as err:
        missing.setup("fit")
    assert err.value.user_facing
    wrong = ImageClassifier(net="small_cnn", num_classes=5, input_shape=(1, 8, 8), net_kwargs={"widths": [8, 16]})
    torch.save({"state_dict": wrong.state_dict()}, tmp_path / "wrong.ckpt")
    with pytest.raises(TeacherCheckpointError, match="does not fit"):
        _model(teacher_ckpt=str(tmp_path / "wrong.ckpt")).setup("fit")


@pytest.mark.parametrize("source", ["classifier", "disk_ce"])
def test_student_starts_from_the_ce_student_checkpoint(tmp_path, source):
    """``student_ckpt`` (the released runner's --model_ckpt): the student's weights at fit start are the CE
    student's, from an ImageClassifier run (``net.*``) or a ``method: ce`` run of DiSK (``student.*``); the
    teacher is untouched; a missing file or another architecture is a clear error naming the key."""
    if source == "classifier":
        ce = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), net_kwargs={"widths": [4, 8]})
        want = ce.net.state_dict()
    else:
        ce = _model(method="ce")
        want = ce.student.state_dict()
    torch.nn.init.normal_(next(iter(want.values())))  # not the seeded default init of a fresh model
    path = tmp_path / "ce.ckpt"
    torch.save({"state_dict": ce.state_dict()}, path)
    model = _model(student_ckpt=str(path))
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    assert not torch.equal(model.student.state_dict()[next(iter(want))], next(iter(want.values())))
    with pytest.warns(UserWarning, match="no teacher weights"):
        model.setup("fit")
    for k, v in want.items():
        torch.testing.assert_close(model.student.state_dict()[k], v)
    for k, v in teacher_before.items():
        torch.testing.assert_close(model.teacher.state_dict()[k], v)
    with pytest.raises(TeacherCheckpointError, match="student_ckpt.*does not exist"):
        _model(student_ckpt=str(tmp_path / "nope.ckpt")).setup("fit")
    wrong = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), net_kwargs={"widths": [8, 16]})
    torch.save({"state_dict": wrong.state_dict()}, tmp_path / "wrong.ckpt")
    with pytest.raises(TeacherCheckpointError, match="student_ckpt.*does not fit the student"):
        _model(student_ckpt=str(tmp_path / "wrong.ckpt")).setup("fit")


def test_teacher_and_student_with_different_class_counts():
    with pytest.raises(ConstraintError, match="teacher predicts 7 classes but student predicts 4"):
        _model(teacher_num_classes=7)


@pytest.mark.parametrize(("key", "value"), [("delta_max", 1.5), ("delta_min", 0.0), ("delta_max", -0.2)])
def test_budget_outside_unit_interval_is_a_clear_error(key, value):
    with pytest.raises(ConstraintError, match=rf"{key} must be in \(0, 1\]"):
        _model(**{key: value})
