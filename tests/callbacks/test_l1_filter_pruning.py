"""L1FilterPruning (Li et al., ICLR 2017): the L1 rule, Table 1 counts through `main.py report`, checkpoints that
reload (fresh process, --ckpt_path, init_from), mid-fit pruning under 2-rank DDP, and clear errors."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn

import lightning.pytorch as pl
from callbacks.efficiency_report import count_macs, count_params
from callbacks.l1_filter_pruning import (
    CHECKPOINT_KEY,
    L1FilterPruning,
    PruningError,
    conv_layers,
    dependency_graph,
    l1_filter_norms,
    layer_widths,
    numbered_conv_layers,
    prune_layer,
    prune_model,
    rebuild_pruned_model,
)
from main import cli_main
from nets import create_net
from tests import fakedata
from tests.ddp import run_ddp

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny at batch 1: one intra-op thread is as fast, and on a shared, oversubscribed machine two
    threads make a CIFAR ResNet-110 forward ~200x slower (7 s instead of 0.03 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- the L1 rule
class TwoConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _known_weights(net: TwoConvNet) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # conv1 filter j has L1 norm proportional to scale[j]: the smallest four are 5, 1, 7, 3
        scale = torch.tensor([4.0, 0.2, 6.0, 0.4, 5.0, 0.1, 8.0, 0.3])
        net.conv1.weight.copy_(torch.ones(8, 3, 3, 3) * scale.view(8, 1, 1, 1))
        net.conv2.weight.copy_(torch.rand(6, 8, 3, 3, generator=g) * 0.01)
        # conv2 filter 0 is large only on input maps conv1 loses (1, 3, 5, 7): kept by the independent ranking,
        # the first to go under the greedy one
        net.conv2.weight[0, [1, 3, 5, 7]] = 1.0
        net.conv2.weight[1] *= 50
        net.conv2.weight[4] *= 20
        for bn in (net.bn1, net.bn2):
            bn.weight.copy_(torch.rand(bn.num_features, generator=g))
            bn.bias.copy_(torch.rand(bn.num_features, generator=g))
            bn.running_mean.copy_(torch.rand(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


def test_removes_exactly_the_smallest_l1_filters_with_bn_channels_and_next_input_kernels():
    net = TwoConvNet()
    _known_weights(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    assert l1_filter_norms(net.conv1).tolist() == pytest.approx((27 * torch.tensor(
        [4.0, 0.2, 6.0, 0.4, 5.0, 0.1, 8.0, 0.3])).tolist())
    removed = prune_layer(net, "conv1", 0.5, x)
    assert removed == [1, 3, 5, 7]
    kept = [0, 2, 4, 6]
    assert net.conv1.weight.shape == (4, 3, 3, 3) and net.bn1.num_features == 4
    assert torch.equal(net.conv1.weight, before["conv1.weight"][kept])
    for p in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(net.bn1, p), before[f"bn1.{p}"][kept]), p
    assert net.conv2.weight.shape == (6, 4, 3, 3)
    assert torch.equal(net.conv2.weight, before["conv2.weight"][:, kept])  # next layer's input kernels
    assert torch.equal(net.bn2.weight, before["bn2.weight"])  # conv2 keeps its filters
    assert not any("mask" in n for n, _ in net.named_buffers())  # physically removed, no masks
    net(x)


def test_independent_and_greedy_ranking_of_consecutive_layers():
    ratios = {"conv1": 0.5, "conv2": 0.5}
    x = torch.randn(2, 3, 8, 8)
    indep, greedy = TwoConvNet(), TwoConvNet()
    _known_weights(indep)
    _known_weights(greedy)
    w2 = indep.conv2.weight.detach().abs()
    r_indep = prune_model(indep, ratios, x, ranking="independent")
    r_greedy = prune_model(greedy, ratios, x, ranking="greedy")
    assert r_indep["conv1"] == r_greedy["conv1"] == [1, 3, 5, 7]
    # independent: scores on all input maps; greedy: without the maps conv1 lost
    expect_indep = sorted(torch.sort(w2.sum(dim=(1, 2, 3)), stable=True).indices[:3].tolist())
    expect_greedy = sorted(torch.sort(w2[:, [0, 2, 4, 6]].sum(dim=(1, 2, 3)), stable=True).indices[:3].tolist())
    assert r_indep["conv2"] == expect_indep and r_greedy["conv2"] == expect_greedy
    assert 0 not in expect_indep and 0 in expect_greedy
    assert indep.fc.in_features == greedy.fc.in_features == 3


def test_cifar_resnet_prunes_first_convs_only_and_refuses_residual_convs():
    net = create_net("resnet20", 10)
    x = torch.zeros(1, 3, 32, 32)
    prunable = conv_layers(net, x)
    assert prunable == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    numbered = numbered_conv_layers(net)
    assert numbered[0] == "conv1" and numbered[2 * 4 - 1] == "layer2.0.conv1"  # block 4 = layer 8
    with pytest.raises(PruningError, match="channel-padding"):
        prune_layer(net, "layer1.0.conv2", 0.5, x)
    with pytest.raises(PruningError, match="channel-padding"):
        prune_layer(net, "layer1.0.conv2", 0.5, x, coupled=True)


def test_torchvision_mobilenet_and_resnet_and_rebuild_of_a_users_model():
    x = torch.randn(2, 3, 16, 16)
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10)
    removed = prune_model(mobilenet, {"features.*.conv.0.0": 0.5}, x)
    assert len(removed) == 16  # features.2..17: the 1x1 expansions (features.1's conv.0.0 is depthwise)
    assert mobilenet.features[2].conv[0][0].out_channels == 48
    assert mobilenet.features[2].conv[1][0].out_channels == 48  # its depthwise conv follows
    assert mobilenet.features[2].conv[2].in_channels == 48
    mobilenet.eval()
    y = mobilenet(x)
    # a user's own fresh model takes the pruned widths and weights
    fresh = torchvision.models.mobilenet_v2(num_classes=10)
    rebuild_pruned_model(fresh, layer_widths(mobilenet), x, load_weights=False)
    fresh.load_state_dict(mobilenet.state_dict())
    assert torch.equal(fresh.eval()(x), y)

    resnet = torchvision.models.resnet18(num_classes=10)
    graph = dependency_graph(resnet, x)
    assert "layer3.0.downsample.0" not in conv_layers(resnet, x) and "layer3.0.conv1" in conv_layers(resnet, x)
    with pytest.raises(PruningError, match="coupled"):
        prune_layer(resnet, "layer3.0.downsample.0", 0.2, x, graph=graph)
    expect = sorted(torch.sort(l1_filter_norms(resnet.layer3[0].downsample[0]), stable=True).indices[:52].tolist())
    removed = prune_layer(resnet, "layer3.0.downsample.0", 0.2, x, coupled=True, graph=graph)  # ResNet-34-C
    assert removed == expect
    assert [b.conv2.out_channels for b in resnet.layer3] == [204, 204]
    assert resnet.layer3[1].conv1.in_channels == 204 and resnet.layer4[0].conv1.in_channels == 204
    assert resnet.layer3[0].conv1.out_channels == 256  # first convs untouched
    resnet(x)


# ---------------------------------------------------------------------------------------------- Table 1 counts
# MACs and parameters as printed in Table 1 of Li et al. 2017 (li2017 convention). The VGG-16 and ResNet-56 rows
# are in docs/pruning.md#published-numbers; the ResNet-110 and ResNet-34 rows are the paper's Table 1 (arXiv:1608.08710), read
# from a copy of its text.
REPORTED = [  # recipe, MACs, params: checked through `main.py report`, rounded to the printed precision
    ("prune_vgg16_cifar10_a", "2.06e8", "5.4e6"),
    ("prune_resnet56_cifar10_a", "1.12e8", "7.7e5"),
    ("prune_resnet56_cifar10_b", "9.09e7", "7.3e5"),
]
OTHER_ROWS = [  # preset, net, input size, MACs, params: rounded or, where the paper truncated, cut off
    ("resnet110_a", "resnet110", 32, "2.13e8", "1.68e6"),
    ("resnet110_b", "resnet110", 32, "1.55e8", "1.16e6"),
    ("resnet34_a", "torchvision.resnet34", 224, "3.08e9", "1.99e7"),  # ours 19,962,560: the paper truncated
    ("resnet34_b", "torchvision.resnet34", 224, "2.76e9", "1.93e7"),
    ("resnet34_c", "torchvision.resnet34", 224, "3.37e9", "2.01e7"),
]
SCRATCH_OF = {"vgg16_a": "scratch_vgg16_cifar10_a", "resnet56_b": "scratch_resnet56_cifar10_b",
              "resnet110_b": "scratch_resnet110_cifar10_b"}


def _matches(ours: float, printed: str, rounded_only: bool) -> bool:
    """ours equals the printed value at its precision: rounded, or (where the paper truncated) cut off."""
    mantissa, exponent = printed.split("e")
    unit = 10.0 ** (int(exponent) - (len(mantissa.replace(".", "")) - 1))
    value = float(printed)
    rounded = abs(ours - value) <= unit / 2
    return rounded if rounded_only else rounded or value <= ours < value + unit


def _check_scratch(preset: str, macs: float, params: int) -> None:
    """The scratch recipe builds the pruned architecture without the callback: same counts."""
    if preset not in SCRATCH_OF:
        return
    init = yaml.safe_load((REPO / "recipes" / f"{SCRATCH_OF[preset]}.yaml").read_text())["model"]["init_args"]
    net = create_net(init["net"], 10, **init["net_kwargs"])
    assert count_params(net, "li2017") == params
    assert count_macs(net, torch.zeros(1, 3, 32, 32), "li2017") == macs


@pytest.mark.parametrize("recipe,macs,params", REPORTED, ids=[r[0] for r in REPORTED])
def test_report_counts_equal_table1(recipe, macs, params, tmp_path, capsys):
    out = tmp_path / "report.json"
    cli_main(["report", "--config", str(REPO / "recipes" / f"{recipe}.yaml"), "--json", str(out),
              "--convention", "li2017", f"--runs_root={tmp_path}"])
    got = json.loads(out.read_text())
    with capsys.disabled():
        print(f"\n{recipe}: MACs {got['macs']:.4g} (paper {macs}), params {got['params']:,} (paper {params})")
    assert _matches(got["macs"], macs, rounded_only=True), (got["macs"], macs)
    assert _matches(got["params"], params, rounded_only=True), (got["params"], params)
    _check_scratch(recipe.split("_", 1)[1].replace("_cifar10", ""), got["macs"], got["params"])


def test_resnet110_and_resnet34_presets_give_table1_counts(capsys):
    """The presets the other prune recipes use (the recipes themselves run in the smoke harness)."""
    bases: dict[str, nn.Module] = {}
    rows = []
    for preset, net, size, macs, params in OTHER_ROWS:
        if net not in bases:
            bases[net] = create_net(net, 1000 if size == 224 else 10)
        module = _Module.wrapping(copy.deepcopy(bases[net]), size)
        L1FilterPruning(preset=preset).apply_structure(module)
        x = torch.zeros(1, 3, size, size)
        got_macs, got_params = count_macs(module.net, x, "li2017"), count_params(module.net, "li2017")
        rows.append(f"{preset}: MACs {got_macs:.4g} (paper {macs}), params {got_params:,} (paper {params})")
        assert _matches(got_macs, macs, rounded_only=False), rows[-1]
        assert _matches(got_params, params, rounded_only=False), rows[-1]
        _check_scratch(preset, got_macs, got_params)
    with capsys.disabled():
        print("\n" + "\n".join(rows))


# ---------------------------------------------------------------------------------------------- fit, reload, resume
def _write_recipe(tmp_path: Path, data_dir: str, **callback_args) -> Path:
    args = {"ratios": {"layer1.*.conv1": 0.5, "layer2.*.conv1": 0.3}, "skip": [8], **callback_args}
    recipe = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "limit_train_batches": 2,
                    "limit_val_batches": 1,
                    "callbacks": [{"class_path": "callbacks.l1_filter_pruning.L1FilterPruning", "init_args": args}]},
        "model": {"class_path": "modules.image_classifier.ImageClassifier",
                  "init_args": {"net": "resnet20", "net_kwargs": {"shortcut": "A"}, "log_images": False,
                                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}}}},
        "data": {"class_path": "datamodules.cifar.CIFAR10DataModule",
                 "init_args": {"data_dir": data_dir, "batch_size": 4, "num_workers": 0}},
    }
    path = tmp_path / "prune_tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _pruner(cli) -> L1FilterPruning:
    return next(c for c in cli.trainer.callbacks if isinstance(c, L1FilterPruning))


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """One short pruning fit (resnet20, first convs of stages 1-2, layer 8 skipped) shared by the tests below."""
    root = tmp_path_factory.mktemp("pruned_run")
    data_dir = fakedata.write_cifar10(str(root / "data"))
    recipe = _write_recipe(root, data_dir)
    cli = cli_main(["fit", "--config", str(recipe), f"--runs_root={root / 'runs'}"])
    ckpt = root / "runs" / "prune_tiny" / "checkpoints" / "last.ckpt"
    return {"root": root, "recipe": recipe, "cli": cli, "ckpt": ckpt, "data_dir": data_dir}


EXPECTED_BLOCK_WIDTHS = [8, 8, 8, 32, 22, 22, 64, 64, 64]  # layer 8 = layer2.0.conv1 skipped


def test_fit_prunes_in_setup_and_stores_the_structure(pruned_run):
    model = pruned_run["cli"].model
    assert [b.conv1.out_channels for s in (model.net.layer1, model.net.layer2, model.net.layer3) for b in s] \
        == EXPECTED_BLOCK_WIDTHS
    assert model.hparams.net_kwargs == {"shortcut": "A", "block_widths": EXPECTED_BLOCK_WIDTHS}
    ckpt = torch.load(pruned_run["ckpt"], weights_only=False)
    state = ckpt[CHECKPOINT_KEY]
    assert state["pruned"] and state["target"] == "net" and state["example_input_shape"] == [1, 3, 32, 32]
    assert state["widths"]["layer2.1.conv1"] == 22 and "layer2.0.conv1" not in state["removed"]
    assert ckpt["hyper_parameters"]["net_kwargs"]["block_widths"] == EXPECTED_BLOCK_WIDTHS
    torch.load(pruned_run["ckpt"], weights_only=True)  # LightningCLI re-reads hparams with weights_only=True


def test_pruned_checkpoint_reloads_in_a_fresh_process_with_identical_outputs(pruned_run):
    model = pruned_run["cli"].model.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = pruned_run["root"] / "io.pt"
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, out)
    script = textwrap.dedent(f"""
        import torch
        from modules.image_classifier import ImageClassifier
        from nets import create_net
        from callbacks.l1_filter_pruning import rebuild_pruned_model
        io = torch.load({str(out)!r})
        m = ImageClassifier.load_from_checkpoint({str(pruned_run['ckpt'])!r}, map_location="cpu").eval()
        assert torch.equal(m(io["x"]), io["y"]), "load_from_checkpoint"
        own = rebuild_pruned_model(create_net("resnet20", 10), {str(pruned_run['ckpt'])!r}).eval()
        assert torch.equal(own(io["x"]), io["y"]), "rebuild_pruned_model"
        print("IDENTICAL")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "IDENTICAL" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("ckpt_arg", ["last", "file"])
