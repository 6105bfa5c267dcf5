"""Global (PDE) layer and the networks built with it (Kag & Saligrama, "Condensing CNNs with Partial Differential
Equations", CVPR 2022; docs/global_layer.md).

The layer evolves every channel of a feature map ``H`` under an advection-diffusion PDE driven by the block
input ``f`` (docs/global_layer.md#method)::

    dH/dt = div(D grad H) + div(v H) + f

discretised as the released code does (docs/global_layer.md#discretisation, ``GlobalFeatureBlock_Diffusion``): a three-level
leapfrog (DuFort-Frankel style) scheme on the pixel grid, time step ``dt``, grid spacing ``dx``/``dy`` (also the
shift in pixels), ``K`` iterations. With ``S_H^+-`` = ``torch.roll`` by ``+-dx`` along the height axis and
``S_W^+-`` by ``+-dy`` along the width axis (periodic boundary)::

    u, v   velocities  = act(BN(DW_k(h0)))            (or, "dot": g = act(BN(DW(h0)) * act(BN'(DW'(h0)))), u = v = g)
    Dx, Dy diffusivity = act(BN(DW_k(h0))) or constants cDx, cDy
    u_x = (S_H^+ u - S_H^- u) / (2 dx),   v_y = (S_W^+ v - S_W^- v) / (2 dy)
    Ax = u dt/dx,  Ay = v dt/dy,  Bx = Dx dt/dx^2,  By = Dy dt/dy^2,  E = (u_x + v_y) dt,  N = 1 / (1 + 2Bx + 2By)

    h(k+1) = N [ (1 - 2Bx - 2By) h(k-1) - 2E h(k) + (-Ax + 2Bx) S_H^+ h(k) + (Ax + 2Bx) S_H^- h(k)
                 + (-Ay + 2By) S_W^+ h(k) + (Ay + 2By) S_W^- h(k) ] + 2 N dt f                    (eq. 7.2)

    h(-1) = f,  h(0) = core(f)  (core = identity for the CIFAR layer),  output = act(BN(h(K))) [+ f]

The coefficients are computed once, from ``h(0)``, not re-estimated per iteration (docs/global_layer.md#differences-from-the-released-code). The
non-linear (coefficient-from-features) PDE is the only mode (the released code asserts it).

``boundary="periodic"`` (``torch.roll``, the default) is what the published numbers used; it wraps information
across image edges. ``"zeros"`` and ``"replicate"`` are documented deviations. On maps with a side of at most
``2*dx`` the periodic stencil wraps onto itself (on a 1x1 map every shift is the identity and the update is
pointwise); the layer still runs and stays well defined there, which is what ImageNet nets see at 32x32 inputs.

Counting: the depthwise convs are counted by ``count_macs`` (both conventions); the PDE iteration itself is
element-wise (no conv or matmul), so torch's flop counter (``--convention all``) does not see it, and neither
does ``thop`` used by the paper. :meth:`GlobalLayer.pde_macs` gives its element-wise multiply count separately.

Networks (all registered, built with ``nets.create_net``):

* ``resnet32_global`` / ``resnet56_global``: the CIFAR "pdenet" of the released ``model.py`` (docs/global_layer.md#architectures-and-settings):
  stem conv3x3(n1)-BN-ReLU, layer1 (m BasicBlocks) -> Global1, layer2 (stride 2) -> Global2, layer3 (stride 2)
  -> Global3, layer4 (stride 2), average pool, FC; widths n1..n4 = 16/32/64/64, K = 1, m = 1 (ResNet-32-Global,
  runner: 170K params / 15M MACs) or m = 2 (ResNet-56-Global, 330K / 30M). Shape-changing BasicBlocks use a
  1x1 conv + BN projection (the ``shortcut`` submodule), as in the released code.
* ``global_mobilenet_v2``, ``global_mobilenet_v3_large``, ``global_efficientnet_b0``: the Global variants of
  the released ``imagenet_global_models.py``, rebuilt from torchvision's MobileNetV2 / MobileNetV3-Large /
  EfficientNet-B0 definitions (no timm): each stage keeps its first (downsampling) inverted-residual block and
  replaces the remaining repeats by ONE Global layer whose ``core`` is one inverted-residual block of the stage
  (``h(0) = IR(f)``), K = 1, constant diffusivity. Per-stage options follow the released architecture strings
  (velocity "dot" product, ``dt``, ``dx``, ``cDx``; see ``_GLOBAL_MNV2`` etc. below).
  Counts (docs/global_layer.md#published-numbers; ``results/global_counts.md``): these nets follow the released strings block by block
  (which stages hold a Global layer, expansion ratios, kernels, SE, activations, the 1280-wide head; checked
  against ``efficientnet_builder.py``/``global_layer.py``), giving 2.95M / 234M (MobileNetV2), 3.87M / 174M
  (MobileNetV3-Large) and 3.82M / 295M (EfficientNet-B0) params / MACs at 224x224, against the poster's 1.6M /
  193M, 3M / 156M and 2.4M / 244M. No counting convention closes the gap: without the classifier they are
  1.67M / 232M, 2.59M / 173M and 2.54M / 294M (``thop`` on the released timm model counts exactly these
  parameters, as timm's classifier is a ``Linear`` subclass that thop has no rule for, and at least these MACs);
  dropping the 1x1 head too still leaves more MACs than published, and no input side matches. The published ImageNet Global numbers are not reproducible from the
  released code; these nets keep the released configuration.
* ``global_illustrative``: the paper's ~500-parameter illustrative model (``train_mnist_illustrative_example.py``)
  with ``backbone`` "conv" | "residual" | "pde".

Two details of the released code are reproduced on purpose and can be switched off:

* ``coef_bn_eps``: the CIFAR code builds the coefficient BNs as ``BatchNorm2d(planes, planes)``, i.e. with
  ``eps = planes`` (its default ``use_diff_eps=True``); ``resnet*_global`` keep that (``coef_bn_eps="channels"``).
  The ImageNet builder sets ``use_diff_eps=False`` (eps 1e-5), and so do the ImageNet nets here.
* ``residual``: the ImageNet architecture strings say ``rs1`` but the builder stores it under a key the layer
  never reads, so the released ImageNet Global layers have NO outer residual; ``residual=False`` there too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_net
from .resnet_cifar import BasicBlock

Boundary = Literal["periodic", "zeros", "replicate"]
_BOUNDARIES = ("periodic", "zeros", "replicate")


# ---------------------------------------------------------------------------------------------------- the scheme
def shift(t: Tensor, step: int, dim: int, boundary: Boundary = "periodic") -> Tensor:
    """``torch.roll(t, step, dims=dim)`` for ``periodic``; otherwise the same shift with the vacated entries
    filled with zeros (``zeros``) or with the edge values (``replicate``). ``step`` may exceed the size."""
    if boundary == "periodic":
        return torch.roll(t, step, dims=dim)
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    n = t.shape[dim]
    if step == 0:
        return t
    k = min(abs(step), n)
    if boundary == "zeros":
        fill = torch.zeros_like(t.narrow(dim, 0, k))
    else:  # replicate the edge the content moves away from
        edge = t.narrow(dim, 0, 1) if step > 0 else t.narrow(dim, n - 1, 1)
        shape = list(t.shape)
        shape[dim] = k
        fill = edge.expand(*shape)
    if step > 0:
        return torch.cat([fill, t.narrow(dim, 0, n - k)], dim=dim)
    return torch.cat([t.narrow(dim, k, n - k), fill], dim=dim)


def pde_coefficients(
    u: Tensor, v: Tensor, Dx: Tensor | float, Dy: Tensor | float, dt: float, dx: int, dy: int,
    boundary: Boundary = "periodic",
) -> dict[str, Tensor | float]:
    """Scaled coefficients Ax, Ay, Bx, By, E, N of eq. 7.2 from velocities and diffusivities (computed once)."""
    u_x = (shift(u, dx, 2, boundary) - shift(u, -dx, 2, boundary)) / (2 * dx)
    v_y = (shift(v, dy, 3, boundary) - shift(v, -dy, 3, boundary)) / (2 * dy)
    Bx = Dx * (dt / (dx * dx))
    By = Dy * (dt / (dy * dy))
    return {
        "Ax": u * (dt / dx),
        "Ay": v * (dt / dy),
        "Bx": Bx,
        "By": By,
        "E": (u_x + v_y) * dt,
        "N": 1.0 / (1.0 + 2 * Bx + 2 * By),
    }


def leapfrog_step(
    h: Tensor, h_prev: Tensor, f: Tensor | None, c: dict, dt: float, dx: int, dy: int,
    boundary: Boundary = "periodic",
) -> Tensor:
    """One iteration of eq. 7.2: ``h(k+1)`` from ``h(k) = h`` and ``h(k-1) = h_prev`` (``f=None``: no source)."""
    Ax, Ay, Bx, By, E, N = c["Ax"], c["Ay"], c["Bx"], c["By"], c["E"], c["N"]
    out = N * (
        (1 - 2 * Bx - 2 * By) * h_prev
        - 2 * E * h
        + (-Ax + 2 * Bx) * shift(h, dx, 2, boundary)
        + (Ax + 2 * Bx) * shift(h, -dx, 2, boundary)
        + (-Ay + 2 * By) * shift(h, dy, 3, boundary)
        + (Ay + 2 * By) * shift(h, -dy, 3, boundary)
    )
    if f is not None:
        out = out + N * (2 * dt) * f
    return out


def advection_diffusion(
    f: Tensor, h0: Tensor, u: Tensor, v: Tensor, Dx: Tensor | float, Dy: Tensor | float, K: int,
    dt: float = 0.2, dx: int = 1, dy: int = 1, source: bool = True, boundary: Boundary = "periodic",
) -> Tensor:
    """``K`` leapfrog iterations from ``h(-1) = f``, ``h(0) = h0`` with source ``f`` (docs/global_layer.md#discretisation)."""
    c = pde_coefficients(u, v, Dx, Dy, dt, dx, dy, boundary)
    h_prev, h = f, h0
    for _ in range(K):
        h, h_prev = leapfrog_step(h, h_prev, f if source else None, c, dt, dx, dy, boundary), h
    return h


# ---------------------------------------------------------------------------------------------------- the layer
def _act(act: Callable[..., nn.Module] | type[nn.Module]) -> nn.Module:
    try:
        return act(inplace=False)
    except TypeError:
        return act()


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"GlobalLayer: {name} must be an int >= {low}, got {value!r}")
    return value


