"""Teacher and student nets of DiSK's published pairs (Kag et al., "Scaffolding a Student to Instill Knowledge",
ICLR 2023; docs/disk.md#published-numbers) that the registry lacked. CIFAR versions follow the CRD/RepDistiller layouts the
paper's table uses (32x32 inputs); the ImageNet ViTs are torchvision's ``VisionTransformer`` at DeiT/ViT-Tiny size.

==================  ==========================================================================  ==============
name                layout                                                                      published MACs
==================  ==========================================================================  ==============
resnet18_cifar      conv3x3(64) stem (stride 1, no max-pool), BasicBlocks [2,2,2,2] at           555M
                    64/128/256/512, 1x1-conv projections (``nets.resnet10.ResNet10`` with
                    blocks [2,2,2,2])
wrn40_2             pre-activation Wide ResNet 40-2 (Zagoruyko & Komodakis 2016): conv3x3(16),    327M
                    3 groups of 6 blocks at 32/64/128, BN-ReLU-conv, 1x1 projections
shufflenet_v2_cifar torchvision ShuffleNetV2 1.0x (repeats 4/8/4, 116/232/464, conv5 1024) with     45M
                    a stride-1 conv3x3(24) stem and no max-pool
mobilenet_v2_x2     torchvision MobileNetV2, width 1.0, t = 6, with CRD's CIFAR setting (the        22M
                    second stage at stride 1; stem stride 2), no dropout (DiSK's "MobileNetV2x2")
vit_tiny_16         torchvision VisionTransformer: patch 16, 12 layers, 3 heads, width 192, MLP     1.07G
                    768 (ViT-Tiny / DeiT-Tiny without a distillation token)
==================  ==========================================================================  ==============

DiSK's ResNet32x4 teacher is ``resnet32`` with ``width_multiplier: 4, shortcut: B`` (stages 64/128/256; the CRD
version has a 32-channel stem). The measured MACs are in the recipes' headers.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_net
from .resnet10 import ResNet10


@register_net("resnet18_cifar")
def resnet18_cifar(num_classes: int = 100, in_channels: int = 3) -> ResNet10:
    """CIFAR ResNet-18 (stride-1 stem, no max-pool, projection shortcuts)."""
    return ResNet10((64, 128, 256, 512), num_classes, in_channels, blocks=(2, 2, 2, 2))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu(self.bn1(x))
        y = self.conv2(self.relu(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """Pre-activation Wide ResNet-``depth``-``widen`` for 32x32 inputs (no dropout)."""

    def __init__(self, depth: int = 40, widen: int = 2, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet: depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks, cin = [], widths[0]
        for g, w in enumerate(widths[1:]):
            for b in range(n):
                blocks.append(_PreActBlock(cin, w, 2 if (g > 0 and b == 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.conv1(x))
        return self.fc(self.pool(nn.functional.relu(self.bn(x))).flatten(1))


@register_net("wrn40_2")
def wrn40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """Pre-activation WRN-40-2 (DiSK/CRD teacher)."""
    return WideResNet(40, 2, num_classes, in_channels)


@register_net("shufflenet_v2_cifar")
def shufflenet_v2_cifar(num_classes: int = 100, in_channels: int = 3) -> nn.Module:
    """torchvision ShuffleNetV2 1.0x with a stride-1 3x3 stem and no max-pool (CIFAR)."""
    from torchvision.models import ShuffleNetV2

    net = ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024], num_classes=num_classes)
    net.conv1 = nn.Sequential(nn.Conv2d(in_channels, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24),
                              nn.ReLU(inplace=True))
    net.maxpool = nn.Identity()
    return net


@register_net("mobilenet_v2_x2")
def mobilenet_v2_x2(num_classes: int = 100, in_channels: int = 3) -> nn.Module:
    """torchvision MobileNetV2 (width 1.0) with CRD's CIFAR block setting: DiSK's MobileNetV2x2."""
    from torchvision.models import MobileNetV2

    setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
               [6, 320, 1, 1]]
    net = MobileNetV2(num_classes=num_classes, inverted_residual_setting=setting, dropout=0.0)
    if in_channels != 3:
        first = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, first.stride, 1, bias=False)
    return net


@register_net("vit_tiny_16")
def vit_tiny_16(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    """ViT-Tiny/16 (= DeiT-Tiny without distillation token) as a torchvision ``VisionTransformer``."""
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=image_size, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192,
                              mlp_dim=768, num_classes=num_classes)
    if in_channels != 3:  # patch embedding for other channel counts (e.g. grayscale glyphs)
        model.conv_proj = nn.Conv2d(in_channels, 192, kernel_size=16, stride=16)
    return model
