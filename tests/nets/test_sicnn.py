"""SI-CNN blocks (nets/sicnn.py, project design): MAC cut predicted by the anchor stride, gradients through
both paths, the interpolation, SI-MobileNetV3 / SI-EfficientNet-B0 counts, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from callbacks.efficiency_report import count_macs, count_params
from nets import create_net
from nets.sicnn import InvertedResidual, SIBlock, anchor_mask, anchor_upsample, convert_to_si, to_si


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def ir(cin: int = 16, cout: int = 16, stride: int = 1, t: float = 6, k: int = 3, se: bool = False) -> InvertedResidual:
    return InvertedResidual(cin, cout, t, k, stride, se=se)


@pytest.mark.parametrize("convention", ["li2017", "all"])
@pytest.mark.parametrize(("cin", "cout", "stride", "s", "size"), [
    (16, 16, 1, 2, 16), (16, 16, 1, 4, 16), (16, 24, 2, 2, 16), (8, 8, 1, 3, 12),
])
def test_mac_cut_is_what_the_anchor_stride_predicts(cin, cout, stride, s, size, convention) -> None:
    plain = ir(cin, cout, stride, se=True)
    si = to_si(plain, anchor_stride=s)
    x = torch.zeros(1, cin, size, size)
    branch_full = count_macs(plain.branch, x, convention)
    branch_anchor = count_macs(si.branch, x[:, :, ::s, ::s], convention)
    cheap = count_macs(si.cheap, x, convention)
    # s * stride divides the size: the branch costs exactly 1/s^2 of itself, except SE's two linear layers,
    # which run once per image whatever the resolution
    se = [m for m in plain.branch.modules() if type(m).__name__ == "SqueezeExcitation"][0]
    se_cost = se.fc1.in_channels * se.fc1.out_channels + se.fc2.in_channels * se.fc2.out_channels
    assert branch_anchor - se_cost == pytest.approx((branch_full - se_cost) / s**2, rel=1e-12)
    assert count_macs(si, x, convention) == pytest.approx(branch_anchor + cheap, rel=1e-12)
    # the cheap path: depthwise k x k (stride) + 1x1 at the output resolution
    ho = math.ceil(size / stride)
    assert cheap == cin * 9 * ho * ho + cin * cout * ho * ho
    assert count_macs(si, x, convention) < branch_full


def test_both_paths_receive_gradients() -> None:
    si = to_si(ir(16, 16, 1), anchor_stride=2)
    x = torch.randn(4, 16, 10, 10, requires_grad=True)
    si(x).square().mean().backward()
    for path in (si.branch, si.cheap):
        grads = [p.grad for p in path.parameters()]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_anchor_pixels_are_exact_and_the_rest_interpolates() -> None:
    si = to_si(ir(8, 8, 1), anchor_stride=2).eval()
    x = torch.randn(2, 8, 9, 7)  # odd sizes
    with torch.no_grad():
        a = si.branch(x[:, :, ::2, ::2])
        out = si(x)
        c = si.cheap(x)
    assert out.shape == x.shape and a.shape[-2:] == (5, 4)
    torch.testing.assert_close(out[:, :, ::2, ::2], a + x[:, :, ::2, ::2])
    # (1, 0) sits between anchors (0, 0) and (1, 0) of the anchor grid: their mean, plus the cheap path
    torch.testing.assert_close(out[:, :, 1, 0], (a[:, :, 0, 0] + a[:, :, 1, 0]) / 2 + c[:, :, 1, 0] + x[:, :, 1, 0])
    # the last column (6) is an anchor column (6 = 2 * 3); row 8 is an anchor row; replicate beyond
    up = anchor_upsample(torch.arange(3.0).reshape(1, 1, 1, 3), 2, 1, 6)
    assert up.flatten().tolist() == [0, 0.5, 1, 1.5, 2, 2]
    up = anchor_upsample(torch.arange(2.0).reshape(1, 1, 1, 2), 4, 1, 7)
    assert up.flatten().tolist() == [0, 0.25, 0.5, 0.75, 1, 1, 1]
    mask = anchor_mask(3, 5, 2)
    assert mask.flatten().tolist() == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1]


def test_unmasked_variant_and_stride_one_degenerate() -> None:
    plain = ir(8, 8, 1).eval()
    x = torch.randn(1, 8, 6, 6)
    same = to_si(plain, anchor_stride=1).eval()
    assert same.cheap is None and same.elementwise_macs(6, 6) == 0
    with torch.no_grad():
        torch.testing.assert_close(same(x), plain(x))
        si = to_si(plain, anchor_stride=2, mask_anchors=False).eval()
        a = si.branch(x[:, :, ::2, ::2])
        torch.testing.assert_close(si(x)[:, :, ::2, ::2], a + si.cheap(x)[:, :, ::2, ::2] + x[:, :, ::2, ::2])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(1, 1), (2, 5), (15, 17)])
def test_odd_and_tiny_spatial_sizes(stride: int, size: tuple[int, int]) -> None:
    si = to_si(ir(8, 12, stride), anchor_stride=2)
    out = si(torch.randn(2, 8, *size))
    assert out.shape == (2, 12, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    out.mean().backward()


def test_bad_input_is_rejected_clearly() -> None:
    branch = ir(8, 8).branch
    for kwargs, match in [
        ({"stride": 3}, "stride must be 1 or 2"), ({"anchor_stride": 0}, "anchor_stride"),
        ({"kernel_size": 4}, "odd"), ({"cheap": "conv"}, "cheap"), ({"in_channels": 0}, "in_channels"),
    ]:
        with pytest.raises(ValueError, match=match):
            SIBlock(branch, **{"in_channels": 8, "out_channels": 8, **kwargs})
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        SIBlock(ir(8, 16).branch, 8, 16, cheap="dw")
    with pytest.raises(ValueError, match="residual=True needs stride 1"):
        SIBlock(ir(8, 8, 2).branch, 8, 8, stride=2, residual=True)
    si = SIBlock(branch, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        si(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="expected 8 channels at stride 2"):  # stride that disagrees with the branch
        SIBlock(branch, 8, 8, stride=2)(torch.randn(1, 8, 8, 8))
    with pytest.raises(TypeError, match="not an inverted residual"):
        to_si(nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match="expand_ratio"):
        InvertedResidual(8, 8, expand_ratio=0.5)
    with pytest.raises(ValueError, match="si_blocks"):
        create_net("si_irnet", num_classes=10, si_blocks=[0])  # the stem is not an inverted residual
    with pytest.raises(ValueError, match="si_blocks"):
        create_net("si_irnet", num_classes=10, si_blocks="some")


# ---------------------------------------------------------------------------------------------------- networks
# conv + linear MACs (`all`), 1000 classes, 224x224, si_blocks="stride1", anchor stride 2, cheap "dw_pw"
SI_NETS = {
    # name: (baseline, converted blocks, measured MACs, measured params)
    "si_mobilenet_v3_large": ("torchvision.mobilenet_v3_large", (10, 9), 137.15e6, 5_596_304),
    "si_efficientnet_b0": ("torchvision.efficientnet_b0", (11, 9), 221.6e6, 5_541_492),
}


@pytest.mark.parametrize("name", list(SI_NETS))
def test_si_imagenet_nets(name: str) -> None:
    baseline, n_si, macs, params = SI_NETS[name]
    with torch.device("meta"):  # shapes only
        si, base = create_net(name, num_classes=1000), create_net(baseline, num_classes=1000)
        x = torch.zeros(1, 3, 224, 224)
    blocks = [m for m in si.modules() if isinstance(m, SIBlock)]
    # every stride-1 block with an expansion layer; all but the width-changing ones keep their residual
    assert (len(blocks), sum(b.residual for b in blocks)) == n_si and all(b.stride == 1 for b in blocks)
    si_macs, base_macs = count_macs(si, x, "all"), count_macs(base, x, "all")
    assert si_macs == pytest.approx(macs, rel=2e-3)
    assert count_params(si, "all") == params
    assert 0.35 < 1 - si_macs / base_macs < 0.45  # the thesis: "up to ~40% less compute" (docs/sicnn.md#what-is-public)


def test_conversion_shares_weights_and_keeps_stochastic_depth() -> None:
    import torchvision

    model = torchvision.models.efficientnet_b0(weights=None, num_classes=10)
    branch = model.features[2][1].block
    chosen = convert_to_si(model, [2, 3])
    assert chosen == [2, 3]
    block = model.features[2][1]
    assert isinstance(block, SIBlock) and block.branch is branch and block.drop_path is not None
    assert not isinstance(model.features[3][0], SIBlock) and isinstance(model.features[2][0], SIBlock)


def test_small_nets_plain_and_si() -> None:
    plain = create_net("irnet", num_classes=10, in_channels=1)
    si = create_net("si_irnet", num_classes=10, in_channels=1)
    x = torch.zeros(1, 1, 32, 32)
    assert sum(isinstance(m, SIBlock) for m in si.modules()) == 3
    cut = 1 - count_macs(si, x, "all") / count_macs(plain, x, "all")
    assert 0.2 < cut < 0.3  # 25.1% measured
    out = si(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)
