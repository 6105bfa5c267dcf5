"""Tests of the nets/ package: every registered network, the registry, and the published MAC/parameter counts.

Counts use callbacks/efficiency_report.py on one 32x32 input. Figures measured when these tests were written:

=====================  ==========  ==========  ===============================
model                  MACs        params      published (li2017, Table 1/2)
=====================  ==========  ==========  ===============================
VGG-16                 313,463,808 14,977,728  3.13e8 / 1.5e7
VGG-16-A               206,279,680 5,390,176   2.06e8 (-34.2%) / 5.4e6 (-64.0%)
ResNet-56 (option A)   125,485,696 848,944     1.25e8 / 8.5e5
ResNet-56-A            112,435,840 769,456     1.12e8 (-10.4%) / 7.7e5 (-9.4%)
ResNet-56-B            90,907,264  732,016     9.09e7 (-27.6%) / 7.3e5 (-13.7%)
=====================  ==========  ==========  ===============================

ResNet-56-B's parameter reduction measures 13.77%; the paper prints 13.7% (docs/pruning.md#counting-conventions: truncated).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nets
from callbacks.efficiency_report import count_macs, count_params
from nets import create_net, list_nets, register_net
from nets.resnet10 import RESNET10_WIDTHS
from nets.resnet_cifar import (
    RESNET56_A_BLOCK_WIDTHS,
    RESNET56_B_BLOCK_WIDTHS,
    BasicBlock,
    CifarResNet,
    ZeroPadShortcut,
)
from nets.vgg_cifar import VGG16_A_CFG

X32 = torch.zeros(1, 3, 32, 32)
EXPECTED_NAMES = {
    "vgg16",
    "vgg9",
    "vgg_bc",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "wrn56_2",
    "wrn56_4",
    "wrn56_8",
    "small_cnn",
    *RESNET10_WIDTHS,
}
ALL_NAMES = list_nets() + ["torchvision.resnet18"]
SMALL_INPUT_KWARGS = {"vit_tiny_16": {"image_size": 32}}  # nets built for a fixed input size, set to 32x32 here


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def round_sig(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` significant figures (the paper's printed precision)."""
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


# ----------------------------------------------------------------------------------------------- every network
def test_registry_lists_every_family() -> None:
    assert EXPECTED_NAMES <= set(list_nets())
    assert list_nets() == sorted(list_nets())
    assert "torchvision.resnet18" in list_nets(include_torchvision=True)
    assert set(nets.__all__) == {"create_net", "list_nets", "register_net"}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_backward(name: str) -> None:
    model = create_net(name, num_classes=7, **SMALL_INPUT_KWARGS.get(name, {}))
    assert isinstance(model, nn.Module)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_in_channels_1(name: str) -> None:
    model = create_net(name, num_classes=5, in_channels=1, **SMALL_INPUT_KWARGS.get(name, {})).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 5)


# ----------------------------------------------------------------------------------------------- registry
def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="resnet57") as info:
        create_net("resnet57", num_classes=10)
    assert "resnet56" in str(info.value)
    with pytest.raises(ValueError, match="torchvision.resnet19") as info:
        create_net("torchvision.resnet19", num_classes=10)
    assert "torchvision.resnet18" in str(info.value)


def test_torchvision_via_registry() -> None:
    model = create_net("torchvision.resnet18", num_classes=4, in_channels=1)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert model.fc.out_features == 4
    mobilenet = create_net("torchvision.mobilenet_v2", num_classes=3, in_channels=2)
    assert mobilenet.features[0][0].in_channels == 2
    with pytest.raises(ValueError, match="weights"):
        create_net("torchvision.resnet18", num_classes=4, weights="DEFAULT")


def test_register_net_rejects_clashes() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_net("resnet56")
        def other(num_classes: int, in_channels: int = 3) -> nn.Module:
            return nn.Identity()

    with pytest.raises(ValueError, match="reserved"):
        register_net("torchvision.mine")


def test_kwargs_reach_the_constructor() -> None:
    model = create_net("resnet20", num_classes=10, width_multiplier=2, shortcut="B")
    assert model.conv1.out_channels == 32 and model.fc.in_features == 128
    assert isinstance(model.layer2[0].shortcut, nn.Sequential)


# ----------------------------------------------------------------------------------------------- VGG
def test_vgg16_counts() -> None:
    model = create_net("vgg16", num_classes=10)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert model.classifier[1].in_features == 512 and isinstance(model.classifier[2], nn.BatchNorm1d)
    macs, params = count_macs(model, X32), count_params(model, "li2017")
    assert round_sig(macs, 3) == 3.13e8
    assert round_sig(params, 2) == 1.5e7


