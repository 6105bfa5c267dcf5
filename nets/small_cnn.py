"""Small CNN for the quickstart on scikit-learn's 8x8 digits (project design, not from a paper).

conv3x3(32)-BN-ReLU, conv3x3(64)-BN-ReLU, 2x2 max-pool, global average pool, Linear(64 -> C). Works for any input
of at least 2x2 (8x8 digits: 8x8 -> 4x4 -> 1x1), any channel count.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_net


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU layers, one max-pool, adaptive average pool, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.classifier = nn.Linear(c2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_net("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (32, 64)) -> SmallCNN:
    """Quickstart CNN for 1x8x8 digits (any input size >= 2x2)."""
    return SmallCNN(num_classes, in_channels, tuple(widths))