class GlobalLayer(nn.Module):
    """The Global (PDE) layer of Kag & Saligrama, CVPR 2022 (the equation in docs/global_layer.md#discretisation; module docstring).

    A drop-in residual block: ``(B, C, H, W) -> (B, C, H, W)`` (``core=None``), or, with a ``core`` block that
    changes the shape (stride 2, new width), ``(B, C_in, H, W) -> (B, channels, H', W')``; then ``f = core(x)``
    as in the released code. ``channels`` is the layer's width (the core's output width).

    Args:
        channels: feature channels the PDE runs on (>= 1; each channel evolves independently).
        K: leapfrog iterations (>= 1).
        dt, dx, dy: time step and grid spacing; ``dx``/``dy`` are also the shifts in pixels (ints >= 1).
        kernel_size: odd kernel of the depthwise coefficient convs.
        diffusion: ``"learned"`` (Dx, Dy from depthwise convs) or ``"constant"`` (``cDx``, ``cDy``).
        velocity: ``"separate"`` (u, v from two depthwise branches) or ``"dot"`` (released ``use_dot``).
        core: optional block computing ``h(0)`` from the input (the ImageNet "gr" blocks: an inverted residual).
        residual: add the PDE input ``f`` to the output (``use_res``).
        source: keep the source term ``2 N dt f`` (``False`` = released ``--no_f``).
        act: activation of the coefficient branches and the output (ReLU in the CIFAR code).
        boundary: ``"periodic"`` (default, as released), ``"zeros"`` or ``"replicate"``.
        coef_bn_eps: eps of the coefficient BNs; ``"channels"`` reproduces the CIFAR code's ``eps = planes``.
        drop_path: optional module applied to the PDE output before the residual sum (stochastic depth).
    """

    def __init__(
        self,
        channels: int,
        K: int = 1,
        dt: float = 0.2,
        dx: int = 1,
        dy: int = 1,
        kernel_size: int = 3,
        diffusion: Literal["learned", "constant"] = "learned",
        cDx: float = 1.0,
        cDy: float = 1.0,
        velocity: Literal["separate", "dot"] = "separate",
        core: nn.Module | None = None,
        residual: bool = False,
        source: bool = True,
        act: Callable[..., nn.Module] = nn.ReLU,
        boundary: Boundary = "periodic",
        coef_bn_eps: float | Literal["channels"] = 1e-5,
        drop_path: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.channels = _check_int("channels", channels, 1)
        self.K = _check_int("K", K, 1)
        self.dx, self.dy = _check_int("dx", dx, 1), _check_int("dy", dy, 1)
        kernel_size = _check_int("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"GlobalLayer: kernel_size must be odd (same-size depthwise convs), got {kernel_size}")
        if not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"GlobalLayer: dt must be a finite number > 0, got {dt!r}")
        if diffusion not in ("learned", "constant"):
            raise ValueError(f"GlobalLayer: diffusion must be 'learned' or 'constant', got {diffusion!r}")
        if velocity not in ("separate", "dot"):
            raise ValueError(f"GlobalLayer: velocity must be 'separate' or 'dot', got {velocity!r}")
        if boundary not in _BOUNDARIES:
            raise ValueError(f"GlobalLayer: boundary must be one of {_BOUNDARIES}, got {boundary!r}")
        eps = float(channels) if coef_bn_eps == "channels" else float(coef_bn_eps)
        self.dt, self.kernel_size = float(dt), kernel_size
        self.diffusion, self.velocity, self.boundary = diffusion, velocity, boundary
        self.cDx, self.cDy = float(cDx), float(cDy)
        self.residual, self.source = bool(residual), bool(source)
        self.core = core
        self.drop_path = drop_path

        def dw() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)

        self.conv_u, self.bn_u = dw(), nn.BatchNorm2d(channels, eps=eps)
        self.conv_v, self.bn_v = dw(), nn.BatchNorm2d(channels, eps=eps)
        if diffusion == "learned":
            self.conv_dx, self.bn_dx = dw(), nn.BatchNorm2d(channels, eps=eps)
            self.conv_dy, self.bn_dy = dw(), nn.BatchNorm2d(channels, eps=eps)
        self.bn_out = nn.BatchNorm2d(channels)
        self.act = _act(act)
        for m in (self.conv_u, self.conv_v, getattr(self, "conv_dx", None), getattr(self, "conv_dy", None)):
            if m is not None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, K={self.K}, dt={self.dt}, dx={self.dx}, dy={self.dy}, "
                f"diffusion={self.diffusion}, velocity={self.velocity}, boundary={self.boundary}, "
                f"residual={self.residual}, source={self.source}")

    def coefficients(self, h0: Tensor) -> tuple[Tensor, Tensor, Tensor | float, Tensor | float]:
        """Velocities ``u, v`` and diffusivities ``Dx, Dy`` from ``h(0)`` (computed once per forward)."""
        if self.velocity == "dot":
            u = self.act(self.bn_u(self.conv_u(h0)) * self.act(self.bn_v(self.conv_v(h0))))
            v = u
        else:
            u = self.act(self.bn_u(self.conv_u(h0)))
            v = self.act(self.bn_v(self.conv_v(h0)))
        if self.diffusion == "constant":
            return u, v, self.cDx, self.cDy
        return u, v, self.act(self.bn_dx(self.conv_dx(h0))), self.act(self.bn_dy(self.conv_dy(h0)))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"GlobalLayer expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        f = x
        h = f if self.core is None else self.core(f)
        if h.shape[1] != self.channels:
            raise ValueError(
                f"GlobalLayer({self.channels} channels) got {h.shape[1]} channels"
                + (" from its core" if self.core is not None else "")
                + f" (input shape {tuple(x.shape)})"
            )
        if h.shape != f.shape:  # the core changed stride or width: the PDE's input is the core's output
            f = h
        u, v, Dx, Dy = self.coefficients(h)
        h = advection_diffusion(f, h, u, v, Dx, Dy, self.K, self.dt, self.dx, self.dy, self.source, self.boundary)
        out = self.act(self.bn_out(h))
        if self.residual:
            if self.drop_path is not None:
                out = self.drop_path(out)
            out = out + f
        return out

    def pde_macs(self, height: int, width: int) -> int:
        """Element-wise multiplies of the PDE part per input (not seen by conv/matmul counters): coefficients
        (about 10 per element) plus 9 per element per iteration (7 in the bracket, N, the source term)."""
        return self.channels * height * width * (10 + 9 * self.K)