def test_vgg16_per_layer_table() -> None:
    """Li et al. 2017, Table 2 (docs/pruning.md#published-numbers), two significant figures."""
    model = create_net("vgg16", num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    per_layer: list[tuple[nn.Module, torch.Size]] = []
    handles = [m.register_forward_hook(lambda m, i, o: per_layer.append((m, o.shape))) for m in layers]
    with torch.no_grad():
        model.eval()(X32)
    for h in handles:
        h.remove()
    table = {
        1: (1.8e6, 1.7e3), 2: (3.8e7, 3.7e4), 3: (1.9e7, 7.4e4), 4: (3.8e7, 1.5e5), 5: (1.9e7, 2.9e5),
        6: (3.8e7, 5.9e5), 7: (3.8e7, 5.9e5), 8: (1.9e7, 1.2e6), 9: (3.8e7, 2.4e6), 10: (3.8e7, 2.4e6),
        11: (9.4e6, 2.4e6), 12: (9.4e6, 2.4e6), 13: (9.4e6, 2.4e6), 14: (2.6e5, 2.6e5), 15: (5.1e3, 5.1e3),
    }  # fmt: skip
    assert len(per_layer) == len(table)
    for index, (module, shape) in enumerate(per_layer, start=1):
        if isinstance(module, nn.Conv2d):
            layer_macs = shape.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        else:
            layer_macs = shape.numel() * module.in_features
        assert (round_sig(layer_macs, 2), round_sig(module.weight.numel(), 2)) == table[index], index


def test_vgg16_pruned_a_counts() -> None:
    base = create_net("vgg16", num_classes=10)
    pruned = create_net("vgg16", num_classes=10, cfg=VGG16_A_CFG)
    assert pruned.classifier[1].in_features == 256  # the first linear follows the last conv width
    macs, params = count_macs(pruned, X32), count_params(pruned, "li2017")
    assert round_sig(macs, 3) == 2.06e8
    assert round_sig(params, 2) == 5.4e6
    assert abs(100 * (1 - macs / count_macs(base, X32)) - 34.2) < 0.1
    assert abs(100 * (1 - params / count_params(base, "li2017")) - 64.0) < 0.1


def test_vgg9_and_vgg_bc_layouts() -> None:
    vgg9 = create_net("vgg9", num_classes=10)
    assert sum(isinstance(m, nn.Conv2d) for m in vgg9.features) == 7
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg9.features) == 7
    linears = [m for m in vgg9.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256 * 4 * 4, 256), (256, 10)]
    assert isinstance(vgg9.classifier[2], nn.BatchNorm1d)

    bc = create_net("vgg_bc", num_classes=10)
    assert [m.out_channels for m in bc.features if isinstance(m, nn.Conv2d)] == [128, 128, 256, 256, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in bc.features) == 3
    linears = [m for m in bc.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512 * 16, 1024), (1024, 1024), (1024, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bc.classifier) == 2


def test_vgg_bad_cfg() -> None:
    with pytest.raises(ValueError, match="cfg"):
        create_net("vgg16", num_classes=10, cfg=[64, "X", 128])
    with pytest.raises(ValueError, match="cfg"):
        create_net("vgg16", num_classes=10, cfg=["M"])


# ----------------------------------------------------------------------------------------------- CIFAR ResNets
@pytest.mark.parametrize(
    ("block_widths", "macs_3sf", "params_2sf", "mac_cut", "param_cut"),
    [
        (None, 1.25e8, 8.5e5, None, None),
        (RESNET56_A_BLOCK_WIDTHS, 1.12e8, 7.7e5, 10.4, 9.4),
        (RESNET56_B_BLOCK_WIDTHS, 9.09e7, 7.3e5, 27.6, 13.7),
    ],
    ids=["resnet56", "resnet56_A", "resnet56_B"],
)
def test_resnet56_counts(block_widths, macs_3sf, params_2sf, mac_cut, param_cut) -> None:
    model = create_net("resnet56", num_classes=10, block_widths=block_widths)
    macs, params = count_macs(model, X32), count_params(model, "li2017")
    assert round_sig(macs, 3) == macs_3sf
    assert round_sig(params, 2) == params_2sf
    if mac_cut is not None:
        base = create_net("resnet56", num_classes=10)
        assert abs(100 * (1 - macs / count_macs(base, X32)) - mac_cut) < 0.1
        # The paper truncates some percentages (docs/pruning.md#counting-conventions): allow 0.1 point either way.
        assert abs(100 * (1 - params / count_params(base, "li2017")) - param_cut) < 0.1 + 1e-9


def test_block_widths_rebuild_first_convs_only() -> None:
    model = create_net("resnet56", num_classes=10, block_widths=RESNET56_B_BLOCK_WIDTHS)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    assert [b.conv1.out_channels for b in blocks] == RESNET56_B_BLOCK_WIDTHS
    assert [b.conv2.out_channels for b in blocks] == [16] * 9 + [32] * 9 + [64] * 9
    assert all(b.conv2.in_channels == b.conv1.out_channels == b.bn1.num_features for b in blocks)


def test_block_widths_errors() -> None:
    with pytest.raises(ValueError, match=r"block_widths.*27.*got 26"):
        create_net("resnet56", num_classes=10, block_widths=RESNET56_A_BLOCK_WIDTHS[:-1])
    with pytest.raises(ValueError, match="block_widths"):
        create_net("resnet20", num_classes=10, block_widths=[16, 16, 0, 32, 32, 32, 64, 64, 64])
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=51)
    with pytest.raises(ValueError, match="shortcut"):
        create_net("resnet20", num_classes=10, shortcut="C")


