"""FPTT's terminal-classification targets and window losses as released, checked window by window against values
worked out by hand for T = 23 steps and P = 4 parts, for the uniform and the adaptive soft targets.

The set-up makes every window's output a literal: the net replays its input (``hidden = gain * x``, readout =
identity, gain = 1 and SGD with lr = 0, so nothing moves), hence o_p = x[:, end of window p]. The numbers below
were derived by hand from the formulas in the comments (a calculator for the logarithms), not by running the
module.

Windows (floor division plus a remainder window): step = 23 // 4 = 5, so [0,5) [5,10) [10,15) [15,20) and the
remainder [20,23): P' = 5 windows, ending at steps 4, 9, 14, 19, 22; weights w_p = (p+1)/5 = .2 .4 .6 .8 1.
The release trains windows p >= P-1 = 3 on one-hot(y): windows 3 and 4.

Batch: C = 2 classes, labels y = (0, 0, 1); logits at the end of window p:
  example 0: (0, ln 3)  -> softmax (1/4, 3/4)   misclassified at every window
  example 1: (0, ln 9)  -> softmax (1/10, 9/10) misclassified at every window
  example 2: even p: (0, ln 3) -> (1/4, 3/4), correct; odd p: (ln 3, 0) -> (3/4, 1/4), misclassified
Logarithms: L4 = ln 4 = 1.3862944, L43 = ln 4/3 = 0.2876821, L10 = ln 10 = 2.3025851, L109 = ln 10/9 = 0.1053605.

Cross-entropy (mean over the batch):
  CE_even = (L4 + L10 + L43) / 3 = 3.9765616 / 3 = 1.3255205   (p = 0, 2, 4)
  CE_odd  = (L4 + L10 + L4) / 3  = 5.0751739 / 3 = 1.6917246   (p = 1, 3)
Window loss: l_p = w_p CE + (1 - w_p) mean_{b,c}[-q_{p,c} log softmax_c]; with a one-hot q the mean over the
C = 2 classes is CE / 2, so l_p = w_p CE + (1 - w_p) CE / 2.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from modules.fptt import FPTTSequenceModel
from modules.sequence_model import window_bounds

T, P = 23, 4
ENDS = (4, 9, 14, 19, 22)
LN3, LN9 = math.log(3.0), math.log(9.0)
Y = torch.tensor([0, 0, 1])

# one-hot windows p = 3 (w = .8) and p = 4 (w = 1):
#   l_3 = .8 CE_odd + .2 CE_odd / 2 = .9 * 1.6917246 = 1.5225521
#   l_4 = CE_even = 1.3255205
L3_ONE_HOT, L4_ONE_HOT = 1.5225521, 1.3255205
ONE_HOT = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]


class Playback(nn.Module):
    """Recurrent-net protocol with no recurrence: hidden = gain * x, readout = identity."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x, state=None):
        return self.gain * x, state

    def readout(self, hidden):
        return hidden


def _batch() -> torch.Tensor:
    x = torch.zeros(3, T, 2)
    for p, end in enumerate(ENDS):
        x[0, end] = torch.tensor([0.0, LN3])
        x[1, end] = torch.tensor([0.0, LN9])
        x[2, end] = torch.tensor([LN3, 0.0]) if p % 2 else torch.tensor([0.0, LN3])
    return x


def _run(n_batches: int, **kw) -> tuple[FPTTSequenceModel, list]:
    """Train on ``n_batches`` copies of the batch; return the model and each batch's (target, loss) per window."""
    model = FPTTSequenceModel(net=Playback(), task="classification", num_classes=2, input_shape=(T, 2), parts=P,
                              optimizer=lambda params: torch.optim.SGD(params, lr=0.0), gradient_clip_val=None,
                              **kw)
    records = []

    class Keep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            records.append([(None if q is None else q.clone(), float(loss)) for q, loss in pl_module.window_record])

    x = _batch().repeat(n_batches, 1, 1)
    data = DataLoader(TensorDataset(x, Y.repeat(n_batches)), batch_size=3, shuffle=False)
    pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0, callbacks=[Keep()]).fit(model, data)
    assert model.net.gain.item() == 1.0  # lr 0: every batch sees the same outputs
    return model, records


def _check(record, targets, losses):
    assert len(record) == len(targets) == len(losses) == 5
    for p, ((q, loss), q_hand, l_hand) in enumerate(zip(record, targets, losses)):
        assert torch.allclose(q, torch.tensor(q_hand), atol=1e-6), f"window {p}: target {q.tolist()}"
        assert loss == pytest.approx(l_hand, abs=1e-6), f"window {p}"


def test_windows_are_floor_division_plus_a_remainder_window():
    assert window_bounds(T, P) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]