# ---------------------------------------------------------------------------------------------------- helpers
def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first ``nn.Conv2d`` of ``model`` for one reading ``in_channels`` channels (same everything else)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, bias=module.bias is not None)
            nn.init.kaiming_normal_(new.weight, mode="fan_out")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
            return
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d to adapt to in_channels={in_channels}")


def _check_classes(num_classes: int, in_channels: int, who: str) -> None:
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")


# ---------------------------------------------------------------------------------------------------- CIFAR
class ResNetGlobal(nn.Module):
    """The released CIFAR "pdenet": four BasicBlock stages with a Global layer after each of the first three.

    Args:
        m: BasicBlocks per stage (1 = ResNet-32-Global, 2 = ResNet-56-Global).
        widths: n1..n4 (stage widths; stages 2-4 start with stride 2).
        K, dt, dx, dy, diffusion, boundary, ...: passed to every :class:`GlobalLayer` via ``global_kwargs``.
        use_global: ``False`` builds the same net without the Global layers (an ablation baseline).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        m: int = 1,
        widths: Sequence[int] = (16, 32, 64, 64),
        K: int = 1,
        use_global: bool = True,
        global_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        _check_classes(num_classes, in_channels, "ResNetGlobal")
        widths = list(widths)
        if len(widths) != 4 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            raise ValueError(f"ResNetGlobal: widths must be 4 positive ints (n1..n4), got {widths!r}")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"ResNetGlobal: m (blocks per stage) must be an int >= 1, got {m!r}")
        kwargs = {"K": K, "diffusion": "learned", "coef_bn_eps": "channels", **(global_kwargs or {})}
        self.m, self.widths = m, widths
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for s, width in enumerate(widths):
            blocks = []
            for b in range(m):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(channels, width, stride, kind="B"))
                channels = width
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
            if s < 3:
                self.add_module(f"global{s + 1}", GlobalLayer(width, **kwargs) if use_global else nn.Identity())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for mod in self.modules():  # the released init: N(0, 2 / (k * k * out_channels)) for every conv
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.global1(self.layer1(x))
        x = self.global2(self.layer2(x))
        x = self.global3(self.layer3(x))
        x = self.layer4(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_net("resnet32_global")
def resnet32_global(
    num_classes: int = 10, in_channels: int = 3, K: int = 1, widths: Sequence[int] = (16, 32, 64, 64),
    use_global: bool = True, global_kwargs: dict | None = None,
) -> ResNetGlobal:
    """ResNet-32-Global (runner: m = 1, K = 1, widths 16/32/64/64; 170K params, 15M MACs; docs/global_layer.md#architectures-and-settings)."""
    return ResNetGlobal(num_classes, in_channels, 1, widths, K, use_global, global_kwargs)


@register_net("resnet56_global")
def resnet56_global(
    num_classes: int = 10, in_channels: int = 3, K: int = 1, widths: Sequence[int] = (16, 32, 64, 64),
    use_global: bool = True, global_kwargs: dict | None = None,
) -> ResNetGlobal:
    """ResNet-56-Global (runner: m = 2, K = 1, widths 16/32/64/64; 330K params, 30M MACs; docs/global_layer.md#architectures-and-settings)."""
    return ResNetGlobal(num_classes, in_channels, 2, widths, K, use_global, global_kwargs)


# ---------------------------------------------------------------------------------------------------- ImageNet
# Per-stage Global-layer options of the released architecture strings (imagenet_global_models.py), keyed by the
# output width of the stage; every "gr" block has K = 1 ("j1") and constant diffusivity ("xy1").
_GLOBAL_MNV2 = {  # MobileNetV2: gr_..._k3_e6, "nre" (ReLU) in the first three stages, ReLU6 elsewhere
    24: {"act": nn.ReLU}, 32: {"act": nn.ReLU}, 64: {"act": nn.ReLU}, 96: {"act": nn.ReLU6}, 160: {"act": nn.ReLU6},
}
_GLOBAL_MNV3 = {  # MobileNetV3-Large
    24: {"act": nn.ReLU, "velocity": "separate"},
    40: {"act": nn.ReLU, "velocity": "dot", "kernel_size": 5},
    80: {"act": nn.Hardswish, "velocity": "dot"},
    112: {"act": nn.Hardswish, "velocity": "dot"},
    160: {"act": nn.Hardswish, "velocity": "dot", "kernel_size": 5},
}
_GLOBAL_EFFB0 = {  # EfficientNet-B0 (SiLU everywhere)
    24: {"velocity": "dot", "dt": 0.1, "cDx": 2.0, "cDy": 2.0},
    40: {"velocity": "dot", "dt": 0.1, "dx": 2, "dy": 2, "cDx": 2.0, "cDy": 2.0, "kernel_size": 5},
    80: {"velocity": "dot"},
    112: {"velocity": "dot", "kernel_size": 5},
    192: {"velocity": "dot", "kernel_size": 5},
}


def _global_layer(channels: int, core: nn.Module, options: dict, K: int, boundary: Boundary,
                  act: Callable[..., nn.Module] | None = None) -> GlobalLayer:
    opts = {"act": act, **options} if act is not None else dict(options)
    return GlobalLayer(channels, K=K, diffusion="constant", core=core, boundary=boundary, **opts)


def _relu6_to_relu(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU6):
            setattr(module, name, nn.ReLU(inplace=True))
        else:
            _relu6_to_relu(child)



def add_drop_path(model: nn.Module, rate: float, who: str = "net") -> list[float]:
    """Stochastic depth ("drop path") as timm's EfficientNet/MobileNet builder applies it, added in place.

    The blocks are ``model.features[1:-1]`` (stage Sequentials entered; the stem and the head conv are not
    blocks). Block ``i`` of ``n`` drops its residual branch with probability ``rate * i / n`` per sample (the
    survivors scaled by ``1 / (1 - p)``), but only where the block has a residual sum: torchvision's
    MobileNetV2/V3 inverted residuals get ``StochasticDepth`` at the end of their branch, SI blocks get it as
    their ``drop_path``; a Global layer passes the same rate to its core block and, with a residual sum, to its
    PDE output (the released ImageNet models do both). Returns the probability of
    every block (0 for those without a residual sum). ``rate`` 0 changes nothing.
    """
    from torchvision.ops import StochasticDepth

    try:
        rate = float(rate)
    except (TypeError, ValueError):
        rate = math.nan
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{who}: drop_path_rate must be in [0, 1), got {rate!r}.")
    blocks: list[nn.Module] = []
    for child in list(model.features.children())[1:-1]:
        is_stage = isinstance(child, nn.Sequential) and not hasattr(child, "use_res_connect")
        blocks += list(child.children()) if is_stage else [child]
    def add(block: nn.Module, p: float, i: int) -> bool:
        if isinstance(block, GlobalLayer):  # as released: the core block and the PDE output, same rate
            inner = block.core is not None and add(block.core, p, i)
            if block.residual:
                block.drop_path = StochasticDepth(p, "row")
            return inner or block.residual
        if not (getattr(block, "use_res_connect", False) or getattr(block, "residual", False)):
            return False
        if hasattr(block, "use_res_connect"):  # torchvision InvertedResidual: x + branch(x)
            (block.conv if hasattr(block, "conv") else block.block).append(StochasticDepth(p, "row"))
        elif hasattr(block, "drop_path"):
            block.drop_path = StochasticDepth(p, "row")
        else:
            raise TypeError(f"{who}: cannot add drop path to block {i} ({type(block).__name__})")
        return True

    probs = []
    for i, block in enumerate(blocks):
        p = rate * i / len(blocks)
        probs.append(p if p > 0.0 and add(block, p, i) else 0.0)
    return probs


@register_net("global_mobilenet_v2")
def global_mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, K: int = 1, dropout: float = 0.2,
                        boundary: Boundary = "periodic", drop_path_rate: float = 0.0) -> nn.Module:
    """Global MobileNetV2 (released ``global_mobilenetv2_100``): stages 24/32/64/96/160 keep their first
    inverted residual and replace the other repeats by one Global layer around one inverted residual."""
    import torchvision.models as tvm

    _check_classes(num_classes, in_channels, "global_mobilenet_v2")
    setting = [[1, 16, 1, 1]]
    global_at = []
    for c, s in ((24, 2), (32, 2), (64, 2), (96, 1), (160, 2)):
        setting += [[6, c, 1, s], [6, c, 1, 1]]
        global_at.append((len(setting), c))  # feature index of the second block (features[0] is the stem)
    setting.append([6, 320, 1, 1])
    model = tvm.MobileNetV2(num_classes=num_classes, inverted_residual_setting=setting, dropout=dropout)
    for index, c in global_at:
        core = model.features[index]
        opts = _GLOBAL_MNV2[c]
        if opts["act"] is nn.ReLU:
            _relu6_to_relu(core)
        model.features[index] = _global_layer(c, core, opts, K, boundary)
    add_drop_path(model, drop_path_rate, "global_mobilenet_v2")
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