def test_ckpt_path_resume_keeps_the_pruned_structure(pruned_run, ckpt_arg, tmp_path):
    """`last` builds the wide net from the recipe (the callback rebuilds it in setup from the checkpoint); a file
    path makes LightningCLI rebuild the narrow net from the saved hparams (the callback must not prune again)."""
    runs = tmp_path / "runs"  # a copy: the shared run stays as it was
    shutil.copytree(pruned_run["root"] / "runs", runs)
    saved = torch.load(pruned_run["ckpt"], weights_only=False)
    ckpt = "last" if ckpt_arg == "last" else str(runs / "prune_tiny" / "checkpoints" / "last.ckpt")
    cli = cli_main(["fit", "--config", str(pruned_run["recipe"]), f"--runs_root={runs}", f"--ckpt_path={ckpt}",
                    "--trainer.max_epochs=2", "--trainer.callbacks+=tests.probes.LossRecorder"])
    assert cli.trainer.global_step == 2 * saved["global_step"]  # continued for one more epoch
    assert layer_widths(cli.model.net) == saved[CHECKPOINT_KEY]["widths"]
    assert _pruner(cli).state["removed"] == saved[CHECKPOINT_KEY]["removed"]
    recorder = next(c for c in cli.trainer.callbacks if type(c).__name__ == "LossRecorder")
    from tests.probes import params_digest

    fresh = create_net("resnet20", 10)
    rebuild_pruned_model(fresh, saved, load_weights=False)
    assert layer_widths(fresh) == layer_widths(cli.model.net)
    assert recorder.start_digest is not None
    assert params_digest(cli.model) != recorder.start_digest  # trained on from the restored weights


