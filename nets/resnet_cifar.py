"""CIFAR ResNets of depth 6n+2 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, sec. 4.2).

Stem conv3x3(16k)-BN-ReLU; three stages of n BasicBlocks at widths 16k/32k/64k and resolutions 32/16/8 (for a
32x32 input); global average pool; FC. k is ``width_multiplier``.

Shortcuts (``shortcut=``):

* ``"A"``: parameter-free identity; where the shape changes the input is subsampled with stride 2 and the new
  channels are zeros (He et al. option A). The baseline of Li et al., "Pruning Filters for Efficient ConvNets",
  ICLR 2017 (docs/pruning.md#architectures): ``resnet56`` is 1.25e8 MACs and 8.5e5 parameters under the li2017 convention.
* ``"B"``: 1x1 conv + BN projection where the shape changes, identity elsewhere (the projection is the block's
  ``shortcut`` submodule, which the li2017 counter leaves out).
* ``"none"``: no skip connection at all, the "no-short" nets of Li et al., "Visualizing the Loss Landscape of
  Neural Nets", NeurIPS 2018.

``wrn56_2/4/8`` are the WRN-56-k of the loss-landscape paper and of Li et al., "Training Quantized Nets: A
Deeper Understanding", NeurIPS 2017 (docs/quantized_training.md#published-numbers and docs/loss_landscape.md#grids-evaluation-and-training): a 6n+2 ResNet-56 widened k times (not Zagoruyko's
pre-activation WRN). Those papers' code uses projection shortcuts, so their default is ``shortcut="B"``; the
``resnetXX`` default is ``"A"``.

``block_widths`` gives the number of filters of the first conv of every block (length 3n) and rebuilds the
L1-norm-pruned ResNets of Li et al. 2017 (docs/pruning.md#pruned-configurations) from hyperparameters; second convs keep the stage
width because they feed the residual sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_net

Shortcut = Literal["A", "B", "none"]
_SHORTCUTS = ("A", "B", "none")

# Li et al. 2017 (docs/pruning.md#pruned-configurations): first-conv widths of the pruned ResNet-56 variants, 27 blocks.
RESNET56_A_BLOCK_WIDTHS: list[int] = [14] * 7 + [16, 14] + [32] + [28] * 8 + [64] + [57] * 7 + [64]
RESNET56_B_BLOCK_WIDTHS: list[int] = [6] * 7 + [16, 16] + [32] + [22] * 6 + [32, 22] + [64] + [57] * 7 + [64]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample with ``stride`` and append ``out_channels - in_channels`` zero channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """conv1(3x3, stride) -> bn1 -> relu -> conv2(3x3) -> bn2 -> (+ shortcut(x)) -> relu.

    ``mid_channels`` is the width of conv1 (defaults to ``out_channels``; smaller after filter pruning).
    ``shortcut`` is ``None`` when ``kind == "none"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kind: Shortcut = "A",
        mid_channels: int | None = None,
    ) -> None:
        super().__init__()
        mid = out_channels if mid_channels is None else mid_channels
        self.conv1 = nn.Conv2d(in_channels, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        same_shape = stride == 1 and in_channels == out_channels
        self.shortcut: nn.Module | None
        if kind == "none":
            self.shortcut = None
        elif same_shape:
            self.shortcut = nn.Identity()
        elif kind == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        elif kind == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            raise ValueError(f"shortcut must be one of {_SHORTCUTS}, got {kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """He et al. CIFAR ResNet of depth 6n+2; see the module docstring for the arguments."""

    def __init__(
        self,
        depth: int = 56,
        num_classes: int = 10,
        in_channels: int = 3,
        width_multiplier: int = 1,
        shortcut: Shortcut = "A",
        block_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet: depth must be 6n+2 with n >= 1, got {depth}")
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"CifarResNet: shortcut must be one of {_SHORTCUTS}, got {shortcut!r}")
        if not isinstance(width_multiplier, int) or width_multiplier < 1:
            raise ValueError(f"CifarResNet: width_multiplier must be a positive int, got {width_multiplier!r}")
        n = (depth - 2) // 6
        stage_widths = [16 * width_multiplier, 32 * width_multiplier, 64 * width_multiplier]
        if block_widths is None:
            mids = [w for w in stage_widths for _ in range(n)]
        else:
            mids = list(block_widths)
            if len(mids) != 3 * n:
                raise ValueError(
                    f"CifarResNet: block_widths needs one first-conv width per block, 3n = {3 * n} for depth "
                    f"{depth}, got {len(mids)}"
                )
            if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in mids):
                raise ValueError(f"CifarResNet: block_widths must be positive ints, got {mids!r}")
        self.depth, self.shortcut_kind = depth, shortcut
        self.block_widths = mids
        self.stage_widths = stage_widths

        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        channels = stage_widths[0]
        for s, width in enumerate(stage_widths):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(channels, width, stride, shortcut, mid_channels=mids[s * n + b]))
                channels = width
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def structure_kwargs(self) -> dict[str, list[int]] | None:
        """Constructor kwargs that rebuild the current widths (``{"block_widths": [...]}``), read from the layers,
        so they stay right after L1 filter pruning removed first-conv filters in place; ``None`` when the
        residual widths were changed too (``block_widths`` cannot express that)."""
        if self.conv1.out_channels != self.stage_widths[0]:
            return None
        widths = []
        for s, stage in enumerate((self.layer1, self.layer2, self.layer3)):
            for block in stage:
                if block.conv2.out_channels != self.stage_widths[s]:
                    return None
                widths.append(int(block.conv1.out_channels))
        return {"block_widths": widths}

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_net("resnet20")
def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "A",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 1,
) -> CifarResNet:
    """CIFAR ResNet-20 (He et al. 2016), n = 3, widths 16/32/64; option-A shortcuts by default."""
    return CifarResNet(20, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("resnet32")
def resnet32(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "A",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 1,
) -> CifarResNet:
    """CIFAR ResNet-32 (He et al. 2016), n = 5, widths 16/32/64; option-A shortcuts by default."""
    return CifarResNet(32, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("resnet44")
def resnet44(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "A",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 1,
) -> CifarResNet:
    """CIFAR ResNet-44 (He et al. 2016), n = 7, widths 16/32/64; option-A shortcuts by default."""
    return CifarResNet(44, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("resnet56")
def resnet56(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "A",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 1,
) -> CifarResNet:
    """CIFAR ResNet-56 (He et al. 2016), n = 9, widths 16/32/64; option-A shortcuts by default."""
    return CifarResNet(56, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("resnet110")
def resnet110(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "A",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 1,
) -> CifarResNet:
    """CIFAR ResNet-110 (He et al. 2016), n = 18, widths 16/32/64; option-A shortcuts by default."""
    return CifarResNet(110, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("wrn56_2")
def wrn56_2(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "B",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 2,
) -> CifarResNet:
    """WRN-56-2 of the loss-landscape / quantized-nets papers: ResNet-56 at widths 32/64/128, option B."""
    return CifarResNet(56, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("wrn56_4")
def wrn56_4(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "B",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 4,
) -> CifarResNet:
    """WRN-56-4 of the loss-landscape / quantized-nets papers: ResNet-56 at widths 64/128/256, option B."""
    return CifarResNet(56, num_classes, in_channels, width_multiplier, shortcut, block_widths)


@register_net("wrn56_8")
def wrn56_8(
    num_classes: int = 10,
    in_channels: int = 3,
    shortcut: Shortcut = "B",
    block_widths: Sequence[int] | None = None,
    width_multiplier: int = 8,
) -> CifarResNet:
    """WRN-56-8 of the loss-landscape / quantized-nets papers: ResNet-56 at widths 128/256/512, option B."""
    return CifarResNet(56, num_classes, in_channels, width_multiplier, shortcut, block_widths)
