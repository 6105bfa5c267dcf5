"""Spatially interpolated inverted-residual (SI) blocks and SI-MobileNetV3 / SI-EfficientNet-B0.

**Project design, not the authors'.** The SI-CNN chapter of Kag's thesis (A. Kag, G. Wadhwa, V. Saligrama,
P. Jain, "Spatially Interpolated Inverted Residual Block", under review 2023) has no public text, equations,
tables or code (docs/sicnn.md). What is known (docs/sicnn.md#what-is-public): the block's output interpolates between features
computed by the full inverted-residual block at a low-resolution sampling of the input ("anchor" pixels) and
cheaper features computed at full resolution; interpolated MobileNetV3 and EfficientNet save up to ~40% of the
ImageNet compute at equal accuracy. Everything below -- anchor pattern, cheap path, interpolation, placement --
is this project's design from that description (docs/sicnn.md#project-design), documented so it can be checked and ablated.

Block (:class:`SIBlock`), for an inverted-residual branch ``F`` (expand 1x1, depthwise kxk with the block's
stride, optional SE, project 1x1) with input ``x`` of size HxW and block stride ``t`` (output ``Ho x Wo`` with
``Ho = ceil(H / t)``), anchor stride ``s``:

1. **Anchors.** ``x_s = x[:, :, ::s, ::s]`` -- the pixels whose coordinates are multiples of ``s`` -- go through
   the full branch: ``a = F(x_s)``, of size ``ceil(Ho / s) x ceil(Wo / s)``. Its conv MACs are exactly those of
   ``F`` at ``1/s^2`` of the pixels (when ``s*t`` divides H and W; otherwise the ceil of it).
2. **Cheap path** (``cheap=``) at the output resolution: ``"dw_pw"`` (default) depthwise kxk (stride t)-BN-act
   then 1x1 ``C_in -> C_out``-BN; ``"pw"`` 1x1 (stride t)-BN only; ``"dw"`` depthwise kxk-BN only (needs
   ``C_in == C_out``). Per output pixel ``"dw_pw"`` costs ``C_in k^2 + C_in C_out`` MACs against
   ``C_in E + E k^2 + E C_out`` for the branch (E = expanded width, typically 6 C_in).
3. **Interpolation.** ``Up_s(a)``: bilinear with the anchors at their own pixels (anchor ``(i, j)`` sits at output
   pixel ``(s i, s j)``; a pixel ``r`` rows below an anchor gets ``(1 - r/s)`` of it and ``r/s`` of the next
   one; beyond the last anchor row/column the last anchor is held constant -- replicate padding). Fixed, not
   learned.
4. **Combination.** ``y = Up_s(a) + (1 - M) * c`` with ``M`` the anchor mask (1 at anchor pixels): at anchor
   pixels the output is exactly the branch's output on the sampled grid, elsewhere the interpolated anchor
   features plus the cheap local correction (``mask_anchors=False``: ``y = Up_s(a) + c`` everywhere).
5. **Residual** as in the inverted residual it replaces: ``+ x`` when ``t == 1`` and ``C_in == C_out``, after the
   optional stochastic depth of the original block.

Handled inputs (bad input, issue 7): block stride must be 1 or 2; ``anchor_stride`` an int >= 1 (``1``: every
pixel is an anchor, the block is exactly the plain branch and no cheap path is built); odd or small spatial sizes
work (anchors ``ceil(H / s)``, the interpolation replicates the last anchor; a map smaller than ``s`` has one
anchor row/column and becomes the anchor value plus the cheap path); the kernel must be odd; ``cheap="dw"``
needs ``C_in == C_out``; the input's channel count is checked in ``forward``.

Counting: the anchor branch and the cheap path are convs, counted by ``count_macs`` in both conventions. The
interpolation and the mask are element-wise (about 4 and 1 multiply-adds per output element); torch's flop
counter does not see them; :meth:`SIBlock.elementwise_macs` gives them.

Networks (registered):

* ``si_mobilenet_v3_large``, ``si_efficientnet_b0`` (and ``si_mobilenet_v2``): torchvision's definitions with
  every inverted-residual block chosen by ``si_blocks`` wrapped as an SI block: ``"stride1"`` (default: the
  stride-1 blocks with an expansion layer, i.e. the repeats inside each stage), ``"all"`` (also the stride-2
  stage openers) or a list of ``features`` indices.
* ``irnet`` / ``si_irnet``: a small MobileNetV2-style net for 32x32 inputs (CPU studies on glyphs), plain and SI
  at the same architecture; ``width_mult`` scales it to a MAC budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .global_layer import add_drop_path, replace_first_conv
from .registry import register_net

Cheap = Literal["dw_pw", "pw", "dw"]
_CHEAP = ("dw_pw", "pw", "dw")


def _int(name: str, value: object, low: int, who: str = "SIBlock") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{who}: {name} must be an int >= {low}, got {value!r}")
    return value


def _make_act(act: Callable[..., nn.Module]) -> nn.Module:
    try:
        return act(inplace=True)
    except TypeError:
        return act()


def anchor_upsample(a: Tensor, s: int, height: int, width: int) -> Tensor:
    """Bilinear interpolation of the anchor grid ``a`` to ``height x width``, anchor ``(i, j)`` at pixel
    ``(s i, s j)`` (exact there), the last anchor held beyond the last anchor row/column."""
    if s == 1:
        return a[..., :height, :width]
    h, w = a.shape[-2:]
    ext = F.pad(a, (0, 1, 0, 1), mode="replicate")
    up = F.interpolate(ext, size=(s * h + 1, s * w + 1), mode="bilinear", align_corners=True)
    return up[..., :height, :width]


def anchor_mask(height: int, width: int, s: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """``(1, 1, height, width)`` mask, 1 at the anchor pixels (both coordinates multiples of ``s``)."""
    rows = (torch.arange(height, device=device) % s == 0).to(dtype)
    cols = (torch.arange(width, device=device) % s == 0).to(dtype)
    return (rows[:, None] * cols[None, :])[None, None]


class SIBlock(nn.Module):
    """Spatially interpolated inverted-residual block around ``branch`` (project design; module docstring).

    Args:
        branch: the inverted residual's residual branch (no skip), ``C_in -> C_out`` with the block's stride.
        in_channels, out_channels: ``C_in``, ``C_out`` of the branch.
        stride: the block's stride (1 or 2; the branch's depthwise stride).
        kernel_size: kernel of the cheap path's depthwise conv (odd; default: the branch's).
        anchor_stride: ``s``; anchors are the pixels with both coordinates multiples of ``s``.
        cheap: ``"dw_pw"`` | ``"pw"`` | ``"dw"`` (see the module docstring).
        residual: add the input (default: ``stride == 1 and in_channels == out_channels``).
        act: activation of the cheap path's depthwise conv.
        mask_anchors: exact branch output at anchor pixels (``y = Up(a) + (1 - M) c``) or ``Up(a) + c``.
        drop_path: optional stochastic-depth module applied before the residual sum.
    """

    def __init__(
        self,
        branch: nn.Module,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        anchor_stride: int = 2,
        cheap: Cheap = "dw_pw",
        residual: bool | None = None,
        act: Callable[..., nn.Module] = nn.ReLU,
        mask_anchors: bool = True,
        drop_path: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _int("in_channels", in_channels, 1)
        self.out_channels = _int("out_channels", out_channels, 1)
        self.anchor_stride = _int("anchor_stride", anchor_stride, 1)
        self.kernel_size = _int("kernel_size", kernel_size, 1)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"SIBlock: stride must be 1 or 2, got {stride!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"SIBlock: kernel_size must be odd (same-size padding), got {kernel_size}")
        if cheap not in _CHEAP:
            raise ValueError(f"SIBlock: cheap must be one of {_CHEAP}, got {cheap!r}")
        if cheap == "dw" and in_channels != out_channels:
            raise ValueError(
                f"SIBlock: cheap='dw' keeps the channel count, so it needs in_channels == out_channels "
                f"(got {in_channels} -> {out_channels}); use cheap='dw_pw' or 'pw'"
            )
        self.stride, self.cheap_kind, self.mask_anchors = stride, cheap, bool(mask_anchors)
        self.residual = (stride == 1 and in_channels == out_channels) if residual is None else bool(residual)
        if self.residual and (stride != 1 or in_channels != out_channels):
            raise ValueError(f"SIBlock: residual=True needs stride 1 and in_channels == out_channels, got stride "
                             f"{stride}, {in_channels} -> {out_channels}")
        self.branch = branch
        self.drop_path = drop_path
        self.cheap: nn.Module | None = None
        if self.anchor_stride > 1:
            self.cheap = self._build_cheap(cheap, in_channels, out_channels, stride, kernel_size, act)

    @staticmethod
    def _build_cheap(kind: str, cin: int, cout: int, stride: int, k: int, act: Callable[..., nn.Module]) -> nn.Module:
        def dw(with_act: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin, bias=False), nn.BatchNorm2d(cin)]
            return layers + ([_make_act(act)] if with_act else [])

        if kind == "dw_pw":
            layers = dw(True) + [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        elif kind == "pw":
            layers = [nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)]
        else:
            layers = dw(False)
        cheap = nn.Sequential(*layers)
        for m in cheap.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        return cheap

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, anchor_stride={self.anchor_stride}, "
                f"cheap={self.cheap_kind}, residual={self.residual}, mask_anchors={self.mask_anchors}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SIBlock expects (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}")
        s = self.anchor_stride
        ho, wo = self.output_size(x.shape[-2], x.shape[-1])
        a = self.branch(x[:, :, ::s, ::s] if s > 1 else x)
        if a.shape[-2:] != (math.ceil(ho / s), math.ceil(wo / s)) or a.shape[1] != self.out_channels:
            raise ValueError(f"SIBlock: the branch gave {tuple(a.shape)} for anchors of input {tuple(x.shape)}; "
                             f"expected {self.out_channels} channels at stride {self.stride}")
        y = anchor_upsample(a, s, ho, wo)
        if self.cheap is not None:
            c = self.cheap(x)
            if self.mask_anchors:
                c = c * (1 - anchor_mask(ho, wo, s, c.device, c.dtype))
            y = y + c
        if self.drop_path is not None:
            y = self.drop_path(y)
        return y + x if self.residual else y

    def elementwise_macs(self, height: int, width: int) -> int:
        """Multiply-adds of the interpolation (4 per output element) and the mask (1) per input, which conv
        counters do not see."""
        if self.anchor_stride == 1:
            return 0
        ho, wo = self.output_size(height, width)
        return self.out_channels * ho * wo * (4 + int(self.mask_anchors))


# ---------------------------------------------------------------------------------------------------- own blocks
class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (Sandler et al., CVPR 2018): expand 1x1-BN-act (skipped when
    ``expand_ratio == 1``), depthwise kxk (stride)-BN-act, optional SE, project 1x1-BN; ``+ x`` when the shape
    is kept. ``self.branch`` is everything but the skip (what :class:`SIBlock` wraps)."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float = 6, kernel_size: int = 3,
                 stride: int = 1, act: Callable[..., nn.Module] = nn.ReLU6, se: bool = False) -> None:
        super().__init__()
        who = "InvertedResidual"
        _int("in_channels", in_channels, 1, who), _int("out_channels", out_channels, 1, who)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"{who}: stride must be 1 or 2, got {stride!r}")
        if _int("kernel_size", kernel_size, 1, who) % 2 == 0:
            raise ValueError(f"{who}: kernel_size must be odd, got {kernel_size}")
        if not expand_ratio >= 1:
            raise ValueError(f"{who}: expand_ratio must be >= 1, got {expand_ratio!r}")
        hidden = int(round(in_channels * expand_ratio))
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), _make_act(act)]
        layers += [nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), _make_act(act)]
        if se:
            from torchvision.ops import SqueezeExcitation

            layers.append(SqueezeExcitation(hidden, max(1, in_channels // 4)))
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.branch = nn.Sequential(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.kernel_size = stride, kernel_size
        self.expanded = hidden != in_channels
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        y = self.branch(x)
        return y + x if self.use_res_connect else y


# ---------------------------------------------------------------------------------------------------- conversion
def _branch_spec(block: nn.Module) -> dict:
    """Branch, channels, stride, kernel, activation and stochastic depth of a torchvision MobileNetV2/V3 or
    EfficientNet block, or of :class:`InvertedResidual`."""
    if isinstance(block, InvertedResidual):
        return {"branch": block.branch, "in_channels": block.in_channels, "out_channels": block.out_channels,
                "stride": block.stride, "kernel_size": block.kernel_size, "act": block.act,
                "residual": block.use_res_connect, "drop_path": None, "expanded": block.expanded}
    branch = getattr(block, "block", None) or getattr(block, "conv", None)
    if not isinstance(branch, nn.Sequential) or not hasattr(block, "use_res_connect"):
        raise TypeError(f"cannot make an SI block from {type(block).__name__}: not an inverted residual")
    convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    dw = next(m for m in convs if m.groups > 1 and m.groups == m.in_channels)
    act = next((type(m) for m in branch.modules() if isinstance(m, nn.ReLU | nn.ReLU6 | nn.Hardswish | nn.SiLU)),
               nn.ReLU)
    return {"branch": branch, "in_channels": convs[0].in_channels, "out_channels": convs[-1].out_channels,
            "stride": dw.stride[0], "kernel_size": dw.kernel_size[0], "act": act,
            "residual": bool(block.use_res_connect), "drop_path": getattr(block, "stochastic_depth", None),
            "expanded": convs[0] is not dw}


def to_si(block: nn.Module, anchor_stride: int = 2, cheap: Cheap = "dw_pw", mask_anchors: bool = True) -> SIBlock:
    """An :class:`SIBlock` sharing ``block``'s branch (weights included) and residual rule."""
    spec = _branch_spec(block)
    return SIBlock(spec["branch"], spec["in_channels"], spec["out_channels"], spec["stride"], spec["kernel_size"],
                   anchor_stride, cheap, spec["residual"], spec["act"], mask_anchors, spec["drop_path"])