@register_net("global_mobilenet_v3_large")
def global_mobilenet_v3_large(num_classes: int = 1000, in_channels: int = 3, K: int = 1, dropout: float = 0.2,
                              boundary: Boundary = "periodic", drop_path_rate: float = 0.0) -> nn.Module:
    """Global MobileNetV3-Large (released ``global_mobilenetv3_large_100``): 1 + 1 + 1 + 2 + 2 + 1 blocks
    where torchvision has 1 + 2 + 3 + 4 + 2 + 3; the 160-wide stage is a single stride-2 Global layer."""
    import torchvision.models as tvm
    from torchvision.models.mobilenetv3 import InvertedResidualConfig

    _check_classes(num_classes, in_channels, "global_mobilenet_v3_large")
    conf = partial(InvertedResidualConfig, dilation=1, width_mult=1.0)
    setting = [
        conf(16, 3, 16, 16, False, "RE", 1),
        conf(16, 3, 64, 24, False, "RE", 2),
        conf(24, 3, 72, 24, False, "RE", 1),  # gr c24
        conf(24, 5, 72, 40, True, "RE", 2),
        conf(40, 5, 120, 40, True, "RE", 1),  # gr c40
        conf(40, 3, 240, 80, False, "HS", 2),
        conf(80, 3, 480, 80, False, "HS", 1),  # gr c80 (e6)
        conf(80, 3, 480, 112, True, "HS", 1),
        conf(112, 3, 672, 112, True, "HS", 1),  # gr c112
        conf(112, 5, 672, 160, True, "HS", 2),  # gr c160, stride 2
    ]
    model = tvm.MobileNetV3(setting, last_channel=1280, num_classes=num_classes, dropout=dropout)
    for index, c in ((3, 24), (5, 40), (7, 80), (9, 112), (10, 160)):
        model.features[index] = _global_layer(c, model.features[index], _GLOBAL_MNV3[c], K, boundary)
    add_drop_path(model, drop_path_rate, "global_mobilenet_v3_large")
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