def test_resnet_structure_and_defaults() -> None:
    r56 = create_net("resnet56", num_classes=10)
    assert r56.conv1.out_channels == 16 and r56.fc.in_features == 64
    assert [len(s) for s in (r56.layer1, r56.layer2, r56.layer3)] == [9, 9, 9]
    assert r56.shortcut_kind == "A" and isinstance(r56.layer2[0].shortcut, ZeroPadShortcut)
    assert sum(isinstance(m, nn.Conv2d) for m in r56.modules()) == 55  # 6n+1 convs + FC = 56 layers
    assert len(create_net("resnet110", num_classes=10).layer3) == 18
    for k in (2, 4, 8):
        wrn = create_net(f"wrn56_{k}", num_classes=10)
        assert wrn.shortcut_kind == "B"
        assert (wrn.conv1.out_channels, wrn.fc.in_features) == (16 * k, 64 * k)
        assert isinstance(wrn.layer3[0].shortcut, nn.Sequential)


def test_option_a_is_parameter_free_and_b_projects() -> None:
    a = create_net("resnet56", num_classes=10, shortcut="A")
    b = create_net("resnet56", num_classes=10, shortcut="B")
    for model in (a, b):
        for name, module in model.named_modules():
            if isinstance(module, BasicBlock) and module.shortcut is not None:
                same = module.conv1.stride == (1, 1) and module.conv1.in_channels == module.conv2.out_channels
                n_params = sum(p.numel() for p in module.shortcut.parameters())
                if model is a or same:
                    assert n_params == 0, name
                else:
                    assert n_params > 0 and isinstance(module.shortcut[0], nn.Conv2d), name
    # li2017 leaves the 1x1 projections out, so A and B count the same; the full parameter count differs.
    assert count_macs(a, X32) == count_macs(b, X32)
    assert count_params(a, "li2017") == count_params(b, "li2017")
    assert count_params(b, "all") - count_params(a, "all") == (16 * 32 + 32 * 64) + 2 * (32 + 64)

    shortcut = a.layer2[0].shortcut
    x = torch.randn(2, 16, 32, 32)
    y = shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


@pytest.mark.parametrize("kind", ["A", "B", "none"])
def test_block_residual(kind: str) -> None:
    model = create_net("resnet20", num_classes=10, shortcut=kind).eval()
    for block in (model.layer1[1], model.layer2[0]):  # identity-shaped and downsampling blocks
        x = torch.rand(2, block.conv1.in_channels, 16, 16)
        with torch.no_grad():
            branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
            expected = torch.relu(branch if kind == "none" else branch + block.shortcut(x))
            torch.testing.assert_close(block(x), expected)
            block.conv2.weight.zero_()  # residual branch -> bn2(0) = 0 in eval mode with fresh BN
            out = block(x)
        if kind == "none":
            assert block.shortcut is None and not out.any()
        else:
            assert out.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- DiSK ResNet10
# Measured MACs, `all` convention, 32x32 input, 100 classes (torch flop counter / 2, 1x1 projections included):
# xxxs 771,648; xxs 2,020,928; xs 2,862,208; s 4,159,744; m 16,183,808; l 63,824,896; resnet10 253,478,912.
RESNET10_PUBLISHED_MACS = {
    "resnet10_xxxs": 0.8e6,
    "resnet10_xxs": 2e6,
    "resnet10_xs": 2.86e6,
    "resnet10_s": 4e6,
    "resnet10_m": 16e6,
    "resnet10_l": 64e6,
    "resnet10": 253e6,
}


@pytest.mark.parametrize("name", list(RESNET10_PUBLISHED_MACS))
def test_resnet10_macs(name: str) -> None:
    model = create_net(name, num_classes=100)
    macs = count_macs(model, X32, convention="all")
    published = RESNET10_PUBLISHED_MACS[name]
    assert abs(macs / published - 1) < 0.15, (name, macs)
    widths = RESNET10_WIDTHS[name]
    assert [getattr(model, f"layer{i}")[0].conv2.out_channels for i in (1, 2, 3, 4)] == list(widths)
    assert model.conv1.stride == (1, 1) and not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet10_projection_shortcuts() -> None:
    model = create_net("resnet10_m", num_classes=100)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)  # 16 -> 16, stride 1
    for stage in (model.layer2, model.layer3, model.layer4):
        conv = stage[0].shortcut[0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)


# ----------------------------------------------------------------------------------------------- small CNN
def test_small_cnn_on_digits() -> None:
    model = create_net("small_cnn", num_classes=10, in_channels=1)
    out = model(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [32, 64]
    assert count_macs(model, torch.zeros(1, 1, 8, 8)) == 1 * 32 * 9 * 64 + 32 * 64 * 9 * 64 + 64 * 10