def _is_ir(block: nn.Module) -> bool:
    try:
        _branch_spec(block)
    except (TypeError, StopIteration):
        return False
    return True


def si_candidates(blocks: Sequence[nn.Module], rule: str) -> list[int]:
    """Indices of ``blocks`` that ``rule`` converts: ``stride1`` (stride-1 blocks with an expansion layer) or
    ``all`` (every inverted residual with an expansion layer)."""
    out = []
    for i, b in enumerate(blocks):
        if not _is_ir(b):
            continue
        spec = _branch_spec(b)
        if spec["expanded"] and (rule == "all" or spec["stride"] == 1):
            out.append(i)
    return out


def _flat_blocks(features: nn.Sequential) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, child name, block) for every top-level block of ``features``, entering stage Sequentials."""
    out = []
    for name, child in features.named_children():
        if isinstance(child, nn.Sequential) and not _is_ir(child) and all(_is_ir(c) for c in child):
            out += [(child, n, c) for n, c in child.named_children()]
        else:
            out.append((features, name, child))
    return out


def convert_to_si(model: nn.Module, si_blocks: str | Sequence[int] = "stride1", anchor_stride: int = 2,
                  cheap: Cheap = "dw_pw", mask_anchors: bool = True) -> list[int]:
    """Replace the chosen inverted residuals of ``model.features`` by SI blocks in place; returns their indices
    in the flattened block list (stage Sequentials entered)."""
    flat = _flat_blocks(model.features)
    blocks = [b for _, _, b in flat]
    if isinstance(si_blocks, str):
        if si_blocks not in ("stride1", "all"):
            raise ValueError(f"si_blocks must be 'stride1', 'all' or a list of block indices, got {si_blocks!r}")
        chosen = si_candidates(blocks, si_blocks)
    else:
        chosen = list(si_blocks)
        bad = [i for i in chosen if not (isinstance(i, int) and 0 <= i < len(blocks) and _is_ir(blocks[i]))]
        if bad:
            valid = [i for i, b in enumerate(blocks) if _is_ir(b)]
            raise ValueError(f"si_blocks: {bad} are not inverted-residual block indices; valid: {valid}")
    for i in chosen:
        parent, name, block = flat[i]
        setattr(parent, name, to_si(block, anchor_stride, cheap, mask_anchors))
    return chosen


def _check_net_args(num_classes: int, in_channels: int, who: str) -> None:
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        _int(name, v, 1, who)


@register_net("si_mobilenet_v3_large")
def si_mobilenet_v3_large(num_classes: int = 1000, in_channels: int = 3, anchor_stride: int = 2,
                          cheap: Cheap = "dw_pw", si_blocks: str | list[int] = "stride1", mask_anchors: bool = True,
                          dropout: float = 0.2, drop_path_rate: float = 0.0) -> nn.Module:
    """SI-MobileNetV3-Large (project design): torchvision's MobileNetV3-Large with the ``si_blocks`` inverted
    residuals as SI blocks (default: the 10 stride-1 blocks with an expansion layer)."""
    import torchvision.models as tvm

    _check_net_args(num_classes, in_channels, "si_mobilenet_v3_large")
    model = tvm.mobilenet_v3_large(weights=None, num_classes=num_classes, dropout=dropout)
    convert_to_si(model, si_blocks, anchor_stride, cheap, mask_anchors)
    add_drop_path(model, drop_path_rate, "si_mobilenet_v3_large")
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


@register_net("si_efficientnet_b0")
def si_efficientnet_b0(num_classes: int = 1000, in_channels: int = 3, anchor_stride: int = 2, cheap: Cheap = "dw_pw",
                       si_blocks: str | list[int] = "stride1", mask_anchors: bool = True, dropout: float = 0.2,
                       stochastic_depth_prob: float = 0.2) -> nn.Module:
    """SI-EfficientNet-B0 (project design): torchvision's EfficientNet-B0 with the ``si_blocks`` MBConv blocks as
    SI blocks (default: the 11 stride-1 blocks with an expansion layer)."""
    import torchvision.models as tvm

    _check_net_args(num_classes, in_channels, "si_efficientnet_b0")
    model = tvm.efficientnet_b0(weights=None, num_classes=num_classes, dropout=dropout,
                                stochastic_depth_prob=stochastic_depth_prob)
    convert_to_si(model, si_blocks, anchor_stride, cheap, mask_anchors)
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


@register_net("si_mobilenet_v2")
def si_mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, anchor_stride: int = 2, cheap: Cheap = "dw_pw",
                    si_blocks: str | list[int] = "stride1", mask_anchors: bool = True,
                    dropout: float = 0.2, drop_path_rate: float = 0.0) -> nn.Module:
    """SI-MobileNetV2 (project design): torchvision's MobileNetV2 with the ``si_blocks`` blocks as SI blocks."""
    import torchvision.models as tvm

    _check_net_args(num_classes, in_channels, "si_mobilenet_v2")
    model = tvm.mobilenet_v2(weights=None, num_classes=num_classes, dropout=dropout)
    convert_to_si(model, si_blocks, anchor_stride, cheap, mask_anchors)
    add_drop_path(model, drop_path_rate, "si_mobilenet_v2")
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


