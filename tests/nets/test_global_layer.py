"""Global (PDE) layer (nets/global_layer.py): the update equation of docs/global_layer.md#discretisation by hand, the periodic
boundary, counts against the published ones, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from callbacks.efficiency_report import count_macs, count_params
from nets import create_net
from nets.global_layer import (
    GlobalLayer,
    IllustrativeNet,
    advection_diffusion,
    leapfrog_step,
    pde_coefficients,
    shift,
)

DT, DX, DY = 0.2, 1, 1


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def by_hand(h, h_prev, f, u, v, Dx, Dy, dt=DT, dx=DX, dy=DY):
    """One step of eq. 7.2 written out with torch.roll, independently of the implementation."""
    r = torch.roll
    u_x = (r(u, dx, 2) - r(u, -dx, 2)) / (2 * dx)
    v_y = (r(v, dy, 3) - r(v, -dy, 3)) / (2 * dy)
    Ax, Ay = u * dt / dx, v * dt / dy
    Bx, By = Dx * dt / dx**2, Dy * dt / dy**2
    E = (u_x + v_y) * dt
    N = 1 / (1 + 2 * Bx + 2 * By)
    return N * ((1 - 2 * Bx - 2 * By) * h_prev - 2 * E * h
                + (-Ax + 2 * Bx) * r(h, dx, 2) + (Ax + 2 * Bx) * r(h, -dx, 2)
                + (-Ay + 2 * By) * r(h, dy, 3) + (Ay + 2 * By) * r(h, -dy, 3)) + 2 * N * dt * f


def test_one_step_equals_the_update_equation_on_a_tiny_tensor() -> None:
    shape = (1, 2, 3, 4)
    h, h_prev, f, u, v = (torch.randn(shape, dtype=torch.float64) for _ in range(5))
    Dx, Dy = torch.rand(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)
    c = pde_coefficients(u, v, Dx, Dy, DT, DX, DY)
    torch.testing.assert_close(leapfrog_step(h, h_prev, f, c, DT, DX, DY), by_hand(h, h_prev, f, u, v, Dx, Dy))
    # a single pixel checked element by element: pixel (1, 2) of channel 0
    i, j = 1, 2
    Hh, Ww = shape[2], shape[3]
    g = lambda t, a, b: t[0, 0, a % Hh, b % Ww]  # noqa: E731
    ux = (g(u, i - 1, j) - g(u, i + 1, j)) / 2  # roll by +1 brings row i-1 to row i
    vy = (g(v, i, j - 1) - g(v, i, j + 1)) / 2
    Ax, Ay, Bx, By = g(u, i, j) * DT, g(v, i, j) * DT, g(Dx, i, j) * DT, g(Dy, i, j) * DT
    E, N = (ux + vy) * DT, 1 / (1 + 2 * g(Dx, i, j) * DT + 2 * g(Dy, i, j) * DT)
    expected = N * ((1 - 2 * Bx - 2 * By) * g(h_prev, i, j) - 2 * E * g(h, i, j)
                    + (-Ax + 2 * Bx) * g(h, i - 1, j) + (Ax + 2 * Bx) * g(h, i + 1, j)
                    + (-Ay + 2 * By) * g(h, i, j - 1) + (Ay + 2 * By) * g(h, i, j + 1)) + 2 * N * DT * g(f, i, j)
    assert torch.isclose(leapfrog_step(h, h_prev, f, c, DT, DX, DY)[0, 0, i, j], expected)
    # K iterations start from h(-1) = f, h(0) = h0 and carry the previous level
    h1 = by_hand(h, f, f, u, v, Dx, Dy)
    h2 = by_hand(h1, h, f, u, v, Dx, Dy)
    torch.testing.assert_close(advection_diffusion(f, h, u, v, Dx, Dy, K=2, dt=DT), h2)
    # dx = dy = 2 (the EfficientNet stage-40 setting) uses shifts of 2 pixels and spacing 2
    c2 = pde_coefficients(u, v, Dx, Dy, 0.1, 2, 2)
    torch.testing.assert_close(leapfrog_step(h, h_prev, f, c2, 0.1, 2, 2),
                               by_hand(h, h_prev, f, u, v, Dx, Dy, dt=0.1, dx=2, dy=2))


def test_global_layer_forward_is_the_equation_then_bn_act() -> None:
    layer = GlobalLayer(3, K=1).eval()
    with torch.no_grad():
        for bn in (layer.bn_u, layer.bn_v, layer.bn_dx, layer.bn_dy, layer.bn_out):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
        x = torch.randn(2, 3, 5, 6)
        u = torch.relu(layer.bn_u(layer.conv_u(x)))
        v = torch.relu(layer.bn_v(layer.conv_v(x)))
        Dx = torch.relu(layer.bn_dx(layer.conv_dx(x)))
        Dy = torch.relu(layer.bn_dy(layer.conv_dy(x)))
        expected = torch.relu(layer.bn_out(by_hand(x, x, x, u, v, Dx, Dy)))
        torch.testing.assert_close(layer(x), expected)
        residual = GlobalLayer(3, K=1, residual=True).eval()
        residual.load_state_dict(layer.state_dict())
        torch.testing.assert_close(residual(x), expected + x)


def test_velocity_dot_and_constant_diffusion() -> None:
    layer = GlobalLayer(2, K=1, velocity="dot", diffusion="constant", cDx=2.0, cDy=2.0, act=nn.SiLU).eval()
    assert not hasattr(layer, "conv_dx")
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        act = nn.SiLU()
        g = act(layer.bn_u(layer.conv_u(x)) * act(layer.bn_v(layer.conv_v(x))))
        expected = act(layer.bn_out(by_hand(x, x, x, g, g, 2.0, 2.0)))
        torch.testing.assert_close(layer(x), expected)


def test_periodic_boundary_wraps_and_others_do_not() -> None:
    f = torch.zeros(1, 1, 5, 5)
    f[0, 0, 0, 2] = 1.0  # a spike on the top edge
    zero = torch.zeros_like(f)
    out = {b: advection_diffusion(f, f, zero, zero, 1.0, 1.0, K=1, boundary=b) for b in ("periodic", "zeros")}
    assert out["periodic"][0, 0, 4, 2] > 0  # diffused across the top edge to the bottom row
    assert out["zeros"][0, 0, 4, 2] == 0
    torch.testing.assert_close(out["periodic"][0, 0, 1, 2], out["zeros"][0, 0, 1, 2])  # interior unchanged
    # with periodic boundaries and spatially constant coefficients the scheme commutes with circular shifts
    x = torch.randn(1, 2, 6, 7)
    u, v = torch.full_like(x, 0.3), torch.full_like(x, 0.7)
    a = advection_diffusion(x, x, u, v, 1.0, 0.5, K=3)
    b = advection_diffusion(torch.roll(x, (2, 3), (2, 3)), torch.roll(x, (2, 3), (2, 3)), u, v, 1.0, 0.5, K=3)
    torch.testing.assert_close(torch.roll(a, (2, 3), (2, 3)), b)


def test_shift_boundaries() -> None:
    t = torch.arange(4.0).reshape(1, 1, 1, 4)
    assert shift(t, 1, 3, "periodic").flatten().tolist() == [3, 0, 1, 2]
    assert shift(t, 1, 3, "zeros").flatten().tolist() == [0, 0, 1, 2]
    assert shift(t, -1, 3, "zeros").flatten().tolist() == [1, 2, 3, 0]
    assert shift(t, 1, 3, "replicate").flatten().tolist() == [0, 0, 1, 2]
    assert shift(t, -2, 3, "replicate").flatten().tolist() == [2, 3, 3, 3]
    assert shift(t, 9, 3, "zeros").flatten().tolist() == [0, 0, 0, 0]


def test_layer_gradients_odd_sizes_and_tiny_maps() -> None:
    layer = GlobalLayer(4, K=2)
    for size in ((7, 9), (1, 1), (2, 3)):
        x = torch.randn(2, 4, *size, requires_grad=True)
        out = layer(x)
        assert out.shape == x.shape
        out.square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_core_changing_the_shape() -> None:
    core = nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8))
    layer = GlobalLayer(8, core=core, residual=True)
    assert layer(torch.randn(2, 4, 9, 9)).shape == (2, 8, 5, 5)


def test_bad_input_is_rejected_clearly() -> None:
    for kwargs, match in [
        ({"channels": 0}, "channels"), ({"channels": 4, "K": 0}, "K"), ({"channels": 4, "kernel_size": 4}, "odd"),
        ({"channels": 4, "dx": 0}, "dx"), ({"channels": 4, "dt": -0.1}, "dt"),
        ({"channels": 4, "boundary": "reflect"}, "boundary"), ({"channels": 4, "velocity": "cross"}, "velocity"),
        ({"channels": 4, "diffusion": "none"}, "diffusion"),
    ]:
        with pytest.raises(ValueError, match=match):
            GlobalLayer(**kwargs)
    layer = GlobalLayer(4)
    with pytest.raises(ValueError, match="4 channels.*got 3"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        layer(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match="widths"):
        create_net("resnet32_global", num_classes=10, widths=(16, 32, 64))
    with pytest.raises(ValueError, match="backbone"):
        IllustrativeNet(backbone="pde2")


# ---------------------------------------------------------------------------------------------------- counts
X32 = torch.zeros(1, 3, 32, 32)


@pytest.mark.parametrize(("name", "params_pub", "macs_pub"), [
    ("resnet32_global", 170e3, 15e6),  # runner comment (docs/global_layer.md#architectures-and-settings); poster 168K / 15M
    ("resnet56_global", 330e3, 30e6),
])
def test_resnet_global_counts(name: str, params_pub: float, macs_pub: float) -> None:
    model = create_net(name, num_classes=10)
    params, macs = count_params(model, "all"), count_macs(model, X32, "all")
    assert abs(params / params_pub - 1) < 0.06, params  # 161,402 / 332,602 measured
    assert abs(macs / macs_pub - 1) < 0.02, macs  # 14.78M / 30.11M measured (conv + linear, projections included)
    assert sum(isinstance(m, GlobalLayer) for m in model.modules()) == 3
    assert all(m.K == 1 and m.bn_u.eps == m.channels for m in model.modules() if isinstance(m, GlobalLayer))


def test_resnet32_baseline_counts() -> None:
    model = create_net("resnet32", num_classes=10, shortcut="B")  # the paper's ResNet-32 (460K / 70M; 473K poster)
    assert abs(count_params(model, "all") / 466_906 - 1) < 1e-9
    assert abs(count_macs(model, X32, "all") / 70e6 - 1) < 0.02


# measured with `python main.py report --convention all` (torchvision definitions, 1000 classes, 224x224);
# the published Global counts (docs/global_layer.md#published-numbers) are NOT reached by the released architecture strings: see results/
# global_counts.md. Third entry: parameters without the 1280 -> 1000 classifier, which is what thop reports for
# the released timm model (timm's classifier is a Linear subclass, and thop counts only exact types); still not
# the poster's 1.6M / 3M / 2.4M.
IMAGENET_COUNTS = {
    "global_mobilenet_v2": (2_952_232, 233.5e6, 1_671_232),
    "global_mobilenet_v3_large": (3_868_160, 174.4e6, 2_587_160),
    "global_efficientnet_b0": (3_822_932, 295.4e6, 2_541_932),
}


@pytest.mark.parametrize("name", list(IMAGENET_COUNTS))
def test_imagenet_global_counts(name: str) -> None:
    with torch.device("meta"):  # shapes only: counting needs no arithmetic
        model, x = create_net(name, num_classes=1000), torch.zeros(1, 3, 224, 224)
    params, macs, without_classifier = IMAGENET_COUNTS[name]
    assert count_params(model, "all") == params
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert (classifier.in_features, classifier.out_features) == (1280, 1000)
    assert params - sum(p.numel() for p in classifier.parameters()) == without_classifier
    assert abs(count_macs(model, x, "all") / macs - 1) < 0.002
    layers = [m for m in model.modules() if isinstance(m, GlobalLayer)]
    assert len(layers) == 5 and all(m.K == 1 and m.diffusion == "constant" and not m.residual for m in layers)


def test_illustrative_parameter_counts() -> None:
    counts = {b: count_params(IllustrativeNet(10, 1, b), "all") for b in ("conv", "residual", "pde")}
    assert counts == {"conv": 522, "residual": 524, "pde": 524}  # the paper's 524 (522 used by conv)
    net = IllustrativeNet(10, 1, "pde")
    out = net(torch.randn(3, 1, 28, 28))  # MNIST size
    assert out.shape == (3, 10)
    assert net(torch.randn(3, 1, 32, 32)).shape == (3, 10)  # glyph size
