"""Hybrid edge/cloud router: proxy labels, routing under the coverage budget, accuracy, MACs and the coverage
hinge equal their definitions on hand-built values; both training schedules run and log; bad input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from main import load_weights
from modules.constraints import Constraint, ConstraintError
from modules.disk import TeacherCheckpointError
from modules.hybrid_router import (HybridModel, entropy, hybrid_accuracy, hybrid_macs, proxy_labels, route,
                                   router_loss)
from modules.image_classifier import ImageClassifier


def test_proxy_labels_edge_wrong_and_cloud_right():
    y = torch.tensor([0, 1, 2, 0])
    edge = F.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()  # right, wrong, wrong, wrong
    cloud = F.one_hot(torch.tensor([1, 1, 0, 0]), 3).float()  # wrong, right, wrong, right
    oracle, keep = proxy_labels(edge, cloud, y)
    torch.testing.assert_close(oracle, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(keep, 1 - oracle)


@pytest.mark.parametrize("coverage", [0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_routing_respects_the_coverage_budget(coverage):
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 50, 333):
        score = torch.randint(0, 3, (n,), generator=g).float()  # many ties
        keep = route(score, coverage)
        kept = int(keep.sum())
        assert kept == math.ceil(coverage * n - 1e-9)
        assert kept / n >= coverage - 1e-12 and (kept - 1) / n < coverage
        if 0 < kept < n:
            assert score[keep].min() >= score[~keep].max()  # the highest keep scores stay on the edge


def test_hybrid_accuracy_macs_and_entropy():
    edge_ok = torch.tensor([True, False, False, True])
    cloud_ok = torch.tensor([True, True, False, False])
    keep = torch.tensor([True, False, True, True])
    assert hybrid_accuracy(edge_ok, cloud_ok, keep) == pytest.approx(3 / 4)
    assert hybrid_macs(48e6, 600e6, 0.7) == pytest.approx(48e6 + 0.3 * 600e6)
    assert float(entropy(torch.zeros(1, 4))) == pytest.approx(math.log(4))


def test_router_loss_bce_and_coverage_hinge():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0])
    c = Constraint("coverage", mode="fixed", init=2.0, bound=0.7, direction="ge")
    bce, pen = router_loss(logits, keep, c)
    torch.testing.assert_close(bce, F.binary_cross_entropy(torch.sigmoid(logits), keep))
    rate = float(torch.sigmoid(logits).mean())
    assert rate < 0.7
    assert float(pen) == pytest.approx(2.0 * (0.7 - rate), rel=1e-5)


def _model(**kw):
    return HybridModel(edge="small_cnn", cloud="small_cnn", num_classes=4, input_shape=(1, 8, 8),
                       edge_kwargs={"widths": [4, 8]}, cloud_kwargs={"widths": [8, 16]}, router_hidden=(16, 8),
                       router_topk=3, eval_coverages=(0.5, 0.7, 1.0), **kw)


def _data():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 4, (12,), generator=g)),
                      batch_size=6)


@pytest.mark.parametrize("schedule", ["alternating", "joint"])
def test_training_schedules_and_evaluation(schedule, tmp_path):
    model = _model(schedule=schedule, router_warmup=1, router_epochs=1, model_epochs=1)
    if schedule == "alternating":
        assert [model.phase(e) for e in range(4)] == ["router", "models", "router", "models"]
    cloud0 = [p.detach().clone() for p in model.cloud.parameters()]
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="no edge/cloud weights"):
        trainer.fit(model, _data(), _data())
    m = trainer.callback_metrics
    for key in ("val/hybrid_acc@cov70", "val/entropy_acc@cov70", "val/macs@cov70", "val/edge_acc"):
        assert key in m, key
    assert float(m["val/coverage@cov70"]) >= 0.7  # the budget holds at evaluation
    assert float(m["val/hybrid_acc@cov100"]) == pytest.approx(float(m["val/edge_acc"]))
    assert float(m["val/macs@cov100"]) == pytest.approx(model.edge_macs)
    cloud_moved = any(not torch.equal(a, b) for a, b in zip(cloud0, model.cloud.parameters(), strict=True))
    assert cloud_moved == (schedule == "alternating")  # the joint scheme freezes the cloud


def test_chaining_and_bad_input(tmp_path):
    cloud = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), net_kwargs={"widths": [8, 16]})
    edge = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), net_kwargs={"widths": [4, 8]})
    torch.save({"state_dict": cloud.state_dict()}, tmp_path / "cloud.ckpt")
    torch.save({"state_dict": edge.state_dict()}, tmp_path / "edge.ckpt")
    model = _model(edge_ckpt=str(tmp_path / "edge.ckpt"))
    load_weights(model, tmp_path / "cloud.ckpt")  # init_from = the cloud recipe
    for k, v in cloud.net.state_dict().items():
        torch.testing.assert_close(model.cloud.state_dict()[k], v)
    for k, v in edge.net.state_dict().items():
        torch.testing.assert_close(model.edge.state_dict()[k], v)
    with pytest.raises(TeacherCheckpointError, match="edge_ckpt.*does not exist"):
        load_weights(_model(edge_ckpt=str(tmp_path / "missing.ckpt")), tmp_path / "cloud.ckpt")
    with pytest.raises(TeacherCheckpointError, match="cloud_ckpt.*does not exist"):
        _model(cloud_ckpt=str(tmp_path / "nope.ckpt"), edge_ckpt=str(tmp_path / "edge.ckpt")).setup("fit")
    for bad in (0.0, 1.01, -0.5):
        with pytest.raises(ConstraintError, match=r"coverage must be in \(0, 1\]"):
            _model(coverage=bad)
        with pytest.raises(ConstraintError, match=r"coverage must be in \(0, 1\]"):
            route(torch.zeros(3), bad)
    with pytest.raises(ConstraintError, match="cloud predicts 5 classes but edge predicts 4"):
        _model(cloud_num_classes=5)


def test_ddp_evaluation_gathers_both_ranks(tmp_path):
    """Under 2-rank DDP the routing budget is applied to the gathered validation set: 30 inputs give exactly
    21/30 = 0.7 kept at coverage 0.7 (one rank's 15 inputs alone would give 11/15)."""
    from tests.ddp import run_ddp

    proc = run_ddp([
        "fit", "--model=modules.hybrid_router.HybridModel", "--model.init_args.edge=small_cnn",
        "--model.init_args.cloud=small_cnn", "--model.init_args.edge_kwargs={widths: [4, 8]}",
        "--model.init_args.router_hidden=[16, 8]", "--model.init_args.router_topk=3",
        "--model.init_args.eval_coverages=[0.7]", "--data=datamodules.glyphs.GlyphsDataModule",
        "--data.init_args.num_classes=4", "--data.init_args.train_size=16", "--data.init_args.test_size=30",
        "--data.init_args.batch_size=8", "--trainer.max_epochs=1", "--trainer.logger=false",
        "--trainer.num_sanity_val_steps=0", "--run_name=hybrid_ddp",
    ], tmp_path / "runs")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Final metrics:"))
    metrics = dict(kv.split("=") for kv in line[len("Final metrics: "):].split(", "))
    assert float(metrics["val/coverage@cov70"]) == pytest.approx(0.7, abs=1e-4)
