"""Cutout (DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017).

Zero one ``length x length`` square of an image tensor, centred on a uniformly drawn pixel and clipped at the
border (so squares near an edge are smaller), on every channel. Applied after ``ToTensor`` and before
``Normalize``, as in the OSP release's CIFAR pipeline (``--cutout_length 16``), so the square is black.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Cutout"]


class Cutout:
    """Zero a random ``length x length`` square (clipped at the border) of a ``(C, H, W)`` tensor.

    Args:
        length: side of the square in pixels (> 0).
        generator: optional ``torch.Generator`` for the centre (default: torch's global RNG, which the
            DataLoader seeds per worker).

    Example:
        >>> img = Cutout(16)(torch.ones(3, 32, 32))
        >>> int((img[0] == 0).sum()) <= 256
        True
    """

    def __init__(self, length: int, generator: torch.Generator | None = None) -> None:
        if int(length) != length or length <= 0:
            raise ValueError(f"Cutout length must be a positive integer number of pixels, got {length!r}.")
        self.length = int(length)
        self.generator = generator

    def __call__(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, (1,), generator=self.generator))
        cx = int(torch.randint(w, (1,), generator=self.generator))
        half = self.length // 2
        out = img.clone()
        out[..., max(cy - half, 0):min(cy + half, h), max(cx - half, 0):min(cx + half, w)] = 0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"
