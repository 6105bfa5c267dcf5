"""ResNet10 family of DiSK (Kag et al., "Scaffolding a Student to Instill Knowledge", ICLR 2023; docs/disk.md#settings).

A CIFAR-style ResNet with one BasicBlock per stage ([1, 1, 1, 1]) at four stage widths: stem conv3x3 (stride 1,
no max-pool, width = first stage width)-BN-ReLU, stages with strides 1/2/2/2, a 1x1 conv + BN projection (the
block's ``shortcut`` submodule) where the shape changes, global average pool, FC.

MACs per 32x32 input, 100 classes, ``all`` convention (torch flop counter / 2, projections included), as measured
by tests/nets/test_nets.py against DiSK's table:

=============  ==================  ==========  ==========
name           widths              measured    published
=============  ==================  ==========  ==========
resnet10_xxxs  4, 8, 8, 16         0.772M      0.8M
resnet10_xxs   8, 8, 16, 16        2.02M       2M
resnet10_xs    8, 16, 16, 32       2.86M       2.86M
resnet10_s     8, 16, 32, 64       4.16M       4M
resnet10_m     16, 32, 64, 128     16.2M       16M
resnet10_l     32, 64, 128, 256    63.8M       64M
resnet10       64, 128, 256, 512   253.5M      253M
=============  ==================  ==========  ==========
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_net
from .resnet_cifar import BasicBlock

RESNET10_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet10_xxxs": (4, 8, 8, 16),
    "resnet10_xxs": (8, 8, 16, 16),
    "resnet10_xs": (8, 16, 16, 32),
    "resnet10_s": (8, 16, 32, 64),
    "resnet10_m": (16, 32, 64, 128),
    "resnet10_l": (32, 64, 128, 256),
    "resnet10": (64, 128, 256, 512),
}


class ResNet10(nn.Module):
    """Four-stage CIFAR ResNet with projection shortcuts; ``blocks`` per stage default to DiSK's [1, 1, 1, 1]."""

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 100,
        in_channels: int = 3,
        blocks: Sequence[int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        widths, blocks = list(widths), list(blocks)
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(f"ResNet10: widths and blocks need 4 entries each, got {widths!r} and {blocks!r}")
        if not all(isinstance(v, int) and v > 0 for v in widths + blocks):
            raise ValueError(f"ResNet10: widths and blocks must be positive ints, got {widths!r} and {blocks!r}")
        self.widths = widths
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for s, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for b in range(count):
                stride = 2 if (s > 0 and b == 0) else 1
                stage.append(BasicBlock(channels, width, stride, kind="B"))
                channels = width
            self.add_module(f"layer{s + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(name: str, widths: tuple[int, int, int, int]) -> None:
    @register_net(name)
    def build(num_classes: int = 100, in_channels: int = 3, blocks: Sequence[int] = (1, 1, 1, 1)) -> ResNet10:
        return ResNet10(widths, num_classes, in_channels, blocks)

    build.__name__ = name
    build.__qualname__ = f"{__name__}.{name}"
    build.__doc__ = f"DiSK {name}: stage widths {widths}, one BasicBlock per stage."


for _name, _widths in RESNET10_WIDTHS.items():
    _register(_name, _widths)
