"""nets.global_layer.add_drop_path: timm's linear drop-path rule (rate * i / n on residual blocks only) on the
MobileNet-based SI and Global nets; the weights and the eval-mode function are unchanged."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import StochasticDepth

from nets.global_layer import add_drop_path, global_mobilenet_v2
from nets.sicnn import si_mobilenet_v3_large


def _probs(model):
    return [m.p for m in model.modules() if isinstance(m, StochasticDepth)]


def test_linear_rule_on_residual_blocks_only():
    torch.manual_seed(0)
    model = si_mobilenet_v3_large(num_classes=10, drop_path_rate=0.2)
    n = 15  # MobileNetV3-Large has 15 blocks between the stem and the head conv
    expected = [0.2 * i / n for i in (2, 4, 5, 7, 8, 9, 11, 13, 14)]  # the residual ones, block 0 gets 0
    assert _probs(model) == pytest.approx(expected)


def test_global_layers_pass_the_rate_to_their_core_and_eval_is_unchanged():
    torch.manual_seed(0)
    plain = global_mobilenet_v2(num_classes=10).eval()
    dropped = global_mobilenet_v2(num_classes=10, drop_path_rate=0.2).eval()
    dropped.load_state_dict(plain.state_dict())  # drop path adds no weights
    assert len(_probs(dropped)) == 5  # the five Global layers' residual cores
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(plain(x), dropped(x))
    x = torch.randn(8, 3, 32, 32)  # in training some samples skip some residual branches
    torch.manual_seed(1)
    assert not torch.allclose(dropped.train()(x), plain.train()(x))


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        add_drop_path(global_mobilenet_v2(num_classes=10), 1.0, "global_mobilenet_v2")
