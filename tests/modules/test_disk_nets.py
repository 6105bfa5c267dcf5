"""nets/disk_nets.py: DiSK's published teacher/student nets have the published MACs (docs/disk.md#published-numbers, within 3%)
and expose a last nn.Linear for the guide's feature tap."""

from __future__ import annotations

import pytest
import torch

from callbacks.efficiency_report import count_macs
from nets import create_net
from nets.router import FeatureTap

CASES = [  # name, kwargs, input size, classes, published MACs
    ("resnet18_cifar", {}, 32, 100, 555e6),
    ("wrn40_2", {}, 32, 100, 327e6),
    ("shufflenet_v2_cifar", {}, 32, 100, 45e6),
    ("mobilenet_v2_x2", {}, 32, 100, 22e6),
    ("resnet32", {"width_multiplier": 4, "shortcut": "B"}, 32, 100, 1083e6),
    ("vit_tiny_16", {}, 224, 1000, 1.07e9),
]


@pytest.mark.parametrize(("name", "kwargs", "size", "classes", "macs"), CASES, ids=[c[0] for c in CASES])
def test_published_macs_and_feature_tap(name, kwargs, size, classes, macs):
    net = create_net(name, num_classes=classes, **kwargs).eval()
    x = torch.zeros(1, 3, size, size)
    assert count_macs(net, x, "all") == pytest.approx(macs, rel=0.03)
    tap = FeatureTap(net)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, classes) and tap.features.shape == (1, tap.dim)