@register_net("global_efficientnet_b0")
def global_efficientnet_b0(num_classes: int = 1000, in_channels: int = 3, K: int = 1, dropout: float = 0.2,
                           stochastic_depth_prob: float = 0.2, boundary: Boundary = "periodic") -> nn.Module:
    """Global EfficientNet-B0 (released ``global_efficientnet_b0``): stages 24/40/80/112/192 have two blocks,
    the second wrapped in a Global layer (torchvision B0 has 2/2/3/3/4)."""
    import torchvision.models as tvm
    from torchvision.models.efficientnet import MBConvConfig

    _check_classes(num_classes, in_channels, "global_efficientnet_b0")
    setting = [
        MBConvConfig(1, 3, 1, 32, 16, 1),
        MBConvConfig(6, 3, 2, 16, 24, 2),
        MBConvConfig(6, 5, 2, 24, 40, 2),
        MBConvConfig(6, 3, 2, 40, 80, 2),
        MBConvConfig(6, 5, 1, 80, 112, 2),
        MBConvConfig(6, 5, 2, 112, 192, 2),
        MBConvConfig(6, 3, 1, 192, 320, 1),
    ]
    model = tvm.EfficientNet(setting, dropout=dropout, stochastic_depth_prob=stochastic_depth_prob,
                             num_classes=num_classes)
    for stage, c in ((2, 24), (3, 40), (4, 80), (5, 112), (6, 192)):
        model.features[stage][1] = _global_layer(c, model.features[stage][1], _GLOBAL_EFFB0[c], K, boundary,
                                                 act=nn.SiLU)
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model


