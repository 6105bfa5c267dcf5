"""Convolution-kernel weight sharing (Bidart's thesis, part 1; docs/weight_sharing.md).

Three parameterisations, with ``r`` (or ``s``, ``t``) the sharing factor and ``tile_r`` the PyTorch ``.repeat``
tiling along channels (output channel ``j`` is channel ``j mod C/r``; **not** ``repeat_interleave``):

(a) **Output-filter sharing** in standard convs (:class:`SharedBasicBlock`, :func:`wsresnet18`): a conv learns only
    ``C_out/r`` filters and ``y = tile_r(BN_{C_out/r}(conv(x; W)))`` -- BatchNorm runs on the narrow tensor, before
    the tiling. Used in stages 2-4 of ResNet-18; the stem, stage 1 and the classifier are not shared. The 1x1
    projection shortcut is shared and tiled as well (``share_shortcut=True``, the author's ``downsample_repeat``):
    this is the bug fix of the author's "Open Research 3" post; without it the shortcut keeps full width (the
    retracted results).
(b) **Depthwise (spatial) sharing**, factor ``s`` (:class:`SharedDepthwiseConv2d`): only ``C/s`` depthwise kernels
    are learned; channel ``c`` uses kernel ``c mod C/s``.
(c) **Pointwise (channel) sharing**, factor ``t`` (:class:`SharedSeparableConv2d`): ``W_pw`` is
    ``C_out x C_in/t x 1 x 1`` tiled ``t`` times along the input, i.e.
    ``y_o = sum_k W_pw[o, k] * sum_{g<t} x_{k + g C_in/t}`` (input-channel groups sum-pooled, then a narrow 1x1 conv).

Networks (CIFAR stems unless stated; names registered for ``nets.create_net``):

* ``wsresnet18`` -- timm-style ResNet-18 with ``ws_factor`` r (a) and ``channel_factor`` (plain width reduction of
  stages 2-4, the narrow baseline); ``stem="imagenet"`` gives the 7x7/2 stem with max-pool. ``narrow_resnet18`` is
  ``wsresnet18`` with ``channel_factor=factor``.
* ``wsxception_cifar`` -- the author's Xception-CIFAR (width 512; blocks 4, 5, 8, 11, 12 shared with ``spatial_factor``
  (b) and ``channel_factor`` (c)); ``width_factor`` divides the width of the shared blocks (the narrow baseline).
  ``wsvsxception`` is the 3-block, width-256 variant.
* ``wsmobilenetv2`` -- kuangliu's CIFAR MobileNetV2 with depthwise sharing ``dw_factor`` (b) in every block and
  optional pointwise sharing ``pw_factor`` (c) on the projection 1x1 convs (project addition); ``width_factor``
  divides every width (project design of a narrow baseline; the author has none).

**Equivalence (docs/weight_sharing.md#equivalence-with-a-narrow-network, derived).** With the shortcut shared, every tensor in stages 2-4 of the
output-filter-shared ResNet is a tiling of a ``C/r``-wide tensor, and any layer reading a tiled input collapses
to a narrow layer with ``W_eff[:, k] = sum_g W[:, k + g C/r]``. So the shared ResNet-18 computes exactly the same
function class as the narrow ResNet-18 with ``channel_factor = r``; the two differ only in parametrisation (the
shared model stores more parameters, and costs at least as many MACs) and optimisation dynamics.
:func:`shared_to_narrow` converts a shared model into the narrow one (tests/nets/test_weight_sharing.py checks the
outputs match in eval mode).

Parameter counts (10 classes) equal the author's notebook values: ResNet-18 WS-dr r=2/4/8/16: 5,664,458 /
2,909,706 / 1,532,330 / 843,642; Xception-CIFAR 7,649,898 (see docs/weight_sharing.md#published-numbers for the full table).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nets.registry import register_net

__all__ = [
    "SharedBasicBlock", "SharedDepthwiseConv2d", "SharedSeparableConv2d", "WSMobileNetV2", "WSResNet", "WSXception",
    "WeightSharingError", "shared_to_narrow", "tile",
]


class WeightSharingError(ValueError):
    """A sharing factor that does not divide a layer's width, or an unknown option."""

    user_facing = True


