"""FPTT (docs/fptt.md#algorithm): windows, the regulariser's gradient, the lambda / W_bar updates, a whole
training batch against a hand-written re-implementation, the epoch-end reset, the soft-target loss, and the
state in checkpoints."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from modules.fptt import FPTTSequenceModel, FPTTState
from modules.sequence_model import SequenceError, window_bounds


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, **kw)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def test_window_bounds_are_p_windows_plus_remainder():
    assert window_bounds(25, 10) == [(2 * i, 2 * i + 2) for i in range(10)] + [(20, 25)]
    assert window_bounds(20, 10) == [(2 * i, 2 * i + 2) for i in range(10)]
    assert window_bounds(3, 3) == [(0, 1), (1, 2), (2, 3)]


def test_sequence_shorter_than_windows_is_a_clear_error():
    with pytest.raises(SequenceError, match="length 4 cannot be cut into 10 windows.*parts") as err:
        window_bounds(4, 10)
    assert getattr(err.value, "user_facing", False)
    model = FPTTSequenceModel(cell="gru", hidden_size=3, task="regression", num_classes=1, input_shape=(4, 2),
                              parts=10)
    data = DataLoader(TensorDataset(torch.randn(2, 4, 2), torch.randn(2, 1)), batch_size=2)
    with pytest.raises(SequenceError, match="cannot be cut into 10 windows"):
        _trainer(max_steps=1).fit(model, train_dataloaders=data)


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_regulariser_gradient_equals_minus_lambda_plus_c_alpha_w_minus_wbar(c):
    torch.manual_seed(0)
    params = [("a.weight", torch.randn(3, 2, requires_grad=True)), ("a.bias", torch.randn(3, requires_grad=True))]
    state = FPTTState(params)
    for name, p in params:
        state.bar(name).copy_(torch.randn_like(p))
        state.lam(name).copy_(torch.randn_like(p))
    alpha = 0.3
    reg = state.regularizer(params, alpha, c)
    grads = torch.autograd.grad(reg, [p for _, p in params])
    for (name, p), g in zip(params, grads):
        assert torch.allclose(g, -state.lam(name) + c * alpha * (p - state.bar(name)), atol=1e-6)
    # and its value: -<W, lambda> + c alpha / 2 ||W - W_bar||^2
    value = sum(-(p * state.lam(n)).sum() + c * alpha / 2 * (p - state.bar(n)).pow(2).sum() for n, p in params)
    assert reg.item() == pytest.approx(value.item(), rel=1e-6)


def test_lambda_and_wbar_updates_follow_the_equations():
    torch.manual_seed(1)
    w = torch.randn(4)
    state = FPTTState([("w", w)])
    bar0, lam0 = torch.randn(4), torch.randn(4)
    state.bar("w").copy_(bar0)
    state.lam("w").copy_(lam0)
    alpha, beta = 0.5, 0.7
    state.update([("w", w)], alpha, beta)
    lam1 = lam0 - alpha * (w - bar0)
    bar1 = (1 - beta) * bar0 + beta * w - (beta / alpha) * lam1
    assert torch.allclose(state.lam("w"), lam1, atol=1e-6)
    assert torch.allclose(state.bar("w"), bar1, atol=1e-6)


def _manual_fptt(net, x, y, parts, alpha, beta, lr, reg_scale=1.0):
    """FPTT on one batch written out directly from the equations (SGD, no clipping)."""
    params = [p for p in net.parameters()]
    bar = [p.detach().clone() for p in params]
    lam = [torch.zeros_like(p) for p in params]
    bounds = window_bounds(x.shape[1], parts)
    n = len(bounds)
    state = None
    for p_idx, (a, b) in enumerate(bounds):
        hidden, state = net(x[:, a:b], state, t0=a)
        out = net.readout(hidden[:, -1])
        loss = (p_idx + 1) / n * F.mse_loss(out, y)
        loss = loss + sum(-(w * l).sum() + reg_scale * alpha / 2 * (w - wb).pow(2).sum()
                          for w, l, wb in zip(params, lam, bar))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for w, g, l, wb in zip(params, grads, lam, bar):
                w -= lr * g
                l -= alpha * (w - wb)
                wb.copy_((1 - beta) * wb + beta * w - (beta / alpha) * l)
        state = net.detach_state(state)
    return params, bar, lam


@pytest.mark.parametrize("cell", ["lstm", "tarnn"])
def test_one_batch_matches_the_equations(cell):
    torch.manual_seed(2)
    x, y = torch.randn(3, 7, 2), torch.randn(3, 1)
    model = FPTTSequenceModel(cell=cell, hidden_size=4, task="regression", num_classes=1, input_shape=(7, 2),
                              parts=3, alpha=0.4, beta=0.6, optimizer=_sgd, gradient_clip_val=None,
                              reset_to_average=False, reset_lambda=False)
    reference = copy.deepcopy(model.net)
    trainer = _trainer(max_steps=1)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=3))
    assert trainer.global_step == 1  # one batch = one step, whatever the number of windows (here 4)
    params, bar, lam = _manual_fptt(reference, x, y, parts=3, alpha=0.4, beta=0.6, lr=0.1)
    names = [n for n, _ in model.net.named_parameters()]
    for name, w, wb, lm in zip(names, params, bar, lam):
        assert torch.allclose(dict(model.net.named_parameters())[name], w, atol=1e-5), name
        assert torch.allclose(model.fptt.bar(name), wb, atol=1e-5), name
        assert torch.allclose(model.fptt.lam(name), lm, atol=1e-5), name


def test_epoch_end_sets_w_to_wbar_and_resets_lambda_before_validation():
    torch.manual_seed(3)
    x, y = torch.randn(2, 6, 2), torch.randn(2, 1)
    model = FPTTSequenceModel(cell="gru", hidden_size=3, task="regression", num_classes=1, input_shape=(6, 2),
                              parts=2, optimizer=_sgd)
    seen = {}

    class Probe(pl.Callback):
        def on_validation_start(self, trainer, pl_module):
            seen["w"] = [p.detach().clone() for p in pl_module.net.parameters()]

    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[Probe()])
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    for (name, p), w_val in zip(model.net.named_parameters(), seen["w"]):
        assert torch.equal(p, model.fptt.bar(name)), name
        assert torch.equal(w_val, p), name  # validation saw the averaged weights
        assert torch.count_nonzero(model.fptt.lam(name)) == 0


def test_classification_window_loss_with_uniform_soft_targets():
    model = FPTTSequenceModel(cell="gru", hidden_size=3, task="classification", num_classes=4,
                              input_shape=(8, 1), parts=4)
    torch.manual_seed(4)
    out, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])
    n_windows = 4
    for p in range(n_windows):
        w = (p + 1) / n_windows
        ce = F.cross_entropy(out, y)
        soft = (-(0.25 * F.log_softmax(out, -1)).mean(-1)).mean()
        expected = ce if p == n_windows - 1 else w * ce + (1 - w) * soft
        assert model.window_loss(out, y, p, n_windows).item() == pytest.approx(expected.item(), rel=1e-6)


def test_state_is_checkpointed_and_not_reinitialised_on_resume(tmp_path):
    torch.manual_seed(5)
    x, y = torch.randn(4, 6, 2), torch.randn(4, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    kw = dict(cell="lstm", hidden_size=3, task="regression", num_classes=1, input_shape=(6, 2), parts=3,
              reset_to_average=False, reset_lambda=False)
    model = FPTTSequenceModel(**kw)
    trainer = _trainer(max_steps=1)
    trainer.fit(model, train_dataloaders=loader)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("fptt.bar__") for k in sd) and any(k.startswith("fptt.lam__") for k in sd)
    restored = FPTTSequenceModel(**kw)
    restored.load_state_dict(sd)
    name = "rnn.weight_hh_l0"
    lam_before = restored.fptt.lam(name).clone()
    assert torch.count_nonzero(lam_before) > 0
    bar_before = restored.fptt.bar(name).clone()
    restored.on_train_start()  # initialised flag from the checkpoint: W_bar and lambda are kept
    assert torch.equal(restored.fptt.bar(name), bar_before) and torch.equal(restored.fptt.lam(name), lam_before)
    # resuming the run with --ckpt_path continues from the saved state
    resumed = FPTTSequenceModel(**kw)
    _trainer(max_steps=2).fit(resumed, train_dataloaders=loader, ckpt_path=str(ckpt))
    assert not torch.equal(resumed.fptt.bar(name), bar_before)
    assert math.isfinite(float(resumed.fptt.lam(name).abs().sum()))


def test_mean_table_deviation_is_the_mean_prediction_of_misclassified_examples():
    """The project's earlier table (soft_table_fill="mean", soft_table_init="uniform"), kept as an option; the
    released table (first misclassified example, zeros) is checked in test_fptt_targets.py."""
    model = FPTTSequenceModel(cell="gru", hidden_size=3, task="classification", num_classes=3, input_shape=(6, 1),
                              parts=3, soft_targets="adaptive", soft_table_fill="mean", soft_table_init="uniform",
                              one_hot_windows="last")
    assert model.soft_table.shape == (3, 3, 3)  # one row per window p < P
    y = torch.tensor([0, 0, 0, 1])
    out = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    model._update_soft_table([out, out, out], y)
    wrong = out[:2].softmax(-1)  # the two misclassified examples of class 0
    assert torch.allclose(model.soft_table[0][0], wrong.mean(0))
    assert torch.allclose(model.soft_table[1][0], wrong.mean(0))
    assert torch.allclose(model.soft_table[2][0], torch.full((3,), 1 / 3))  # the last window is one-hot: unused
    assert torch.allclose(model.soft_table[0][1], torch.full((3,), 1 / 3))  # class 1: nothing misclassified
    assert FPTTSequenceModel(task="sequence", num_classes=10000, input_shape=(30,)).soft_table.numel() == 0


# ---------------------------------------------------------------------------------------------------- drop-in
def _fit_fptt(x, y, batch_size, accumulate=None, trainer_accumulate=1, **kw):
    torch.manual_seed(7)
    model = FPTTSequenceModel(cell="lstm", hidden_size=4, task="classification", num_classes=3, input_shape=(7, 2),
                              parts=3, alpha=0.3, beta=0.6, optimizer=_sgd, gradient_clip_val=0.5,
                              reset_to_average=False, reset_lambda=False, soft_targets="adaptive",
                              soft_target_epochs=0, accumulate_grad_batches=accumulate, **kw)
    trainer = _trainer(max_epochs=1, accumulate_grad_batches=trainer_accumulate)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=batch_size))
    return model, trainer


def test_accumulated_step_is_fptt_on_the_union_of_the_batches():
    """accumulate_grad_batches=2 on batches of 2 moves W, W_bar, lambda and the soft-target table exactly as
    batches of 4 do (clipping included): one optimizer step and one W_bar/lambda update per window per group."""
    torch.manual_seed(8)
    x, y = torch.randn(8, 7, 2), torch.randint(0, 3, (8,))
    big, big_trainer = _fit_fptt(x, y, batch_size=4)
    acc, acc_trainer = _fit_fptt(x, y, batch_size=2, trainer_accumulate=2)  # the Trainer's flag is taken over
    assert acc.accumulate_grad_batches == 2
    assert big_trainer.global_step == acc_trainer.global_step == 2  # a global step is a group of batches
    for name, p in big.net.named_parameters():
        q = dict(acc.net.named_parameters())[name]
        assert torch.allclose(p, q, atol=1e-5), name
        assert torch.allclose(big.fptt.bar(name), acc.fptt.bar(name), atol=1e-5), name
        assert torch.allclose(big.fptt.lam(name), acc.fptt.lam(name), atol=1e-5), name
    assert torch.allclose(big.soft_table, acc.soft_table, atol=1e-6)
    assert torch.count_nonzero(acc.soft_table) > 0
    # the module's own argument gives the same run; two different values are refused, naming the argument
    own, _ = _fit_fptt(x, y, batch_size=2, accumulate=2)
    assert all(torch.equal(p, q) for p, q in zip(own.net.parameters(), acc.net.parameters()))
    with pytest.raises(SequenceError, match="accumulate_grad_batches is 3 on the model but 2 on the Trainer"):
        _fit_fptt(x, y, batch_size=2, accumulate=3, trainer_accumulate=2)


def test_net_argument_takes_a_module_and_names_net_in_errors(tmp_path):
    torch.manual_seed(9)
    x, y = torch.randn(4, 6, 2), torch.randn(4, 1)
    model = FPTTSequenceModel(net=torch.nn.GRU(2, 3, batch_first=True), task="regression", num_classes=1,
                              input_shape=(6, 2), parts=2)
    assert isinstance(model.hparams["net"], str) and "GRU" in model.hparams["net"]
    assert not any(isinstance(v, torch.nn.Module) for v in model.hparams.values())
    trainer = _trainer(max_steps=1)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=4))
    assert any(k.startswith("fptt.bar__rnn__") for k in model.state_dict())  # W_bar covers the user's GRU
    ckpt = tmp_path / "gru.ckpt"
    trainer.save_checkpoint(ckpt)
    with pytest.raises(SequenceError, match=r"load_from_checkpoint\(path, net="):
        FPTTSequenceModel.load_from_checkpoint(ckpt, weights_only=True)
    loaded = FPTTSequenceModel.load_from_checkpoint(ckpt, net=torch.nn.GRU(2, 3, batch_first=True),
                                                    weights_only=True)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(SequenceError, match=r"as net=\.\.\."):
        FPTTSequenceModel(cell=torch.nn.GRU(2, 3), task="regression", num_classes=1, input_shape=(6, 2))
    with pytest.raises(SequenceError, match=r"net=Linear.*CellAdapter"):
        FPTTSequenceModel(net=torch.nn.Linear(2, 3), task="regression", num_classes=1, input_shape=(6, 2))


def test_cli_built_net_is_described_in_the_checkpoint_and_rebuilt_on_load(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    torch.manual_seed(10)
    net = {"class_path": "torch.nn.GRUCell", "init_args": {"input_size": 2, "hidden_size": 3}}
    cli = LightningCLI(FPTTSequenceModel, run=False, save_config_callback=None, args={
        "trainer": {"max_steps": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0},
        "model": {"net": net, "task": "regression", "num_classes": 1, "input_shape": [6, 2], "parts": 2}})
    x, y = torch.randn(4, 6, 2), torch.randn(4, 1)
    cli.trainer.fit(cli.model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=4))
    ckpt = tmp_path / "cli.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["net"]["class_path"] == "torch.nn.GRUCell"
    assert hparams["net"]["init_args"]["hidden_size"] == 3
    loaded = FPTTSequenceModel.load_from_checkpoint(ckpt, weights_only=True)  # no net= needed
    assert torch.equal(loaded(x), cli.model(x))
