"""benchmarks/prune_sensitivity.py on a tiny untrained ResNet-20 checkpoint and a tiny glyphs split."""

from __future__ import annotations

import json

import torch

import lightning.pytorch as pl
from benchmarks.prune_sensitivity import evaluate, load_model, main
from modules.image_classifier import ImageClassifier


def _checkpoint(path) -> str:
    torch.manual_seed(0)
    module = ImageClassifier(net="resnet20", num_classes=10, input_shape=(1, 32, 32), log_images=False)
    with torch.no_grad():  # hand-set BN statistics so the net is not a constant function of its input
        for m in module.net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    return str(path)


def test_sensitivity_curves_shape_ratio_zero_and_png(tmp_path):
    torch.set_num_threads(1)
    ckpt = _checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "sens.json"
    result = main(["--ckpt", ckpt, "--layers", "layer1.0.conv1", "6", "--ratios", "0", "0.5",
                   "--test-size", "40", "--batch-size", "20", "--out", str(out), "--no-progress"])
    # paper layer 6 is the first conv of block 3 (layer1.2.conv1)
    assert result["layers"] == ["layer1.0.conv1", "layer1.2.conv1"]
    assert set(result["curves"]) == set(result["layers"])
    assert all(len(c) == 2 for c in result["curves"].values())
    assert all(0.0 <= a <= 100.0 for c in result["curves"].values() for a in c)
    assert result["kept"]["layer1.0.conv1"] == [16, 8]
    # ratio 0 is the unpruned model's accuracy, exactly
    from datamodules.glyphs import GlyphsDataModule

    dm = GlyphsDataModule(batch_size=20, train_size=1, test_size=40)
    dm.setup("test")
    unpruned = evaluate(load_model(ckpt).net, dm.test_dataloader(), progress=False)
    assert result["baseline_acc"] == unpruned
    assert all(c[0] == unpruned for c in result["curves"].values())
    assert out.with_suffix(".png").stat().st_size > 0
    assert json.loads(out.read_text())["ratios"] == [0.0, 0.5]
