"""Recurrent cells of Kag et al. (iRNN, ICLR 2020; TARNN, CVPR 2021), LSTM/GRU baselines, and a batch-first
sequence net that runs any of them over ``(B, T, F)`` inputs (or ``(B, T)`` token ids) with a carried state.

**iRNN** (docs/irnn.md#update-rule; the paper's exact signs and initialisation are unverified there). At time t,
starting from ``h^(0)`` (``init_state="previous"``: h_{t-1}, the default, as in the closest authors' code
``iRNN_DualODECell`` of ``anilkagak2/TARNN`` where g1 starts from its previous value; or ``"zero"``), K explicit
Euler steps with learnable step sizes eta::

    h^(i) = h^(i-1) + eta[i, t] * ( phi(U (h^(i-1) + h_{t-1}) + W x_t + b) - alpha * (h^(i-1) + h_{t-1}) )

and ``h_t = h^(K)``. At a fixed point ``alpha (h_t + h_{t-1}) = phi(U (h_t + h_{t-1}) + W x_t + b)``, so
``h_t + h_{t-1}`` depends on x_t alone and ``dh_t/dh_{t-1} = -I``. eta is indexed by (step, time)
(``eta_mode="step_time"``, the default as in the authors' code, needs ``seq_len``), by step only (``"step"``) or one scalar (``"scalar"``).
``gated=True`` adds the authors'-code gate ``gamma = sigmoid(U_g h_{t-1} + W_g x_t + b_g)`` (b_g = -3) and
returns ``(1 - gamma) h_{t-1} + gamma h^(K)``.

**TARNN** (docs/tarnn.md#update-as-released, the update as released in ``anilkagak2/TARNN`` ``pytorch/tarnn.py``, written
with column vectors). With s = h_{t-1} and x_{t-1} (x_0 := x_1)::

    gamma = sigmoid(U_g s + W_g x_t + b_g)                # time gate (learned inverse time constant)
    c     = U_2 s + W_1 x_t + W_2 x_{t-1} + b_1
    e     = B_1 x_t + B_2 s
    z     = s;  for k = 1..K with a = A[k, t]:
        variant "b":      z = (1 - a) z + a (phi(U_1 z + c) - z - s + e)
        variant "plain":  z = z + a * gamma * (phi(U_1 z + c) - z - s + e)
    h_t = (1 - gamma) s + gamma z   (variant "b");   h_t = z   (variant "plain")

Defaults as released: K = 1, phi = ReLU, A = 0.01, weights ~ N(0, weight_std^2) with weight_std = 0.1 (whether
0.1 is the std of the released initialiser is unverified), b_1 = 0, b_g = -3 ("b") or 0 ("plain"). The step table
A is (K, T) (``step_mode="time"``, the paper-faithful default; ties the model to one length T) or (K,)
(``"shared"``). Fixed from the release (docs/tarnn.md#differences-from-the-released-code): the zero state is created here when none is given, and
the time index comes from the caller (``t0``), so it never leaks between sequences.

All weight matrices are stored as ``(out, in)`` parameters and applied with ``F.linear`` so tests can set them by
hand. Cells raise ``ValueError`` when asked for a time index beyond a time-indexed table.

**Bringing your own recurrent net.** ``SequenceModel`` and FPTT train any ``nn.Module`` that follows the
*recurrent-net protocol* (described in ``modules.sequence_model``): ``forward(x, state=None[, t0=0])`` returning
``(hidden, state)`` batch-first, ``readout(hidden)`` and optionally ``detach_state(state)``. ``SequenceNet`` follows
it; two adapters make other modules follow it:

* ``RNNAdapter`` wraps a whole-sequence ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``batch_first`` either way) and adds
  a linear readout;
* ``CellAdapter`` wraps a per-step cell -- ``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell`` or your own -- called as
  ``cell(x_t, state) -> state`` (see its docstring) and loops it over time, with a linear readout.

``as_sequence_net(module, output_size)`` returns a protocol net unchanged and wraps ``nn.RNNBase`` /
``nn.RNNCellBase`` modules in the right adapter (the modules call it on their ``net`` argument).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda v: v}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


def _normal(shape: tuple[int, ...], std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class _StepTable(nn.Module):
    """Learnable Euler step sizes indexed by (step, time), by step, or one scalar."""

    def __init__(self, num_steps: int, mode: str, seq_len: int | None, init: float, what: str) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"{what}: num_steps (K, Euler steps per input) must be >= 1, got {num_steps}")
        if mode in ("step_time", "time"):
            if seq_len is None or seq_len < 1:
                raise ValueError(f"{what}: a time-indexed step table needs seq_len >= 1 (the sequence length T), "
                                 f"got {seq_len}; set seq_len or use the shared/step mode")
            shape: tuple[int, ...] = (num_steps, int(seq_len))
        elif mode in ("step", "shared"):
            shape = (num_steps, 1)
        elif mode == "scalar":
            shape = (1, 1)
        else:
            raise ValueError(f"{what}: unknown step mode {mode!r}")
        self.mode = mode
        self.num_steps = num_steps
        self.values = nn.Parameter(torch.full(shape, float(init)))

    def get(self, k: int, t: int) -> torch.Tensor:
        rows, cols = self.values.shape
        if cols > 1 and t >= cols:
            raise ValueError(f"time index {t} is beyond the step table's length {cols} (seq_len); the time-indexed "
                             f"table ties the model to sequences of at most {cols} steps")
        return self.values[min(k, rows - 1), min(t, cols - 1)]


class IRNNCell(nn.Module):
    """Incremental RNN cell (Kag, Zhang & Saligrama, ICLR 2020); equation in the module docstring.

    Args:
        input_size, hidden_size: D and d.
        num_steps: K, Euler steps per input.
        alpha: damping alpha of the increment (fixed; ~1 in the paper).
        eta_init: initial step size (small, 0.01 as in the authors' TARNN-repo iRNN cell).
        eta_mode: ``"step_time"`` (K x T, needs ``seq_len``), ``"step"`` (K) or ``"scalar"``.
        seq_len: T for ``eta_mode="step_time"``.
        init_state: ``"previous"`` (h^(0) = h_{t-1}) or ``"zero"``.
        activation: phi, ``relu`` (default), ``tanh`` or ``identity``.
        weight_std: std of the normal initialisation of U, W (b = 0).
        gated: add the authors'-code gate blending h_{t-1} and h^(K); gate bias initialised to ``gate_bias``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_steps: int = 1, alpha: float = 1.0,
                 eta_init: float = 0.01, eta_mode: Literal["step_time", "step", "scalar"] = "step_time",
                 seq_len: int | None = None, init_state: Literal["previous", "zero"] = "previous",
                 activation: str = "relu", weight_std: float = 0.1, gated: bool = False,
                 gate_bias: float = -3.0) -> None:
        super().__init__()
        if init_state not in ("previous", "zero"):
            raise ValueError(f"IRNNCell: init_state must be 'previous' or 'zero', got {init_state!r}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.alpha = float(alpha)
        self.init_state = init_state
        self.phi = _activation(activation)
        self.W = _normal((hidden_size, input_size), weight_std)
        self.U = _normal((hidden_size, hidden_size), weight_std)
        self.b = nn.Parameter(torch.zeros(hidden_size))
        self.eta = _StepTable(num_steps, eta_mode, seq_len, eta_init, "IRNNCell")
        self.gated = bool(gated)
        if self.gated:
            self.W_g = _normal((hidden_size, input_size), weight_std)
            self.U_g = _normal((hidden_size, hidden_size), weight_std)
            self.b_g = nn.Parameter(torch.full((hidden_size,), float(gate_bias)))

    def forward(self, x: torch.Tensor, h_prev: torch.Tensor, t: int = 0) -> torch.Tensor:
        drive = F.linear(x, self.W, self.b)
        h = h_prev if self.init_state == "previous" else torch.zeros_like(h_prev)
        for k in range(self.eta.num_steps):
            s = h + h_prev
            h = h + self.eta.get(k, t) * (self.phi(F.linear(s, self.U) + drive) - self.alpha * s)
        if self.gated:
            gamma = torch.sigmoid(F.linear(h_prev, self.U_g) + F.linear(x, self.W_g, self.b_g))
            h = (1 - gamma) * h_prev + gamma * h
        return h


class TARNNCell(nn.Module):
    """Time-adaptive RNN cell (Kag & Saligrama, CVPR 2021) as released; equation in the module docstring.

    Args:
        input_size, hidden_size: D and d.
        num_steps: K Euler steps per input (1 as released in PyTorch; the TF ``TARNNCell`` uses 2).
        variant: ``"b"`` (default, gate after the K steps, b_g = -3) or ``"plain"`` (gate inside, b_g = 0).
        step_mode: ``"time"`` (A is K x T, needs ``seq_len``) or ``"shared"`` (A is K).
        seq_len: T for ``step_mode="time"``.
        step_init: initial value of A (0.01).
        activation: phi (ReLU).
        weight_std: std of the normal initialisation of every weight matrix.
        gate_bias: b_g; default -3 for ``"b"`` and 0 for ``"plain"``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_steps: int = 1, variant: Literal["b", "plain"] = "b",
                 step_mode: Literal["time", "shared"] = "time", seq_len: int | None = None, step_init: float = 0.01,
                 activation: str = "relu", weight_std: float = 0.1, gate_bias: float | None = None) -> None:
        super().__init__()
        if variant not in ("b", "plain"):
            raise ValueError(f"TARNNCell: variant must be 'b' or 'plain', got {variant!r}")
        if step_mode not in ("time", "shared"):
            raise ValueError(f"TARNNCell: step_mode must be 'time' or 'shared', got {step_mode!r}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.variant = variant
        self.phi = _activation(activation)
        d, D = hidden_size, input_size
        for name in ("W_1", "W_2", "B_1", "W_g"):
            setattr(self, name, _normal((d, D), weight_std))
        for name in ("U_1", "U_2", "B_2", "U_g"):
            setattr(self, name, _normal((d, d), weight_std))
        self.b_1 = nn.Parameter(torch.zeros(d))
        if gate_bias is None:
            gate_bias = -3.0 if variant == "b" else 0.0
        self.b_g = nn.Parameter(torch.full((d,), float(gate_bias)))
        self.A = _StepTable(num_steps, step_mode, seq_len, step_init, "TARNNCell")

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor, s: torch.Tensor, t: int = 0) -> torch.Tensor:
        gamma = torch.sigmoid(F.linear(s, self.U_g) + F.linear(x, self.W_g, self.b_g))
        c = F.linear(s, self.U_2) + F.linear(x, self.W_1, self.b_1) + F.linear(x_prev, self.W_2)
        e = F.linear(x, self.B_1) + F.linear(s, self.B_2)
        z = s
        for k in range(self.A.num_steps):
            a = self.A.get(k, t)
            drive = self.phi(F.linear(z, self.U_1) + c) - z - s + e
            z = (1 - a) * z + a * drive if self.variant == "b" else z + a * gamma * drive
        return (1 - gamma) * s + gamma * z if self.variant == "b" else z


CELLS = ("irnn", "tarnn", "lstm", "gru")


class SequenceNet(nn.Module):
    """Batch-first recurrent net: optional embedding, ``num_layers`` recurrent layers, a readout head.

    ``forward(x, state=None, t0=0)`` runs the layers over ``x`` of shape ``(B, T, F)`` (floats) or ``(B, T)``
    (token ids, needs ``vocab_size``) starting from ``state`` (``None``: zeros; the state returned by an earlier
    call continues the sequence, ``t0`` being the time index of ``x[:, 0]`` for time-indexed step tables) and
    returns ``(hidden, state)`` with ``hidden`` the last layer's outputs ``(B, T, H)``. ``readout(hidden)`` maps
    hidden states to ``output_size`` outputs (dropout, optional ``Linear(H, head_hidden)``, ``Linear(., out)``;
    tied to the embedding when ``tie_weights``). ``detach_state(state)`` cuts the graph at a window boundary.

    The LSTM and GRU use ``nn.LSTM`` / ``nn.GRU`` (batch_first); iRNN and TARNN loop over time in Python.
    ``cell_kwargs`` go to the cell constructor (e.g. ``num_steps``, ``eta_mode``, ``variant``); ``seq_len`` is
    passed to iRNN/TARNN for their time-indexed step tables.
    """

    def __init__(self, cell: Literal["irnn", "tarnn", "lstm", "gru"], input_size: int, hidden_size: int,
                 output_size: int, num_layers: int = 1, seq_len: int | None = None,
                 cell_kwargs: dict[str, Any] | None = None, vocab_size: int | None = None,
                 embedding_dim: int | None = None, head_hidden: int | None = None, dropout: float = 0.0,
                 tie_weights: bool = False) -> None:
        super().__init__()
        if isinstance(cell, nn.Module):
            raise ValueError(f"SequenceNet: cell takes the name of a built-in cell, one of {CELLS}, got an "
                             f"{type(cell).__name__} module; to train your own module pass it as net=... to "
                             f"SequenceModel or FPTTSequenceModel (nn.LSTM/nn.GRU and cells are wrapped for you)")
        if cell not in CELLS:
            raise ValueError(f"SequenceNet: cell must be one of {CELLS}, got {cell!r}")
        if num_layers < 1 or hidden_size < 1:
            raise ValueError(f"SequenceNet: num_layers and hidden_size must be >= 1, got {num_layers}, {hidden_size}")
        self.cell_type, self.hidden_size, self.num_layers = cell, int(hidden_size), int(num_layers)
        self.embedding = None
        if vocab_size is not None:
            embedding_dim = int(embedding_dim or hidden_size)
            self.embedding = nn.Embedding(vocab_size, embedding_dim)
            input_size = embedding_dim
        kwargs = dict(cell_kwargs or {})
        if cell in ("lstm", "gru"):
            rnn = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = rnn(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0, **kwargs)
        else:
            if seq_len is not None:
                kwargs.setdefault("seq_len", seq_len)
            make = IRNNCell if cell == "irnn" else TARNNCell
            self.cells = nn.ModuleList(
                make(input_size if i == 0 else hidden_size, hidden_size, **kwargs) for i in range(num_layers)
            )
        self.dropout = nn.Dropout(dropout)
        head_in = hidden_size
        self.head_hidden = nn.Linear(hidden_size, head_hidden) if head_hidden else None
        if head_hidden:
            head_in = head_hidden
        self.head = nn.Linear(head_in, output_size)
        if tie_weights:
            if self.embedding is None or self.embedding.embedding_dim != head_in or vocab_size != output_size:
                raise ValueError("SequenceNet: tie_weights needs token input with embedding_dim equal to the "
                                 "readout width and vocab_size == output_size")
            self.head.weight = self.embedding.weight

    # ---- state handling
    def initial_state(self, batch: int, ref: torch.Tensor) -> Any:
        zeros = ref.new_zeros(self.num_layers, batch, self.hidden_size)
        if self.cell_type == "lstm":
            return (zeros, zeros.clone())
        if self.cell_type == "gru":
            return zeros
        if self.cell_type == "irnn":
            return tuple(zeros.unbind(0))
        return tuple(zeros.unbind(0)) + (None,) * self.num_layers  # TARNN: h per layer, then x_prev per layer

    @staticmethod
    def detach_state(state: Any) -> Any:
        return detach_state(state)

    # ---- forward
    def forward(self, x: torch.Tensor, state: Any = None, t0: int = 0) -> tuple[torch.Tensor, Any]:
        if self.embedding is not None:
            if x.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"SequenceNet with an embedding expects (B, T) token ids, got dtype {x.dtype}")
            x = self.embedding(x)
        if x.dim() != 3:
            raise ValueError(f"SequenceNet expects (B, T, F) inputs, got shape {tuple(x.shape)}")
        if self.cell_type in ("lstm", "gru"):
            return self.rnn(x, state)
        batch, steps = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(batch, x)
        L = self.num_layers
        hs = list(state[:L])
        xprev = list(state[L:]) if self.cell_type == "tarnn" else []
        inp = x
        for layer, cell in enumerate(self.cells):
            h = hs[layer]
            outs = []
            if self.cell_type == "irnn":
                for i in range(steps):
                    h = cell(inp[:, i], h, t0 + i)
                    outs.append(h)
            else:
                prev = xprev[layer] if xprev[layer] is not None else inp[:, 0]  # x_0 := x_1
                for i in range(steps):
                    h = cell(inp[:, i], prev, h, t0 + i)
                    prev = inp[:, i]
                    outs.append(h)
                xprev[layer] = prev
            hs[layer] = h
            inp = torch.stack(outs, dim=1)
            if layer < L - 1:
                inp = self.dropout(inp)
        return inp, tuple(hs) + tuple(xprev)

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.dropout(hidden)
        if self.head_hidden is not None:
            out = self.head_hidden(out)
        return self.head(out)


# ---------------------------------------------------------------------------------------------------- protocol
def detach_state(state: Any) -> Any:
    """Detach every tensor of a recurrent state made of tensors, tuples, lists, dicts and ``None``."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple):
        return tuple(detach_state(s) for s in state)
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


def _accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def follows_protocol(module: nn.Module) -> bool:
    """A recurrent-net protocol module: callable as ``module(x, state)`` with a ``readout`` method."""
    return isinstance(module, nn.Module) and callable(getattr(module, "readout", None))


class _Readout(nn.Module):
    """Dropout, optional ``Linear(width, head_hidden)``, then ``Linear(., output_size)``."""

    def __init__(self, width: int, output_size: int, head_hidden: int | None, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.head_hidden = nn.Linear(width, head_hidden) if head_hidden else None
        self.head = nn.Linear(head_hidden or width, output_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.dropout(hidden)
        if self.head_hidden is not None:
            out = self.head_hidden(out)
        return self.head(out)


class RNNAdapter(nn.Module):
    """Makes an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` follow the recurrent-net protocol.

    ``forward(x, state=None, t0=0)`` takes batch-first ``(B, T, F)`` input whatever the wrapped module's
    ``batch_first`` (it transposes for a time-first module) and returns ``(hidden (B, T, H), state)``, the state
    being the module's own ``h`` (or ``(h, c)``); ``t0`` is accepted and ignored. ``readout`` maps ``(..., H)`` to
    ``output_size`` outputs through dropout, an optional ``Linear(H, head_hidden)`` and ``Linear(., output_size)``.

    Args:
        rnn: the recurrent module (unidirectional: windowed training carries the state forward in time).
        output_size: number of outputs (classes, regression targets or vocabulary size).
        head_hidden: width of an optional hidden layer of the readout.
        dropout: dropout before the readout.
    """

    def __init__(self, rnn: nn.RNNBase, output_size: int, head_hidden: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(rnn, nn.RNNBase):
            raise TypeError(f"RNNAdapter: rnn must be an nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}; wrap a "
                            f"per-step cell with CellAdapter instead")
        if rnn.bidirectional:
            raise ValueError("RNNAdapter: rnn is bidirectional; windowed training (truncation, FPTT) carries the "
                             "state forward in time only, so build it with bidirectional=False")
        self.rnn = rnn
        width = getattr(rnn, "proj_size", 0) or rnn.hidden_size
        self.hidden_size = int(width)
        self.out = _Readout(width, int(output_size), head_hidden, dropout)

    def forward(self, x: torch.Tensor, state: Any = None, t0: int = 0) -> tuple[torch.Tensor, Any]:
        if x.dim() != 3:
            raise ValueError(f"RNNAdapter expects (B, T, F) float inputs, got shape {tuple(x.shape)}; for token ids "
                             f"put an embedding in your own net")
        if self.rnn.batch_first:
            return self.rnn(x, state)
        hidden, state = self.rnn(x.transpose(0, 1), state)
        return hidden.transpose(0, 1), state

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(hidden)

    detach_state = staticmethod(detach_state)


class CellAdapter(nn.Module):
    """Makes a per-step recurrent cell follow the recurrent-net protocol by looping it over time.

    The cell is called once per step as ``cell(x_t, state)`` with ``x_t`` of shape ``(B, F)`` and must return the
    new state: a tensor ``h_t`` of shape ``(B, H)`` (like ``nn.GRUCell``) or a tuple whose first item is ``h_t``
    (like ``nn.LSTMCell``'s ``(h, c)``). On the first step of a sequence ``state`` is ``None`` unless
    ``init_state`` is given; torch's cells then start from zeros, and your own cell must do the same (or pass
    ``init_state``). If the cell's ``forward`` takes a keyword ``t``, it receives the time index of the step
    (``t0 + i``), for time-indexed parameters.

    ``forward(x, state=None, t0=0)`` returns ``(hidden (B, T, H), state)``; ``readout`` is dropout, an optional
    ``Linear(H, head_hidden)`` and ``Linear(., output_size)``.

    Args:
        cell: the per-step module.
        output_size: number of outputs (classes, regression targets or vocabulary size).
        hidden_size: H, the width of ``h_t``; read from ``cell.hidden_size`` when not given.
        head_hidden: width of an optional hidden layer of the readout.
        dropout: dropout before the readout.
        init_state: optional callable ``init_state(batch_size, x)`` returning the state for a fresh sequence.
    """

    def __init__(self, cell: nn.Module, output_size: int, hidden_size: int | None = None,
                 head_hidden: int | None = None, dropout: float = 0.0, init_state: Any = None) -> None:
        super().__init__()
        if not isinstance(cell, nn.Module):
            raise TypeError(f"CellAdapter: cell must be an nn.Module, got {type(cell).__name__}")
        hidden_size = hidden_size if hidden_size is not None else getattr(cell, "hidden_size", None)
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"CellAdapter: cannot tell the width of {type(cell).__name__}'s hidden state (it has no "
                             f"integer attribute hidden_size); pass hidden_size=H to CellAdapter")
        self.cell = cell
        self.hidden_size = int(hidden_size)
        self.init_state = init_state
        self._takes_t = _accepts(cell.forward, "t")
        self.out = _Readout(self.hidden_size, int(output_size), head_hidden, dropout)

    def forward(self, x: torch.Tensor, state: Any = None, t0: int = 0) -> tuple[torch.Tensor, Any]:
        if x.dim() != 3:
            raise ValueError(f"CellAdapter expects (B, T, F) float inputs, got shape {tuple(x.shape)}; for token ids "
                             f"put an embedding in your own net")
        if state is None and self.init_state is not None:
            state = self.init_state(x.shape[0], x)
        outs = []
        for i in range(x.shape[1]):
            state = self.cell(x[:, i], state, t=t0 + i) if self._takes_t else self.cell(x[:, i], state)
            h = state if isinstance(state, torch.Tensor) else state[0] if isinstance(state, (tuple, list)) else None
            if not isinstance(h, torch.Tensor) or h.dim() != 2:
                raise ValueError(f"CellAdapter: {type(self.cell).__name__}(x_t, state) must return h_t of shape "
                                 f"(B, H) or a tuple (h_t, ...); got {type(state).__name__}")
            outs.append(h)
        return torch.stack(outs, dim=1), state

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(hidden)

    detach_state = staticmethod(detach_state)


def as_sequence_net(module: nn.Module, output_size: int, argument: str = "net") -> nn.Module:
    """``module`` if it follows the recurrent-net protocol; an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` wrapped in
    ``RNNAdapter``; an ``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell`` wrapped in ``CellAdapter`` (both with a
    ``Linear(H, output_size)`` readout). Anything else is a ``TypeError`` naming ``argument``."""
    if follows_protocol(module):
        return module
    if isinstance(module, nn.RNNBase):
        return RNNAdapter(module, output_size)
    if isinstance(module, nn.RNNCellBase):
        return CellAdapter(module, output_size)
    raise TypeError(
        f"{argument}={type(module).__name__}(...) is not a recurrent net this module can train: it needs a "
        f"readout(hidden) method and forward(x, state=None) returning (hidden, state) for batch-first (B, T, F) "
        f"input. Pass an nn.LSTM/nn.GRU/nn.RNN or a torch cell as {argument} (wrapped automatically), wrap your "
        f"own per-step cell as {argument}=nets.rnn_cells.CellAdapter(your_cell, output_size=...), or add readout "
        f"to your net")