def tile(x: torch.Tensor, r: int) -> torch.Tensor:
    """Tile a (B, C, H, W) tensor ``r`` times along channels: output channel j = input channel j mod C."""
    return x if r == 1 else x.repeat(1, r, 1, 1)


def _divide(width: int, factor: int, what: str) -> int:
    if not isinstance(factor, int) or factor < 1:
        raise WeightSharingError(f"{what}: the factor must be a positive integer, got {factor!r}")
    if width % factor:
        raise WeightSharingError(
            f"{what}: factor {factor} does not divide the width {width}; choose a factor that divides it "
            f"(a power of two up to 16 for the published nets)"
        )
    return width // factor


# --------------------------------------------------------------------------------------------------------------
# (a) output-filter sharing: ResNet-18
# --------------------------------------------------------------------------------------------------------------
class SharedBasicBlock(nn.Module):
    """ResNet basic block whose convs learn ``planes / r`` filters; BN on the narrow tensor, then tiling.

    ``in_tiled`` is the tiling factor of the block's input (1 when it is not tiled); it only matters for
    :func:`shared_to_narrow`. ``share_shortcut=False`` keeps a full-width projection shortcut (the retracted,
    buggy variant); it then no longer equals a narrow network.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, r: int = 1, share_shortcut: bool = True,
                 in_tiled: int = 1) -> None:
        super().__init__()
        narrow = _divide(planes, r, f"SharedBasicBlock({in_planes}->{planes})")
        self.r, self.share_shortcut, self.in_tiled = r, share_shortcut, in_tiled
        self.conv1 = nn.Conv2d(in_planes, narrow, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(narrow)
        self.conv2 = nn.Conv2d(planes, narrow, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(narrow)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            width = narrow if share_shortcut else planes
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = tile(F.relu(self.bn1(self.conv1(x))), self.r)
        out = tile(self.bn2(self.conv2(out)), self.r)
        if self.downsample is None:
            residual = x
        else:
            residual = self.downsample(x)
            if self.share_shortcut:
                residual = tile(residual, self.r)
        return F.relu(out + residual)


class WSResNet(nn.Module):
    """timm-style ResNet with basic blocks; stages 2-4 share output filters by ``ws_factor`` and are narrowed by
    ``channel_factor`` (widths 64, 128/c, 256/c, 512/c). ``stem="cifar"``: 3x3 conv, stride 1, no max-pool;
    ``"imagenet"``: 7x7 conv stride 2 and 3x3 max-pool."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3,
                 ws_factor: int = 1, channel_factor: int = 1, share_shortcut: bool = True,
                 stem: Literal["cifar", "imagenet"] = "cifar") -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise WeightSharingError(f"wsresnet: stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.ws_factor, self.channel_factor, self.share_shortcut, self.stem_type = (
            ws_factor, channel_factor, share_shortcut, stem)
        self.layers_cfg = tuple(layers)
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(64)
        widths = [64] + [_divide(w, channel_factor, f"wsresnet channel_factor (width {w})") for w in (128, 256, 512)]
        in_planes, tiled = 64, 1
        stages = []
        for i, (w, n) in enumerate(zip(widths, layers)):
            r = 1 if i == 0 else ws_factor
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(SharedBasicBlock(in_planes, w, stride, r, share_shortcut, in_tiled=tiled))
                in_planes = w
                # the block output is tiled when both branches are (always, with a shared or identity shortcut)
                tiled = r if (share_shortcut or blocks[-1].downsample is None and tiled == r) else 1
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_tiled = tiled
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _collapse_input(weight: torch.Tensor, r: int) -> torch.Tensor:
    """W_eff[:, k] = sum_g W[:, k + g C/r] for a layer reading an input tiled r times (``.repeat`` order)."""
    if r == 1:
        return weight.clone()
    out_ch, in_ch = weight.shape[:2]
    return weight.reshape(out_ch, r, in_ch // r, *weight.shape[2:]).sum(1)


@torch.no_grad()
def shared_to_narrow(model: WSResNet) -> WSResNet:
    """The narrow ResNet (``channel_factor = ws_factor``, no sharing) computing the same function as ``model``.

    Valid only for output-filter sharing with the shortcut shared (``share_shortcut=True``); BatchNorm running
    statistics are copied, so the outputs match in eval mode (and in train mode, as the BN sees the same tensors).
    """
    if not isinstance(model, WSResNet):
        raise WeightSharingError(f"shared_to_narrow expects a WSResNet, got {type(model).__name__}")
    if not model.share_shortcut and model.ws_factor > 1:
        raise WeightSharingError(
            "shared_to_narrow: the model was built with share_shortcut=False (the retracted variant); its full-width "
            "shortcut makes it a different function class, so it has no narrow equivalent"
        )
    r = model.ws_factor
    narrow = WSResNet(model.layers_cfg, model.fc.out_features, model.conv1.in_channels, ws_factor=1,
                      channel_factor=model.channel_factor * r, share_shortcut=True, stem=model.stem_type)
    narrow.conv1.weight.copy_(model.conv1.weight)
    narrow.bn1.load_state_dict(model.bn1.state_dict())
    for stage_s, stage_n in zip((model.layer1, model.layer2, model.layer3, model.layer4),
                                (narrow.layer1, narrow.layer2, narrow.layer3, narrow.layer4)):
        for bs, bn in zip(stage_s, stage_n):
            bn.conv1.weight.copy_(_collapse_input(bs.conv1.weight, bs.in_tiled))
            bn.conv2.weight.copy_(_collapse_input(bs.conv2.weight, bs.r))
            bn.bn1.load_state_dict(bs.bn1.state_dict())
            bn.bn2.load_state_dict(bs.bn2.state_dict())
            if bs.downsample is not None:
                bn.downsample[0].weight.copy_(_collapse_input(bs.downsample[0].weight, bs.in_tiled))
                bn.downsample[1].load_state_dict(bs.downsample[1].state_dict())
    narrow.fc.weight.copy_(_collapse_input(model.fc.weight, model.out_tiled))
    narrow.fc.bias.copy_(model.fc.bias)
    return narrow


# --------------------------------------------------------------------------------------------------------------
# (b), (c) depthwise and pointwise sharing: Xception, MobileNetV2
# --------------------------------------------------------------------------------------------------------------
class SharedDepthwiseConv2d(nn.Module):
    """Depthwise k x k conv over ``channels`` channels learning only ``channels / s`` kernels (channel c uses kernel
    c mod channels/s). Xavier-uniform init (the author's)."""

    def __init__(self, channels: int, s: int = 1, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.channels, self.s, self.stride, self.padding = channels, s, stride, padding
        self.weight = nn.Parameter(torch.empty(_divide(channels, s, f"depthwise sharing ({channels} channels)"), 1,
                                               kernel_size, kernel_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.repeat(self.s, 1, 1, 1), None, self.stride, self.padding, groups=self.channels)


class SharedPointwiseConv2d(nn.Module):
    """1x1 conv whose ``C_out x C_in/t`` weight is tiled ``t`` times along the input (scheme (c))."""

    def __init__(self, in_channels: int, out_channels: int, t: int = 1) -> None:
        super().__init__()
        self.t = t
        self.weight = nn.Parameter(torch.empty(out_channels, _divide(in_channels, t, f"pointwise sharing "
                                                                                   f"({in_channels} channels)"), 1, 1))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.repeat(1, self.t, 1, 1))


class SharedSeparableConv2d(nn.Module):
    """Depthwise 3x3 (``s``-shared) followed by pointwise 1x1 (``t``-shared); s = t = 1 is a plain separable conv."""

    def __init__(self, in_channels: int, out_channels: int, s: int = 1, t: int = 1) -> None:
        super().__init__()
        self.depthwise = SharedDepthwiseConv2d(in_channels, s)
        self.pointwise = SharedPointwiseConv2d(in_channels, out_channels, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Xception block: ``reps`` x (ReLU, separable conv, BN), max-pool 3/stride when strided, 1x1+BN projection
    skip when the width or resolution changes. ``grow_first=False`` widens in the last separable conv."""

    def __init__(self, in_f: int, out_f: int, reps: int, stride: int = 1, start_with_relu: bool = True,
                 grow_first: bool = True, s: int = 1, t: int = 1) -> None:
        super().__init__()
        self.skip: nn.Sequential | None = None
        if out_f != in_f or stride != 1:
            self.skip = nn.Sequential(nn.Conv2d(in_f, out_f, 1, stride, bias=False), nn.BatchNorm2d(out_f))
        widths = ([(in_f, out_f)] + [(out_f, out_f)] * (reps - 1) if grow_first
                  else [(in_f, in_f)] * (reps - 1) + [(in_f, out_f)])
        rep: list[nn.Module] = []
        for i, (a, b) in enumerate(widths):
            if i > 0 or start_with_relu:
                rep.append(nn.ReLU(inplace=i > 0))
            rep += [SharedSeparableConv2d(a, b, s, t), nn.BatchNorm2d(b)]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + (x if self.skip is None else self.skip(x))


class WSXception(nn.Module):
    """The author's Xception-CIFAR (``variant="cifar"``) or VSXception (``"vs"``) with depthwise sharing
    ``spatial_factor``, pointwise sharing ``channel_factor`` in the blocks at full width, and ``width_factor``
    dividing that width (512 or 256, and 1024 for the exit block of Xception-CIFAR)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, spatial_factor: int = 1, channel_factor: int = 1,
                 width_factor: int = 1, variant: Literal["cifar", "vs"] = "cifar") -> None:
        super().__init__()
        s, t, f = spatial_factor, channel_factor, width_factor
        if variant == "cifar":
            dim = _divide(512, f, "wsxception width_factor")
            exit_w = _divide(1024, f, "wsxception width_factor")
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
            blocks = [
                XceptionBlock(64, 128, 2, 1, start_with_relu=False),
                XceptionBlock(128, dim, 2, 2),
                XceptionBlock(dim, dim, 3, 1, s=s, t=t),  # block 4
                XceptionBlock(dim, dim, 3, 1, s=s, t=t),  # block 5
                XceptionBlock(dim, dim, 3, 2, s=s, t=t),  # block 8
                XceptionBlock(dim, dim, 3, 1, s=s, t=t),  # block 11
                XceptionBlock(dim, exit_w, 2, 2, grow_first=False, s=s, t=t),  # block 12
            ]
            head = [SharedSeparableConv2d(exit_w, 1536), nn.BatchNorm2d(1536), nn.ReLU(inplace=True),
                    SharedSeparableConv2d(1536, 512), nn.BatchNorm2d(512), nn.ReLU(inplace=True)]
            features = 512
        elif variant == "vs":
            dim = _divide(256, f, "wsvsxception width_factor")
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 128, 3, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))
            blocks = [XceptionBlock(128, dim, 3, 1, s=s, t=t), XceptionBlock(dim, dim, 3, 2, s=s, t=t),
                      XceptionBlock(dim, dim, 3, 2, s=s, t=t)]
            head, features = [], dim
        else:
            raise WeightSharingError(f"wsxception: variant must be 'cifar' or 'vs', got {variant!r}")
        self.blocks = nn.Sequential(*blocks, *head)
        self.fc = nn.Linear(features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _MBBlock(nn.Module):
    """Inverted residual (expand 1x1, depthwise 3x3 shared by ``s``, project 1x1 shared by ``t``), kuangliu's CIFAR
    version: residual only at stride 1 (1x1+BN projection when the width changes)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int, s: int, t: int) -> None:
        super().__init__()
        planes = expansion * in_planes
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = SharedDepthwiseConv2d(planes, s, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = SharedPointwiseConv2d(planes, out_planes, t) if t > 1 else nn.Conv2d(planes, out_planes, 1,
                                                                                           bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class WSMobileNetV2(nn.Module):
    """CIFAR MobileNetV2 (stem stride 1, second stage stride 1) with depthwise sharing ``dw_factor``, pointwise
    sharing ``pw_factor`` of the projection convs, and widths divided by ``width_factor``."""

    cfg = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dw_factor: int = 1, pw_factor: int = 1,
                 width_factor: int = 1) -> None:
        super().__init__()
        w = lambda c: _divide(c, width_factor, "wsmobilenetv2 width_factor")  # noqa: E731
        self.conv1 = nn.Conv2d(in_channels, w(32), 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w(32))
        layers, in_planes = [], w(32)
        for expansion, out_planes, n, stride in self.cfg:
            for i in range(n):
                layers.append(_MBBlock(in_planes, w(out_planes), expansion, stride if i == 0 else 1, dw_factor,
                                       pw_factor))
                in_planes = w(out_planes)
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(in_planes, w(1280), 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w(1280))
        self.linear = nn.Linear(w(1280), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------
@register_net("wsresnet18")
def wsresnet18(num_classes: int = 10, in_channels: int = 3, ws_factor: int = 1, channel_factor: int = 1,
               share_shortcut: bool = True, stem: str = "cifar") -> WSResNet:
    """ResNet-18 with output-filter sharing ``ws_factor`` in stages 2-4 (and/or width ÷ ``channel_factor``)."""
    return WSResNet((2, 2, 2, 2), num_classes, in_channels, ws_factor, channel_factor, share_shortcut, stem)


@register_net("narrow_resnet18")
def narrow_resnet18(num_classes: int = 10, in_channels: int = 3, factor: int = 1, stem: str = "cifar") -> WSResNet:
    """The narrow baseline: ResNet-18 with stages 2-4 of width 128/f, 256/f, 512/f, no sharing."""
    return WSResNet((2, 2, 2, 2), num_classes, in_channels, 1, factor, True, stem)


@register_net("wsxception_cifar")
def wsxception_cifar(num_classes: int = 10, in_channels: int = 3, spatial_factor: int = 1, channel_factor: int = 1,
                     width_factor: int = 1) -> WSXception:
    """Xception-CIFAR with depthwise (``spatial_factor``) / pointwise (``channel_factor``) sharing or narrowing."""
    return WSXception(num_classes, in_channels, spatial_factor, channel_factor, width_factor, "cifar")


@register_net("wsvsxception")
def wsvsxception(num_classes: int = 10, in_channels: int = 3, spatial_factor: int = 1, channel_factor: int = 1,
                 width_factor: int = 1) -> WSXception:
    """The author's 3-block, width-256 VSXception with the same options."""
    return WSXception(num_classes, in_channels, spatial_factor, channel_factor, width_factor, "vs")


@register_net("wsmobilenetv2")
def wsmobilenetv2(num_classes: int = 10, in_channels: int = 3, dw_factor: int = 1, pw_factor: int = 1,
                  width_factor: int = 1) -> WSMobileNetV2:
    """CIFAR MobileNetV2 with depthwise sharing ``dw_factor`` (the author's ``ws_sp_factor``)."""
    return WSMobileNetV2(num_classes, in_channels, dw_factor, pw_factor, width_factor)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

