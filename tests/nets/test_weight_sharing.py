"""Kernel weight sharing (nets/weight_sharing.py): published parameter counts, the sharing equations on hand-set
weights, and the shared-vs-narrow ResNet equivalence (docs/weight_sharing.md)."""

from __future__ import annotations

import pytest
import torch

from nets import create_net
from nets.weight_sharing import (
    SharedDepthwiseConv2d, SharedPointwiseConv2d, WeightSharingError, shared_to_narrow, tile,
)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# docs/weight_sharing.md#published-numbers (the author's notebook outputs), 10 classes
RESNET18_WS_DR = {1: 11_173_962, 2: 5_664_458, 4: 2_909_706, 8: 1_532_330, 16: 843_642}
XCEPTION = {  # factor: (width ÷ factor, spatial WS, channel WS)
    1: (7_649_898,) * 3, 2: (3_012_458, 7_617_642, 5_683_818), 4: (1_627_626, 7_601_514, 4_700_778),
    8: (1_168_682, 7_593_450, 4_209_258),
}
VSXCEPTION = {
    1: (787_242,) * 3, 2: (232_746, 777_450, 508_714), 4: (103_338, 772_554, 369_450), 8: (61_034, 770_106, 299_818),
}


@pytest.mark.parametrize("r", sorted(RESNET18_WS_DR))
def test_resnet18_counts_match_reference(r):
    assert n_params(create_net("wsresnet18", num_classes=10, ws_factor=r)) == RESNET18_WS_DR[r]


@pytest.mark.parametrize("net,table", [("wsxception_cifar", XCEPTION), ("wsvsxception", VSXCEPTION)])
def test_xception_counts_match_reference(net, table):
    for f, (narrow, spatial, channel) in table.items():
        assert n_params(create_net(net, num_classes=10, width_factor=f)) == narrow
        assert n_params(create_net(net, num_classes=10, spatial_factor=f)) == spatial
        assert n_params(create_net(net, num_classes=10, channel_factor=f)) == channel


def test_narrow_baseline_is_smaller_than_shared():
    for r in (2, 4, 8, 16):
        narrow = n_params(create_net("narrow_resnet18", num_classes=10, factor=r))
        assert narrow == n_params(create_net("wsresnet18", num_classes=10, channel_factor=r))
        assert narrow < RESNET18_WS_DR[r]


def test_tile_is_repeat_not_interleave():
    x = torch.arange(3.0).reshape(1, 3, 1, 1)
    assert tile(x, 2).flatten().tolist() == [0, 1, 2, 0, 1, 2]


def test_depthwise_sharing_uses_kernel_c_mod_C_over_s():
    conv = SharedDepthwiseConv2d(4, s=2, kernel_size=1, padding=0)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, 3.0]).reshape(2, 1, 1, 1))
    y = conv(torch.ones(1, 4, 1, 1))
    assert y.flatten().tolist() == [2.0, 3.0, 2.0, 3.0]


def test_pointwise_sharing_sum_pools_input_groups():
    conv = SharedPointwiseConv2d(4, 1, t=2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([10.0, 1.0]).reshape(1, 2, 1, 1))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1)
    # y = 10 * (x0 + x2) + 1 * (x1 + x3)
    assert conv(x).item() == pytest.approx(10 * (1 + 3) + (2 + 4))


def _randomise_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.mark.parametrize("r", [2, 4])
def test_shared_resnet_equals_narrow_resnet(r):
    torch.manual_seed(r)
    gen = torch.Generator().manual_seed(0)
    shared = create_net("wsresnet18", num_classes=10, ws_factor=r)
    _randomise_bn(shared, gen)
    shared.eval()
    narrow = shared_to_narrow(shared).eval()
    assert n_params(narrow) == n_params(create_net("narrow_resnet18", num_classes=10, factor=r))
    assert n_params(narrow) < n_params(shared)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        ys, yn = shared(x), narrow(x)
    assert torch.allclose(ys, yn, rtol=1e-4, atol=1e-4), (ys - yn).abs().max()
    # the tiled internal tensors really are tilings: stage-4 features of the shared net repeat with period 512/r
    feats = {}
    shared.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("f", o))
    with torch.no_grad():
        shared(x)
    f = feats["f"]
    assert torch.equal(f, tile(f[:, : 512 // r], r))


def test_unshared_shortcut_has_no_narrow_equivalent():
    model = create_net("wsresnet18", num_classes=10, ws_factor=2, share_shortcut=False)
    assert n_params(model) > RESNET18_WS_DR[2]  # the full-width shortcut of the retracted runs
    with pytest.raises(WeightSharingError, match="share_shortcut=False"):
        shared_to_narrow(model)


def test_forward_shapes_of_every_variant():
    x = torch.randn(2, 3, 32, 32)
    for name, kw in [("wsxception_cifar", {"spatial_factor": 2, "channel_factor": 2}), ("wsvsxception", {}),
                     ("wsmobilenetv2", {"dw_factor": 8, "pw_factor": 2}), ("wsmobilenetv2", {"width_factor": 2})]:
        assert create_net(name, num_classes=7, **kw)(x).shape == (2, 7)
    imagenet = create_net("wsresnet18", num_classes=5, ws_factor=2, stem="imagenet")
    assert imagenet(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_mobilenet_depthwise_sharing_saves_only_depthwise_weights():
    base = n_params(create_net("wsmobilenetv2", num_classes=10))
    shared = n_params(create_net("wsmobilenetv2", num_classes=10, dw_factor=2))
    dw = sum(m.weight.numel() for m in create_net("wsmobilenetv2", num_classes=10).modules()
             if isinstance(m, SharedDepthwiseConv2d))
    assert base - shared == dw // 2


def test_bad_factor_is_a_clear_error():
    with pytest.raises(WeightSharingError, match="does not divide the width 128"):
        create_net("wsresnet18", num_classes=10, ws_factor=3)
    with pytest.raises(WeightSharingError, match="positive integer"):
        create_net("wsxception_cifar", num_classes=10, spatial_factor=0)
    assert WeightSharingError.user_facing


def test_recipes_build_the_published_counts():
    """Each CIFAR-10 recipe's net (as ImageClassifier builds it from net / net_kwargs) has the published count (docs/weight_sharing.md#published-numbers)."""
    from pathlib import Path

    import yaml

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    expected = {f"wshare_resnet18_cifar10_r{r}": n for r, n in RESNET18_WS_DR.items()}
    expected.update({"wshare_xception_cifar10_base": XCEPTION[1][0], "wshare_xception_cifar10_ch2": XCEPTION[2][2],
                     "wshare_xception_cifar10_ch4": XCEPTION[4][2], "wshare_xception_cifar10_ch8": XCEPTION[8][2],
                     "wshare_xception_cifar10_dw2": XCEPTION[2][1], "wshare_xception_cifar10_narrow4": XCEPTION[4][0]})
    for name, count in expected.items():
        args = yaml.safe_load((recipes / f"{name}.yaml").read_text())["model"]["init_args"]
        assert n_params(create_net(args["net"], num_classes=10, **args.get("net_kwargs", {}))) == count, name
