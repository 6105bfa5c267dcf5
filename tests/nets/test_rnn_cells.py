"""iRNN and TARNN cells against their update equations on hand-set weights; the iRNN equilibrium Jacobian;
state continuation of the batch-first SequenceNet for every cell."""

from __future__ import annotations

import pytest
import torch

from nets.rnn_cells import IRNNCell, SequenceNet, TARNNCell


def _relu(v: float) -> float:
    return max(v, 0.0)


def _set(param: torch.nn.Parameter, values) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values, dtype=param.dtype).reshape(param.shape))


def test_irnn_matches_euler_steps_by_hand():
    # d = 2, D = 1, K = 2, eta indexed by (step, time), read at t = 1
    cell = IRNNCell(1, 2, num_steps=2, alpha=0.5, eta_mode="step_time", seq_len=3)
    _set(cell.W, [[1.0], [-2.0]])
    _set(cell.U, [[0.5, -1.0], [0.25, 0.0]])
    _set(cell.b, [0.1, 0.3])
    _set(cell.eta.values, [[9.0, 0.2, 9.0], [9.0, 0.4, 9.0]])
    x, hp = 0.7, [0.2, -0.6]
    d = [1.0 * x + 0.1, -2.0 * x + 0.3]
    h = list(hp)  # h^(0) = h_{t-1}
    for eta in (0.2, 0.4):
        s = [h[0] + hp[0], h[1] + hp[1]]
        pre = [0.5 * s[0] - 1.0 * s[1] + d[0], 0.25 * s[0] + d[1]]
        h = [h[i] + eta * (_relu(pre[i]) - 0.5 * s[i]) for i in range(2)]
    out = cell(torch.tensor([[x]]), torch.tensor([hp]), t=1)
    assert out.squeeze(0).tolist() == pytest.approx(h, abs=1e-6)


def test_irnn_zero_initial_state_and_gate():
    cell = IRNNCell(1, 1, num_steps=1, alpha=1.0, eta_mode="scalar", init_state="zero", gated=True)
    for p, v in ((cell.W, 2.0), (cell.U, 0.5), (cell.b, 0.0), (cell.eta.values, 0.3), (cell.W_g, 1.0),
                 (cell.U_g, -1.0), (cell.b_g, -3.0)):
        _set(p, [v])
    x, hp = 0.4, 0.8
    z = 0.0 + 0.3 * (_relu(0.5 * (0.0 + hp) + 2.0 * x) - (0.0 + hp))
    gamma = torch.sigmoid(torch.tensor(-1.0 * hp + 1.0 * x - 3.0)).item()
    expected = (1 - gamma) * hp + gamma * z
    assert cell(torch.tensor([[x]]), torch.tensor([[hp]])).item() == pytest.approx(expected, abs=1e-6)


def test_irnn_equilibrium_jacobian_is_minus_identity():
    """At the fixed point h_t + h_{t-1} depends on x_t only, so dh_t/dh_{t-1} = -I (docs/irnn.md#update-rule)."""
    torch.manual_seed(0)
    cell = IRNNCell(3, 4, num_steps=400, alpha=1.0, eta_mode="scalar", eta_init=0.3, activation="tanh",
                    weight_std=0.2)
    x = torch.randn(1, 3)
    h_prev = torch.randn(1, 4) * 0.3
    jac = torch.autograd.functional.jacobian(lambda h: cell(x, h), h_prev).reshape(4, 4)
    assert torch.allclose(jac, -torch.eye(4), atol=1e-4)
    # and a few steps from the same start do not have that property
    short = IRNNCell(3, 4, num_steps=1, alpha=1.0, eta_mode="scalar", eta_init=0.3, activation="tanh")
    short.load_state_dict(cell.state_dict())
    jac1 = torch.autograd.functional.jacobian(lambda h: short(x, h), h_prev).reshape(4, 4)
    assert not torch.allclose(jac1, -torch.eye(4), atol=1e-2)


def _tarnn_by_hand(variant: str, steps: list[float]) -> float:
    # d = D = 1; weights below
    W1, W2, B1, Wg, U1, U2, B2, Ug, b1, bg = 0.5, -0.25, 0.2, 1.0, 0.8, -0.5, 0.3, 0.6, 0.05, -1.0
    x, x_prev, s = 0.9, -0.4, 0.35
    gamma = torch.sigmoid(torch.tensor(Ug * s + Wg * x + bg)).item()
    c = U2 * s + W1 * x + W2 * x_prev + b1
    e = B1 * x + B2 * s
    z = s
    for a in steps:
        drive = _relu(U1 * z + c) - z - s + e
        z = (1 - a) * z + a * drive if variant == "b" else z + a * gamma * drive
    return (1 - gamma) * s + gamma * z if variant == "b" else z


@pytest.mark.parametrize("variant", ["b", "plain"])
def test_tarnn_matches_released_update_by_hand(variant):
    cell = TARNNCell(1, 1, num_steps=2, variant=variant, step_mode="time", seq_len=4)
    for name, v in (("W_1", 0.5), ("W_2", -0.25), ("B_1", 0.2), ("W_g", 1.0), ("U_1", 0.8), ("U_2", -0.5),
                    ("B_2", 0.3), ("U_g", 0.6), ("b_1", 0.05), ("b_g", -1.0)):
        _set(getattr(cell, name), [v])
    _set(cell.A.values, [[9, 9, 0.3, 9], [9, 9, 0.6, 9]])  # A[k, t] read at t = 2
    out = cell(torch.tensor([[0.9]]), torch.tensor([[-0.4]]), torch.tensor([[0.35]]), t=2)
    assert out.item() == pytest.approx(_tarnn_by_hand(variant, [0.3, 0.6]), abs=1e-6)


