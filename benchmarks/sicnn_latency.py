"""Measured CPU latency against MACs: spatially interpolated (SI) inverted-residual blocks (project design,
``nets/sicnn.py``) and the plain inverted residuals they replace, side by side, then whole networks (issue 7,
item 6). Method and columns as in ``benchmarks/global_latency.py`` (1 torch thread, interleaved rounds, median);
no GPU machine was lent to this task, so only CPU latency is measured.

Usage::

    python -m benchmarks.sicnn_latency --out results/sicnn_latency.json   # also writes .md
"""

from __future__ import annotations

from typing import Any

from benchmarks.global_latency import Pair, run


def sicnn_pairs(quick: bool = False) -> list[Pair]:
    from torch import nn

    from nets import create_net
    from nets.sicnn import InvertedResidual, to_si

    def block(c: int, k: int, t: float) -> InvertedResidual:
        return InvertedResidual(c, c, t, k, 1, act=nn.Hardswish)

    pairs = []
    # stride-1 blocks of MobileNetV3-Large's stages at their 224-input resolutions
    for c, k, t, res in ((24, 3, 3, 56), (40, 5, 3, 28), (80, 3, 2.3, 14), (160, 5, 6, 7)):
        pairs.append(Pair(f"IR block {c}@{res} (k{k}, t{t})", lambda c=c, k=k, t=t: block(c, k, t),
                          lambda c=c, k=k, t=t: to_si(block(c, k, t), anchor_stride=2), (c, res, res), 32,
                          "inverted residual", "SI block s=2"))
    pairs.append(Pair("IR block 24@56, anchor stride 4", lambda: block(24, 3, 3),
                      lambda: to_si(block(24, 3, 3), anchor_stride=4), (24, 56, 56), 32, "inverted residual",
                      "SI block s=4"))
    pairs.append(Pair("irnet vs si_irnet (glyphs, 34 classes)", lambda: create_net("irnet", 34, in_channels=1),
                      lambda: create_net("si_irnet", 34, in_channels=1), (1, 32, 32), 128, "irnet", "si_irnet"))
    if not quick:
        for base, si in (("mobilenet_v3_large", "si_mobilenet_v3_large"), ("efficientnet_b0", "si_efficientnet_b0")):
            pairs.append(Pair(f"{base} vs {si} (ImageNet)", lambda b=base: create_net(f"torchvision.{b}", 1000),
                              lambda s=si: create_net(s, 1000), (3, 224, 224), 8, base, si))
    return pairs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(argv, "benchmarks.sicnn_latency", "SI-CNN blocks: CPU latency vs MACs", "results/sicnn_latency.json",
               sicnn_pairs)


if __name__ == "__main__":
    main()