def test_init_from_a_pruned_checkpoint_restores_before_loading(pruned_run, tmp_path):
    cli = cli_main(["fit", "--config", str(pruned_run["recipe"]), f"--runs_root={tmp_path}",
                    f"--init_from={pruned_run['ckpt']}", "--trainer.max_epochs=0"])
    saved = torch.load(pruned_run["ckpt"], weights_only=False)
    for k, v in saved["state_dict"].items():
        assert torch.equal(cli.model.state_dict()[k], v), k
    assert _pruner(cli).state["removed"] == saved[CHECKPOINT_KEY]["removed"]  # not pruned a second time


# ---------------------------------------------------------------------------------------------- DDP
class DDPPruneProbe(pl.Callback):
    """Per rank: widths and parameter digest when pruned, at the end, and whether DDP/optimizer hold the pruned
    parameters."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.after_prune: str | None = None

    @staticmethod
    def _digest(module: nn.Module) -> str:
        h = hashlib.sha256()
        for name, t in sorted(module.state_dict().items()):
            h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            self.after_prune = self._digest(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        params = {id(p) for p in pl_module.parameters()}
        ddp = trainer.strategy.model
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({
                "widths": layer_widths(pl_module.net),
                "after_prune": self.after_prune,
                "end": self._digest(pl_module),
                "ddp_wraps_pruned": {id(p) for p in ddp.parameters()} == params,
                "optimizer_holds_pruned": {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
                == params,
            }, f)


def test_ddp_two_ranks_prune_mid_fit(tmp_path):
    probe = tmp_path / "probe"
    run_ddp(["fit", "--config", "recipes/quickstart.yaml", "--trainer.max_epochs=2",
             "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--model.init_args.log_images=false",
             "--trainer.logger=false", "--trainer.callbacks+=callbacks.l1_filter_pruning.L1FilterPruning",
             '--trainer.callbacks.ratios={"1": 0.5}', "--trainer.callbacks.prune_at_epoch=1",
             "--trainer.callbacks+=tests.callbacks.test_l1_filter_pruning.DDPPruneProbe",
             f"--trainer.callbacks.out_dir={probe}"], tmp_path / "runs")
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["widths"]["features.0"] == 16 and r["ddp_wraps_pruned"] and r["optimizer_holds_pruned"]
        assert r["after_prune"] != r["end"]  # the pruned parameters were trained
    assert ranks[0]["after_prune"] == ranks[1]["after_prune"]  # same filters removed on both ranks
    assert ranks[0]["end"] == ranks[1]["end"]  # gradients still synchronised after re-wrapping
    ckpt = torch.load(tmp_path / "runs" / "quickstart" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt[CHECKPOINT_KEY]["widths"]["features.0"] == 16


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, True])
def test_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        L1FilterPruning(ratios={"layer1.*.conv1": ratio})


def test_unknown_layer_preset_or_skip_and_too_large_ratios_are_refused():
    x = torch.zeros(1, 3, 32, 32)
    net = create_net("resnet20", 10)
    with pytest.raises(PruningError, match="'layer1.0.conv9' is not a prunable conv.*Did you mean"):
        prune_layer(net, "layer1.0.conv9", 0.5, x)
    with pytest.raises(PruningError, match="'layer9.*' is not a prunable conv"):
        prune_model(net, {"layer9.*": 0.5}, x)
    with pytest.raises(PruningError, match="skip entry 99 does not exist"):
        prune_model(net, {"layer1.*.conv1": 0.5}, x, skip=[99])
    with pytest.raises(PruningError, match="remove every filter of 'layer1.0.conv1'"):
        prune_model(net, {"layer1.*.conv1": 0.95}, x)
    assert layer_widths(net) == layer_widths(create_net("resnet20", 10))  # nothing changed on error
    with pytest.raises(PruningError, match="unknown preset 'resnet56a'.*resnet56_a"):
        L1FilterPruning(preset="resnet56a")
    module = _Module("resnet20")
    with pytest.raises(PruningError, match="preset 'resnet56_a' is written for a net with 55 conv layers"):
        L1FilterPruning(preset="resnet56_a").apply_structure(module)


class _Module(pl.LightningModule):
    def __init__(self, net: str, net_kwargs: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = create_net(net, 10, **(net_kwargs or {}))
        self.example_input_array = torch.zeros(1, 3, 32, 32)

    @classmethod
    def wrapping(cls, net: nn.Module, size: int) -> _Module:
        module = cls("resnet20")
        module.net = net
        module.example_input_array = torch.zeros(1, 3, size, size)
        return module

    def forward(self, x):
        return self.net(x)


def test_checkpoint_of_another_architecture_is_refused(pruned_run):
    ckpt = torch.load(pruned_run["ckpt"], weights_only=False)
    cb = L1FilterPruning(ratios={"layer1.*.conv1": 0.5})
    with pytest.raises(PruningError, match="another architecture"):
        cb.restore_structure(_Module("resnet32"), ckpt)
    with pytest.raises(PruningError, match="another architecture"):
        rebuild_pruned_model(torchvision.models.resnet18(), ckpt)


def test_apply_structure_is_idempotent_and_unpruned_checkpoints_are_left_to_setup():
    module = _Module("resnet56", {"shortcut": "A"})
    cb = L1FilterPruning(preset="resnet56_b")
    cb.restore_structure(module, {"state_dict": module.state_dict()})  # a baseline checkpoint: nothing to do
    assert not cb.pruned
    cb.apply_structure(module)
    widths = layer_widths(module.net)
    cb.apply_structure(module)
    assert layer_widths(module.net) == widths
    assert module.hparams.net_kwargs["block_widths"][:9] == [6] * 7 + [16, 16]
    # a module built from already-pruned hparams (e.g. re-read from a checkpoint) is not pruned again
    narrow = _Module("resnet56", dict(module.hparams.net_kwargs))
    cb2 = L1FilterPruning(preset="resnet56_b")

    class _Trainer:
        ckpt_path = None

    with pytest.warns(UserWarning, match="already pruned"):
        cb2.setup(_Trainer(), narrow, "fit")
    assert layer_widths(narrow.net) == widths and cb2.pruned
    assert math.isclose(sum(p.numel() for p in narrow.parameters()), sum(p.numel() for p in module.parameters()))


def test_resuming_a_one_shot_run_from_an_unpruned_checkpoint_is_refused():
    """The callback's load pre-hook sees every state dict Lightning loads (``ckpt_path=``): an unpruned one cannot
    resume a one-shot pruning run, a pruned one narrows a fresh model first."""
    baseline = _Module("resnet20").state_dict()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module = _Module("resnet20")
    cb = L1FilterPruning(ratios={"layer1.*.conv1": 0.5})
    cb.setup(trainer, module, "fit")
    assert module.net.layer1[0].conv1.out_channels == 8
    with pytest.raises(PruningError, match="does not fit.*load its weights into the model before calling fit"):
        module.load_state_dict(baseline)
    later = L1FilterPruning(ratios={"layer1.*.conv1": 0.5}, prune_at_epoch=3)
    fresh = _Module("resnet20")
    later.setup(trainer, fresh, "fit")  # saved before the pruning epoch: nothing to do yet
    fresh.load_state_dict(baseline)
    assert not later.pruned and fresh.net.layer1[0].conv1.out_channels == 16
    fresh.load_state_dict(module.state_dict())  # a checkpoint saved after pruning: narrowed, then loaded
    assert later.pruned and layer_widths(fresh.net) == layer_widths(module.net)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), module.state_dict().values()))
    later.teardown(trainer, fresh, "fit")
