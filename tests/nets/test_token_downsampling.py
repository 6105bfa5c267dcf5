"""Learned token downsampling: the first token is always kept, top-k picks the highest scores in order, pooling is
the softmax-weighted window mean, the scorer receives gradients, padding is never preferred."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nets.token_downsampling import (LearnedPoolDownsample, TokenDownsample, TopKTokenDownsample,
                                     downsampled_length)


def _score_by_feature0(op: nn.Module) -> nn.Module:
    """Hand-set scorer: s_i = h_i[0] (no LayerNorm), so the expected choice can be computed by hand."""
    op.scorer.norm = nn.Identity()
    with torch.no_grad():
        op.scorer.proj.weight.zero_()
        op.scorer.proj.weight[0, 0] = 1.0
        op.scorer.proj.bias.zero_()
    return op


def test_downsampled_length():
    assert downsampled_length(64, 0.5, "topk", 1) == 1 + 32
    assert downsampled_length(64, 0.25, "topk", 1) == 1 + 16
    assert downsampled_length(64, 0.5, "pool", 1) == 1 + 32  # ceil(63 / 2)
    assert downsampled_length(10, 0.25, "pool", 2) == 2 + 2  # ceil(8 / 4)
    assert downsampled_length(5, 1.0, "topk") == 5 and downsampled_length(1, 0.5, "topk") == 1
    with pytest.raises(ValueError, match="rate"):
        downsampled_length(8, 0.0)
    with pytest.raises(ValueError, match="kind"):
        downsampled_length(8, 0.5, "stride")


@pytest.mark.parametrize("cls", [TopKTokenDownsample, LearnedPoolDownsample])
@pytest.mark.parametrize("rate", [0.5, 0.25, 0.1])
def test_first_token_always_kept(cls, rate):
    torch.manual_seed(0)
    op = _score_by_feature0(cls(8, keep_first=1))
    h = torch.randn(3, 12, 8)
    h[:, 0, 0] = -100.0  # the [CLS] token has by far the lowest score
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[2, 7:] = 0
    out, out_mask, index = op(h, mask, rate)
    assert torch.equal(out[:, 0], h[:, 0])  # unchanged, in place
    assert (index[:, 0] == 0).all() and (out_mask[:, 0] == 1).all()
    assert out.shape[1] == downsampled_length(12, rate, cls.kind, 1) < 12


def test_keep_first_prefix():
    op = _score_by_feature0(TopKTokenDownsample(4, keep_first=3))
    h = torch.randn(2, 10, 4)
    h[:, :3, 0] = -50.0
    out, _, index = op(h, torch.ones(2, 10, dtype=torch.long), 0.3)
    assert torch.equal(index[:, :3], torch.tensor([[0, 1, 2]] * 2))
    assert torch.equal(out[:, :3], h[:, :3])
    with pytest.raises(ValueError, match="keep_first"):
        TopKTokenDownsample(4, keep_first=0)


def test_topk_selects_highest_scores_in_original_order_skipping_padding():
    op = _score_by_feature0(TopKTokenDownsample(3))
    scores = torch.tensor([[0.0, 5.0, 1.0, 9.0, 2.0, 8.0, 7.0], [0.0, 1.0, 2.0, 3.0, 4.0, 50.0, 60.0]])
    h = torch.zeros(2, 7, 3)
    h[..., 0] = scores
    h[..., 1] = torch.arange(7.0)  # payload: the position
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0  # the two highest scores of row 1 are padding
    out, out_mask, index = op(h, mask, 0.5)  # 1 + ceil(0.5 * 6) = 4 tokens
    assert index.tolist() == [[0, 3, 5, 6], [0, 2, 3, 4]]
    assert torch.equal(out, h.gather(1, index.unsqueeze(-1).expand(-1, -1, 3)))  # values exactly the inputs
    assert out_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert torch.equal(out[..., 1], index.float())


def test_pool_is_softmax_weighted_window_mean():
    op = _score_by_feature0(LearnedPoolDownsample(2))
    h = torch.tensor([[[9.0, 9.0], [0.0, 1.0], [1.0, 3.0], [2.0, 5.0], [0.5, 7.0], [0.0, 100.0]]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    out, out_mask, index = op(h, mask, 0.5)  # windows {1,2}, {3,4}, {5 (padding)}
    w1 = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    w2 = torch.softmax(torch.tensor([2.0, 0.5]), 0)
    assert torch.allclose(out[0, 1], w1[0] * h[0, 1] + w1[1] * h[0, 2])
    assert torch.allclose(out[0, 2], w2[0] * h[0, 3] + w2[1] * h[0, 4])
    assert torch.equal(out[0, 3], torch.zeros(2))  # a window of padding only is padding
    assert out_mask.tolist() == [[1, 1, 1, 0]] and index.tolist() == [[0, 1, 3, 5]]
    assert torch.equal(out[0, 0], h[0, 0])


@pytest.mark.parametrize("kind", ["topk", "pool"])
def test_token_scorer_receives_gradients(kind):
    torch.manual_seed(0)
    slot = TokenDownsample(8, kinds=(kind,))
    h = torch.randn(2, 9, 8, requires_grad=True)
    out, mask, _ = slot(h, torch.ones(2, 9, dtype=torch.long), 0.5, kind)
    target = torch.randn_like(out)
    ((out - target) ** 2 * mask.unsqueeze(-1)).sum().backward()
    scorer = slot.ops[kind].scorer
    for p in (scorer.proj.weight, scorer.proj.bias, scorer.norm.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0, kind
    assert h.grad.abs().sum() > 0


def test_topk_gate_gradient_is_the_straight_through_formula():
    """dL/ds_i = (dL/dh'_i . h_i) * (1 - sigmoid(s_i)) for every selected token, 0 for dropped ones and [CLS]."""
    op = _score_by_feature0(TopKTokenDownsample(2))
    h = torch.tensor([[[0.0, 1.0], [3.0, 2.0], [1.0, -1.0], [2.0, 4.0]]])
    s = h[..., 0].clone().requires_grad_(True)
    h_in = torch.cat([s.unsqueeze(-1), h[..., 1:]], dim=-1)  # the score is the first feature itself
    out, _, index = op(h_in, torch.ones(1, 4, dtype=torch.long), 0.6)  # 1 + ceil(1.8): keeps 0, 1, 3
    assert index.tolist() == [[0, 1, 3]]
    g = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])  # dL/dh' (only the second feature)
    (out * g).sum().backward()
    sig = torch.sigmoid(h[0, :, 0])
    expected = torch.zeros(4)  # the [CLS] token is kept whatever its score: no gradient to its score
    for i in (1, 3):
        expected[i] = h[0, i, 1] * (1 - sig[i])
    assert torch.allclose(s.grad[0], expected, atol=1e-6)


def test_slot_rejects_unknown_kind():
    slot = TokenDownsample(4, kinds=("pool",))
    with pytest.raises(ValueError, match="topk"):
        slot(torch.zeros(1, 4, 4), torch.ones(1, 4), 0.5, "topk")
    with pytest.raises(ValueError, match="kinds"):
        TokenDownsample(4, kinds=("mean",))