# ---------------------------------------------------------------------------------------------------- illustrative
class IllustrativeNet(nn.Module):
    """The paper's illustrative model (``train_mnist_illustrative_example.py``; docs/global_layer.md#published-numbers): one-channel
    block ``f = conv_f(relu(bn_f(x)))``, a backbone, ReLU, average pool to ``pool_size`` x ``pool_size``,
    Linear(pool_size^2 -> classes). 524 parameters for 1 input channel, 10 classes and ``pool_size`` 7 (522 for
    "conv", which here does not build the output BN it would never use; docs/global_layer.md#differences-from-the-released-code).

    Backbones: ``conv``: ``conv_g(relu(bn_g(f)))``; ``residual``: ``relu(bn_out(f + conv_g(relu(bn_g(f)))))``;
    ``pde``: ``u = v = conv_g(relu(bn_g(f)))`` (no activation on the velocity, as released), D = 1, dt = 0.2,
    ``K`` = 5 iterations of eq. 7.2 from ``h(-1) = h(0) = f`` with source ``f``, then ``relu(bn_out(.))``.
    The input is pooled adaptively, so 28x28 MNIST and 32x32 glyphs both give a 7x7 map.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, backbone: str = "pde", K: int = 5,
                 dt: float = 0.2, pool_size: int = 7, boundary: Boundary = "periodic") -> None:
        super().__init__()
        _check_classes(num_classes, in_channels, "IllustrativeNet")
        if backbone not in ("conv", "residual", "pde"):
            raise ValueError(f"IllustrativeNet: backbone must be 'conv', 'residual' or 'pde', got {backbone!r}")
        self.backbone, self.K, self.dt, self.boundary = backbone, _check_int("K", K, 1), float(dt), boundary
        self.bn_f = nn.BatchNorm2d(in_channels)
        self.conv_f = nn.Conv2d(in_channels, 1, 3, padding=1, bias=False)
        self.bn_g = nn.BatchNorm2d(1)
        self.conv_g = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.bn_out = nn.BatchNorm2d(1) if backbone != "conv" else None
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = nn.Linear(pool_size * pool_size, num_classes)

    def features(self, x: Tensor) -> Tensor:
        f = self.conv_f(F.relu(self.bn_f(x)))
        g = self.conv_g(F.relu(self.bn_g(f)))
        if self.backbone == "conv":
            return g
        if self.backbone == "residual":
            return F.relu(self.bn_out(f + g))
        h = advection_diffusion(f, f, g, g, 1.0, 1.0, self.K, self.dt, 1, 1, True, self.boundary)
        return F.relu(self.bn_out(h))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.features(x))
        return self.fc(torch.flatten(self.pool(h), 1))

    def pde_macs(self, height: int, width: int) -> int:
        """Element-wise multiplies of the PDE backbone per input (as :meth:`GlobalLayer.pde_macs`; 0 otherwise)."""
        return height * width * (10 + 9 * self.K) if self.backbone == "pde" else 0


@register_net("global_illustrative")
def global_illustrative(num_classes: int = 10, in_channels: int = 1, backbone: str = "pde", K: int = 5,
                        dt: float = 0.2, pool_size: int = 7) -> IllustrativeNet:
    """The ~500-parameter illustrative model (conv / residual / PDE backbone) of the Global-layer paper."""
    return IllustrativeNet(num_classes, in_channels, backbone, K, dt, pool_size)