def test_uniform_soft_targets_per_window_match_hand_values():
    # uniform q = (1/2, 1/2) for p = 0, 1, 2; per example mean_c[-q_c log s_c] = (-ln s_0 - ln s_1) / 4:
    #   (1/4, 3/4): (L4 + L43) / 4 = 0.4184941;  (1/10, 9/10): (L10 + L109) / 4 = 0.6019864
    #   S_u = (2 * 0.4184941 + 0.6019864) / 3 = 0.4796582   (example 2 has one of the two softmax pairs above)
    # l_0 = .2 CE_even + .8 S_u = 0.2651041 + 0.3837266 = 0.6488307
    # l_1 = .4 CE_odd  + .6 S_u = 0.6766898 + 0.2877949 = 0.9644848
    # l_2 = .6 CE_even + .4 S_u = 0.7953123 + 0.1918633 = 0.9871756
    _, records = _run(1, soft_targets="uniform")
    half = [[0.5, 0.5]] * 3
    _check(records[0], [half, half, half, ONE_HOT, ONE_HOT],
           [0.6488307, 0.9644848, 0.9871756, L3_ONE_HOT, L4_ONE_HOT])


def test_last_window_only_deviation_trains_window_p_minus_1_on_the_soft_target():
    # one_hot_windows="last" (the project's earlier behaviour): window 3 keeps the uniform target,
    # l_3 = .8 CE_odd + .2 S_u = 1.3533797 + 0.0959316 = 1.4493113
    _, records = _run(1, soft_targets="uniform", one_hot_windows="last")
    assert records[0][3][1] == pytest.approx(1.4493113, abs=1e-6)
    assert torch.allclose(records[0][3][0], torch.full((3, 2), 0.5))


def test_adaptive_table_per_window_matches_hand_values():
    # soft_target_epochs=0: the table is used from the first batch. Two batches with the same content.
    # Batch 1: the table starts at zeros, so q_p = 0 and l_p = w_p CE for p = 0, 1, 2:
    #   l_0 = .2 CE_even = 0.2651041, l_1 = .4 CE_odd = 0.6766898, l_2 = .6 CE_even = 0.7953123
    # Update after batch 1 (rows p < P-1 = 3), first misclassified example of each class:
    #   class 0, every p: example 0 -> (1/4, 3/4)   (example 1 is misclassified too, but comes second)
    #   class 1: p = 1 only (example 2 is wrong at odd p) -> (3/4, 1/4); rows p = 0, 2 stay (0, 0)
    # Batch 2, per example (1/2)(-q_0 ln s_0 - q_1 ln s_1):
    #   ex 0, q = s = (1/4, 3/4):           (L4 + 3 L43) / 8  = 0.2811676
    #   ex 1, q = (1/4, 3/4), s = (1/10, 9/10): (L10 + 3 L109) / 8 = 0.3273333
    #   ex 2: p = 1, q = s = (3/4, 1/4): 0.2811676; p = 0, 2: q = 0 -> 0
    #   S_0 = S_2 = (0.2811676 + 0.3273333) / 3 = 0.2028336;  S_1 = (2 * 0.2811676 + 0.3273333) / 3 = 0.2965562
    #   l_0 = .2 CE_even + .8 S_0 = 0.2651041 + 0.1622669 = 0.4273710
    #   l_1 = .4 CE_odd  + .6 S_1 = 0.6766898 + 0.1779337 = 0.8546235
    #   l_2 = .6 CE_even + .4 S_0 = 0.7953123 + 0.0811334 = 0.8764457
    model, records = _run(2, soft_targets="adaptive", soft_target_epochs=0)
    zero = [[0.0, 0.0]] * 3
    _check(records[0], [zero, zero, zero, ONE_HOT, ONE_HOT],
           [0.2651041, 0.6766898, 0.7953123, L3_ONE_HOT, L4_ONE_HOT])
    a, b = [0.25, 0.75], [0.75, 0.25]
    _check(records[1], [[a, a, [0.0, 0.0]], [a, a, b], [a, a, [0.0, 0.0]], ONE_HOT, ONE_HOT],
           [0.4273710, 0.8546235, 0.8764457, L3_ONE_HOT, L4_ONE_HOT])
    # the table itself: P rows, the last (p = P-1, one-hot) never filled
    expected = torch.tensor([[a, [0.0, 0.0]], [a, b], [a, [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(model.soft_table, expected, atol=1e-6)


def test_mean_table_deviation_differs_from_the_release():
    # soft_table_fill="mean": class 0 holds the mean of examples 0 and 1, ((1/4 + 1/10)/2, (3/4 + 9/10)/2)
    model, _ = _run(1, soft_targets="adaptive", soft_target_epochs=0, soft_table_fill="mean")
    assert torch.allclose(model.soft_table[0, 0], torch.tensor([0.175, 0.825]), atol=1e-6)


def test_adaptive_targets_start_in_the_twentieth_epoch_by_default():
    # the release: uniform while epoch < 20 with epochs counted from 1, i.e. Lightning epochs 0..18
    model = FPTTSequenceModel(cell="gru", hidden_size=2, task="classification", num_classes=2, input_shape=(8, 1),
                              parts=4, soft_targets="adaptive")
    assert model.hparams.soft_target_epochs == 19
    assert not model.adaptive_at(18) and model.adaptive_at(19)
    assert torch.count_nonzero(model.soft_table) == 0  # the released table starts at zeros
