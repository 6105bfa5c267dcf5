"""SequenceModel: full BPTT is one plain gradient step, truncated BPTT cuts the graph at fixed-length windows,
one batch is one global step, per-step (language-model) losses, and clear errors for bad configurations."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from modules.sequence_model import SequenceError, SequenceModel, truncation_bounds


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def _fit_one(model, x, y):
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=len(x)))
    return trainer


def test_truncation_windows_have_fixed_length():
    assert truncation_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]  # split(4), not tensor_split(4)
    assert truncation_bounds(10, None) == [(0, 10)]
    with pytest.raises(SequenceError, match="truncation"):
        truncation_bounds(10, 0)


def test_full_bptt_is_one_gradient_step_on_the_terminal_loss():
    torch.manual_seed(0)
    x, y = torch.randn(3, 6, 2), torch.randn(3, 1)
    model = SequenceModel(cell="irnn", hidden_size=4, task="regression", num_classes=1, input_shape=(6, 2),
                          optimizer=_sgd, gradient_clip_val=None)
    ref = copy.deepcopy(model.net)
    trainer = _fit_one(model, x, y)
    assert trainer.global_step == 1
    hidden, _ = ref(x)
    loss = F.mse_loss(ref.readout(hidden[:, -1]), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for (name, p), w0, g in zip(model.net.named_parameters(), ref.parameters(), grads):
        assert torch.allclose(p, w0 - 0.1 * g, atol=1e-6), name


def test_truncated_bptt_per_step_loss_matches_windowed_steps():
    torch.manual_seed(1)
    x, y = torch.randn(2, 5, 3), torch.randint(0, 4, (2, 5))
    model = SequenceModel(cell="gru", hidden_size=3, task="sequence", num_classes=4, input_shape=(5, 3),
                          truncation=2, optimizer=_sgd, gradient_clip_val=None)
    ref = copy.deepcopy(model.net)
    trainer = _fit_one(model, x, y)
    assert trainer.global_step == 1  # three windows, one batch
    state = None
    for a, b in [(0, 2), (2, 4), (4, 5)]:
        hidden, state = ref(x[:, a:b], state)
        out = ref.readout(hidden)
        loss = F.cross_entropy(out.reshape(-1, 4), y[:, a:b].reshape(-1))
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p -= 0.1 * g
        state = ref.detach_state(state)
    for (name, p), q in zip(model.net.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_language_model_on_token_ids_logs_perplexity():
    torch.manual_seed(2)
    x, y = torch.randint(0, 7, (2, 6)), torch.randint(0, 7, (2, 6))
    model = SequenceModel(cell="lstm", hidden_size=5, task="sequence", num_classes=7, input_shape=(6,))
    trainer = _fit_one(model, x, y)
    assert model(x).shape == (2, 6, 7)
    assert "train/loss" in trainer.callback_metrics


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(SequenceError, match="task must be one of"):
        SequenceModel(task="ranking")
    with pytest.raises(SequenceError, match="input_shape"):
        SequenceModel(input_shape=(3, 32, 32))


def _fit_tbptt(x, y, batch_size, accumulate=1, net=None):
    torch.manual_seed(4)
    kw = dict(net=net) if net is not None else dict(cell="gru", hidden_size=3)
    model = SequenceModel(task="sequence", num_classes=4, input_shape=(5, 3), truncation=2, optimizer=_sgd,
                          gradient_clip_val=0.5, **kw)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         accumulate_grad_batches=accumulate)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=batch_size))
    return model, trainer


def test_accumulated_truncated_bptt_step_is_the_step_on_the_union_of_the_batches():
    torch.manual_seed(5)
    x, y = torch.randn(6, 5, 3), torch.randint(0, 4, (6, 5))
    big, big_trainer = _fit_tbptt(x, y, batch_size=6)
    acc, acc_trainer = _fit_tbptt(x, y, batch_size=2, accumulate=3)  # Trainer's flag, taken over by the module
    assert big_trainer.global_step == acc_trainer.global_step == 1
    for (name, p), q in zip(big.net.named_parameters(), acc.net.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_user_lstm_as_net_trains_by_the_equations():
    """net=nn.LSTM (time-first) is wrapped with a Linear readout; full BPTT is one plain gradient step on it."""
    torch.manual_seed(6)
    x, y = torch.randn(3, 6, 2), torch.randn(3, 1)
    lstm = torch.nn.LSTM(2, 4)
    model = SequenceModel(net=lstm, task="regression", num_classes=1, input_shape=(6, 2), optimizer=_sgd,
                          gradient_clip_val=None)
    assert type(model.net).__name__ == "RNNAdapter" and model.net.rnn is lstm
    assert not any(isinstance(v, torch.nn.Module) for v in model.hparams.values())
    ref = copy.deepcopy(model.net)
    _fit_one(model, x, y)
    hidden, _ = ref.rnn(x.transpose(0, 1))
    loss = F.mse_loss(ref.readout(hidden[-1]), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for (name, p), w0, g in zip(model.net.named_parameters(), ref.parameters(), grads):
        assert torch.allclose(p, w0 - 0.1 * g, atol=1e-6), name
