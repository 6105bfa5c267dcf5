"""Small heads on top of a classifier's features: the hybrid edge/cloud router, the DiSK guide, and a tap that
exposes any classifier's penultimate features.

* :class:`FeatureTap` records the input of a net's last ``nn.Linear`` (its pooled penultimate features) on every
  forward pass, so heads can read features from any net of ``nets.create_net`` (CIFAR ResNets, ResNet10,
  torchvision models) without changing it.
* :class:`HybridRouter` (Kag et al., "Efficient Edge Inference by Selective Query", ICLR 2023;
  docs/selective.md#hybrid-edge-and-cloud-router, the released ``Hybrid_Router``): inputs are the entropy of the edge softmax, the ``k x k`` matrix of
  pairwise differences of the edge's top-``k`` probabilities and an MLP (-> 128 -> 64) of the edge's features;
  head Linear(-> h1)-BN-ReLU-Linear(-> h2)-BN-ReLU-Linear(-> h1)-BN-ReLU-Linear(-> 1). Output: one logit per
  input, **positive = keep the input on the edge** (the code's "keep" polarity). The released widths are
  h1 = 1000, h2 = 64.
* :class:`DiskGuide` (Kag et al., "Scaffolding a Student to Instill Knowledge", ICLR 2023; docs/disk.md#loss-as-implemented):
  g(x) in [0, 1] from the teacher. **Project adaptation:** the released guide runs a conv trunk on the teacher's
  last feature map; here it reads the teacher's pooled penultimate features (any net, via ``FeatureTap``) and
  its logits: trunk Linear(-> width)-BN-SiLU-Linear(-> width)-BN-SiLU, head Linear(-> C)-BN-ReLU-Linear(-> 1)-
  Sigmoid (the released head). Used only during training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DiskGuide", "FeatureTap", "HybridRouter", "last_linear", "router_inputs"]


def last_linear(net: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``net`` in definition order (its classifier)."""
    found = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(net).__name__} has no nn.Linear classifier, so its features cannot be tapped")
    return found[-1]


class FeatureTap:
    """Records the input of ``net``'s last ``nn.Linear`` at each forward: ``tap.features`` is ``(B, F)``.

    Not an ``nn.Module`` (it owns no weights); ``dim`` is the feature width.
    """

    def __init__(self, net: nn.Module) -> None:
        self.layer = last_linear(net)
        self.dim = int(self.layer.in_features)
        self.features: Tensor | None = None
        self._handle = self.layer.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.features = args[0]

    def remove(self) -> None:
        self._handle.remove()


def router_inputs(logits: Tensor, topk: int = 10) -> tuple[Tensor, Tensor]:
    """The router's confidence statistics of edge ``logits``: entropy ``(B, 1)`` of the softmax and the flattened
    ``(B, k*k)`` pairwise differences ``p_(i) - p_(j)`` of the top-``k`` probabilities (k = min(topk, C))."""
    p = logits.float().softmax(-1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1, keepdim=True)
    k = min(int(topk), p.shape[-1])
    top = p.topk(k, dim=-1).values
    return entropy, (top[:, :, None] - top[:, None, :]).flatten(1)


class HybridRouter(nn.Module):
    """Router r(x) of the hybrid edge/cloud model: one logit per input, positive = keep on the edge."""

    def __init__(self, feature_dim: int, topk: int = 10, hidden: tuple[int, int] = (1000, 64),
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.topk = int(topk) if num_classes is None else min(int(topk), int(num_classes))
        h1, h2 = (int(v) for v in hidden)
        self.features = nn.Sequential(nn.Linear(feature_dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 64),
                                      nn.ReLU(inplace=True))
        d = 1 + self.topk * self.topk + 64
        self.head = nn.Sequential(
            nn.Linear(d, h1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True),
            nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.ReLU(inplace=True),
            nn.Linear(h2, h1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True),
            nn.Linear(h1, 1),
        )

    def forward(self, logits: Tensor, features: Tensor) -> Tensor:
        dtype = self.head[0].weight.dtype  # statistics in float32, then the router's dtype (e.g. bf16-true)
        entropy, diffs = router_inputs(logits, self.topk)
        feats = self.features(features.flatten(1).to(dtype))
        x = torch.cat([entropy.to(feats.dtype), diffs.to(feats.dtype), feats], dim=1)
        return self.head(x).squeeze(1)


class DiskGuide(nn.Module):
    """DiSK guide g(x) in [0, 1] from the teacher's pooled features and logits (see the module doc)."""

    def __init__(self, feature_dim: int, num_classes: int, width: int = 256) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(feature_dim + num_classes, width), nn.BatchNorm1d(width), nn.SiLU(inplace=True),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.SiLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Linear(width, num_classes), nn.BatchNorm1d(num_classes), nn.ReLU(inplace=True),
                                  nn.Linear(num_classes, 1), nn.Sigmoid())

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:
        x = torch.cat([features.flatten(1).float(), logits.float()], dim=1).to(self.trunk[0].weight.dtype)
        return self.head(self.trunk(x)).squeeze(1)