def test_tarnn_default_gate_bias_and_step_init():
    assert torch.all(TARNNCell(2, 3, seq_len=5).b_g == -3.0)
    assert torch.all(TARNNCell(2, 3, variant="plain", seq_len=5).b_g == 0.0)
    assert torch.all(TARNNCell(2, 3, seq_len=5).A.values == 0.01)
    assert TARNNCell(2, 3, seq_len=5).A.values.shape == (1, 5)


@pytest.mark.parametrize("cell", ["irnn", "tarnn", "lstm", "gru"])
def test_sequence_net_continues_a_sequence_across_calls(cell):
    torch.manual_seed(1)
    net = SequenceNet(cell, input_size=3, hidden_size=5, output_size=2, num_layers=2, seq_len=9)
    x = torch.randn(4, 9, 3)
    full, _ = net(x)
    first, state = net(x[:, :4])
    second, _ = net(x[:, 4:], SequenceNet.detach_state(state), t0=4)
    assert torch.allclose(torch.cat([first, second], dim=1), full, atol=1e-6)
    assert net.readout(full).shape == (4, 9, 2)


def test_time_indexed_table_rejects_longer_sequences():
    net = SequenceNet("tarnn", 1, 4, 1, seq_len=5)
    with pytest.raises(ValueError, match="beyond the step table"):
        net(torch.zeros(1, 6, 1))
    with pytest.raises(ValueError, match="seq_len"):
        IRNNCell(1, 4, eta_mode="step_time")


def test_token_input_and_tied_weights():
    net = SequenceNet("lstm", 1, 8, 11, vocab_size=11, embedding_dim=6, head_hidden=6, tie_weights=True)
    assert net.head.weight is net.embedding.weight
    hidden, _ = net(torch.randint(0, 11, (2, 7)))
    assert net.readout(hidden).shape == (2, 7, 11)
    with pytest.raises(ValueError, match="tie_weights"):
        SequenceNet("lstm", 1, 8, 11, vocab_size=11, embedding_dim=8, head_hidden=6, tie_weights=True)


# ---------------------------------------------------------------------------------------------------- adapters
def test_rnn_adapter_runs_a_time_first_module_batch_first_and_continues_a_sequence():
    from nets.rnn_cells import RNNAdapter

    torch.manual_seed(2)
    lstm = torch.nn.LSTM(3, 4)  # time-first, as torch builds it by default
    net = RNNAdapter(lstm, output_size=2)
    x = torch.randn(5, 7, 3)  # (B, T, F)
    full, _ = net(x)
    direct, _ = lstm(x.transpose(0, 1))
    assert torch.allclose(full, direct.transpose(0, 1), atol=1e-6)
    first, state = net(x[:, :3])
    second, _ = net(x[:, 3:], net.detach_state(state), t0=3)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-6)
    assert net.readout(full).shape == (5, 7, 2)
    with pytest.raises(ValueError, match="bidirectional=False"):
        RNNAdapter(torch.nn.GRU(3, 4, bidirectional=True), output_size=2)


class _TimedCell(torch.nn.Module):
    """A user's cell with a time index: h_t = tanh(W x_t + U h_{t-1}) + 0.01 t."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.W = torch.nn.Linear(input_size, hidden_size)
        self.U = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        self.seen = []

    def forward(self, x, h=None, t=0):
        self.seen.append(t)
        h = x.new_zeros(x.shape[0], self.U.in_features) if h is None else h
        return torch.tanh(self.W(x) + self.U(h)) + 0.01 * t


def test_cell_adapter_loops_a_cell_over_time_with_time_indices():
    from nets.rnn_cells import CellAdapter

    torch.manual_seed(3)
    cell = _TimedCell(2, 3)
    net = CellAdapter(cell, output_size=4, hidden_size=3)
    x = torch.randn(2, 6, 2)
    full, _ = net(x)
    h, expected = None, []
    for t in range(6):  # the recursion written out
        h = torch.tanh(cell.W(x[:, t]) + cell.U(torch.zeros(2, 3) if h is None else h)) + 0.01 * t
        expected.append(h)
    assert torch.allclose(full, torch.stack(expected, 1), atol=1e-6)
    cell.seen.clear()
    first, state = net(x[:, :4])
    second, _ = net(x[:, 4:], net.detach_state(state), t0=4)
    assert cell.seen == list(range(6))
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-6)
    # torch's LSTM cell: the state is (h, c), h is its first item
    lstm_net = CellAdapter(torch.nn.LSTMCell(2, 5), output_size=1)
    assert lstm_net(x)[0].shape == (2, 6, 5)


def test_adapters_name_what_to_change():
    from nets.rnn_cells import CellAdapter, as_sequence_net

    with pytest.raises(ValueError, match="pass hidden_size=H"):
        CellAdapter(torch.nn.Linear(2, 3), output_size=1)
    with pytest.raises(TypeError, match=r"net=.*CellAdapter"):
        as_sequence_net(torch.nn.Linear(2, 3), output_size=1)
    assert type(as_sequence_net(torch.nn.GRU(2, 3), 1)).__name__ == "RNNAdapter"
    assert type(as_sequence_net(torch.nn.GRUCell(2, 3), 1)).__name__ == "CellAdapter"
    net = SequenceNet("gru", 2, 3, 1)
    assert as_sequence_net(net, 1) is net  # a protocol net is used as it is
    with pytest.raises(ValueError, match="net="):
        SequenceNet(torch.nn.GRU(2, 3), 2, 3, 1)