# ---------------------------------------------------------------------------------------------------- small nets
# (expansion t, channels c, repeats n, first stride s) for 32x32 inputs: 32 -> 32 -> 16 -> 8 -> 4
IRNET_SETTING: tuple[tuple[int, int, int, int], ...] = ((1, 8, 1, 1), (3, 16, 2, 2), (3, 24, 2, 2), (3, 32, 2, 2))
IRNET_STEM, IRNET_HEAD = 8, 64


def _round4(v: float) -> int:
    return max(4, int(v + 2) // 4 * 4)


class IRNet(nn.Module):
    """Small MobileNetV2-style net for 32x32 inputs (project design for the CPU studies): stem conv3x3 (stride 1)
    -BN-ReLU6, inverted-residual stages ``setting`` (t, c, n, s), 1x1 head conv-BN-ReLU6 to ``head`` channels,
    average pool, linear. ``width_mult`` scales every width (rounded to multiples of 4, at least 4). The default
    is about 1.8M MACs per 32x32 image, sized so that 5-seed studies fit a shared 2-core CPU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                 setting: Sequence[Sequence[int]] = IRNET_SETTING, head: int = IRNET_HEAD) -> None:
        super().__init__()
        _check_net_args(num_classes, in_channels, "IRNet")
        if not width_mult > 0:
            raise ValueError(f"IRNet: width_mult must be > 0, got {width_mult!r}")
        stem = _round4(IRNET_STEM * width_mult)
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
                                                 nn.BatchNorm2d(stem), nn.ReLU6(inplace=True))]
        c_in = stem
        for t, c, n, s in setting:
            c_out = _round4(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, t, 3, s if i == 0 else 1))
                c_in = c_out
        head_c = _round4(head * width_mult)
        layers.append(nn.Sequential(nn.Conv2d(c_in, head_c, 1, bias=False), nn.BatchNorm2d(head_c),
                                    nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_net("irnet")
def irnet(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0, head: int = IRNET_HEAD) -> IRNet:
    """Plain small inverted-residual net for 32x32 inputs (the SI study's baseline)."""
    return IRNet(num_classes, in_channels, width_mult, IRNET_SETTING, head)


@register_net("si_irnet")
def si_irnet(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0, head: int = IRNET_HEAD,
             anchor_stride: int = 2, cheap: Cheap = "dw_pw", si_blocks: str | list[int] = "stride1",
             mask_anchors: bool = True) -> IRNet:
    """``irnet`` with the ``si_blocks`` inverted residuals as SI blocks (same architecture otherwise)."""
    model = IRNet(num_classes, in_channels, width_mult, IRNET_SETTING, head)
    convert_to_si(model, si_blocks, anchor_stride, cheap, mask_anchors)
    return model
