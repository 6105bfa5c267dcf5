"""CIFAR VGG networks with BatchNorm.

* ``vgg16``: Zagoruyko's CIFAR VGG-16 ("92.45% on CIFAR-10 in Torch", 2015) as used by Li et al., "Pruning
  Filters for Efficient ConvNets", ICLR 2017 (docs/pruning.md#architectures): 13 3x3 convs each followed by BN+ReLU, five
  2x2 max-pools (32x32 -> 1x1), head Linear(512->512)-BN-ReLU-Linear(512->C), no dropout. ``cfg`` overrides the
  widths so pruned variants (VGG-16-A, docs/pruning.md#pruned-configurations) can be rebuilt from hyperparameters.
* ``vgg9``: the VGG-9 of Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018 and "Training
  Quantized Nets: A Deeper Understanding", NeurIPS 2017 (docs/quantized_training.md#published-numbers): 7 convs with BN
  (64,64,M,128,128,M,256,256,256,M; 32x32 -> 4x4), FC(256*4*4 -> 256)-BN-ReLU, FC(256 -> C).
* ``vgg_bc``: the CIFAR-10 net of Courbariaux et al., "BinaryConnect", NeurIPS 2015:
  2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-C, with BN after every conv and hidden FC and ReLU. The paper's
  output is an L2-SVM, i.e. a linear layer trained with a squared hinge loss; here it is a plain linear layer
  and the loss is the recipe's choice.

Convs have no bias (BN follows each of them). The flattened feature size is
``last_width * (input_size // 2**num_pools)**2``, so the nets expect ``input_size`` x ``input_size`` inputs
(32 by default).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .registry import register_net

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Li et al. 2017, VGG-16-pruned-A: conv_1 and conv_8..conv_13 at 50 %.
VGG16_A_CFG: list[int | str] = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256, "M"]
VGG9_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
VGG_BC_CFG: list[int | str] = [128, 128, "M", 256, 256, "M", 512, 512, "M"]


class CifarVGG(nn.Module):
    """Plain VGG: ``features`` (conv3x3-BN-ReLU blocks and 2x2 max-pools) then ``classifier``
    (hidden Linear-BN1d-ReLU layers and a final Linear).

    Args:
        cfg: conv widths and ``"M"`` (2x2 max-pool), in order.
        num_classes: output logits.
        in_channels: input image channels.
        hidden: width(s) of the hidden linear layers (each followed by BN1d and ReLU); ``()`` for none.
        input_size: spatial size of the (square) input, used to size the first linear layer.
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        hidden: int | Sequence[int] = 512,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        cfg = list(cfg)
        if not any(v != "M" for v in cfg):
            raise ValueError(f"CifarVGG: cfg needs at least one conv width, got {cfg!r}")
        layers: list[nn.Module] = []
        channels, size = in_channels, input_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
                layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                channels = v
            else:
                raise ValueError(f"CifarVGG: cfg entries must be positive ints or 'M', got {v!r}")
        if size < 1:
            raise ValueError(f"CifarVGG: input_size {input_size} is too small for {cfg.count('M')} pools")
        self.features = nn.Sequential(*layers)
        self.cfg = cfg
        self.input_size = input_size

        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        self.hidden_widths = widths
        head: list[nn.Module] = [nn.Flatten(1)]
        features = channels * size * size
        for w in widths:
            head += [nn.Linear(features, w), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            features = w
        head.append(nn.Linear(features, num_classes))
        self.classifier = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def structure_kwargs(self) -> dict[str, list[int | str]] | None:
        """Constructor kwargs that rebuild the current conv widths (``{"cfg": [...]}``), read from the layers,
        so they stay right after L1 filter pruning removed filters in place; ``None`` when a hidden linear
        layer changed width (``cfg`` cannot express that)."""
        hidden = [m.out_features for m in self.classifier if isinstance(m, nn.Linear)][:-1]
        if hidden != list(self.hidden_widths):
            return None
        cfg: list[int | str] = []
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                cfg.append(int(m.out_channels))
            elif isinstance(m, nn.MaxPool2d):
                cfg.append("M")
        return {"cfg": cfg}

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_net("vgg16")
def vgg16(
    num_classes: int = 10,
    in_channels: int = 3,
    cfg: Sequence[int | str] | None = None,
    hidden: int = 512,
    input_size: int = 32,
) -> CifarVGG:
    """CIFAR VGG-16 (Li et al. 2017 / Zagoruyko); ``cfg`` e.g. ``VGG16_A_CFG`` rebuilds a pruned VGG-16."""
    return CifarVGG(VGG16_CFG if cfg is None else cfg, num_classes, in_channels, hidden=hidden, input_size=input_size)


@register_net("vgg9")
def vgg9(
    num_classes: int = 10,
    in_channels: int = 3,
    cfg: Sequence[int | str] | None = None,
    hidden: int = 256,
    input_size: int = 32,
) -> CifarVGG:
    """VGG-9 of the loss-landscape / quantized-nets papers: 7 convs + FC(256*4*4->256)-BN + FC(->C)."""
    return CifarVGG(VGG9_CFG if cfg is None else cfg, num_classes, in_channels, hidden=hidden, input_size=input_size)


@register_net("vgg_bc")
def vgg_bc(
    num_classes: int = 10,
    in_channels: int = 3,
    cfg: Sequence[int | str] | None = None,
    hidden: Sequence[int] = (1024, 1024),
    input_size: int = 32,
) -> CifarVGG:
    """BinaryConnect's CIFAR net (Courbariaux et al. 2015): 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-C."""
    return CifarVGG(VGG_BC_CFG if cfg is None else cfg, num_classes, in_channels, hidden=hidden, input_size=input_size)
