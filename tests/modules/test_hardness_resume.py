"""Input-hardness modules resume exactly (house rule "Resumable"): OSP's multipliers and slacks, the hybrid router
and its schedule phase, and DiSK's guide, budget multiplier and schedule survive a checkpoint and ``ckpt_path``.
A run stopped after epoch k and resumed to epoch N ends with the same weights, multipliers and optimizer state
as the same run trained to N without a stop (CPU, fixed data order)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from modules.disk import DiSK
from modules.hybrid_router import HybridModel
from modules.selective_classifier import SelectiveClassifier


def _sgd(p):
    return torch.optim.SGD(p, lr=0.05, momentum=0.9)


def _osp():
    return SelectiveClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), method="osp",
                               net_kwargs={"widths": [4, 8]}, lagrangian="code", multiplier_lr=0.02, optimizer=_sgd)


def _hybrid():
    return HybridModel(edge="small_cnn", cloud="small_cnn", num_classes=4, input_shape=(1, 8, 8),
                       edge_kwargs={"widths": [4, 8]}, cloud_kwargs={"widths": [8, 16]}, router_hidden=(16, 8),
                       router_topk=3, eval_coverages=(0.7,), schedule="alternating", router_warmup=1,
                       router_epochs=1, model_epochs=1)


def _disk(mode):
    return lambda: DiSK(student="small_cnn", teacher="small_cnn", num_classes=4, input_shape=(1, 8, 8),
                        student_kwargs={"widths": [4, 8]}, teacher_kwargs={"widths": [8, 16]}, guide_width=8,
                        guide_warmup=1, student_epochs=1, guide_epochs=1, lambda_period=4, budget_mode=mode,
                        optimizer=_sgd, guide_optimizer=_sgd)


def _data():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 4, (12,), generator=g)),
                      batch_size=4)


class _Epochs(pl.Callback):
    """Records the epochs a fit actually trains."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append(trainer.current_epoch)


def _fit(make, epochs, root, ckpt_path=None, seed=0):
    pl.seed_everything(seed)
    model = make()
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root, num_sanity_val_steps=0, deterministic=True, callbacks=[_Epochs()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no teacher / edge / cloud weights given: trained from their init here
        trainer.fit(model, _data(), _data(), ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize("make, extra", [(_osp, ("multiplier.lam", "eps")), (_hybrid, ()),
                                         (_disk("scheduled"), ("budget.lam",)),
                                         (_disk("dual_ascent"), ("budget.lam",))],
                         ids=["osp", "hybrid", "disk_scheduled", "disk_dual_ascent"])
def test_stop_and_resume_equals_the_uninterrupted_run(make, extra, tmp_path):
    full, full_trainer = _fit(make, 4, tmp_path / "full")
    _, first = _fit(make, 2, tmp_path / "part")
    resumed, resumed_trainer = _fit(make, 4, tmp_path / "part", ckpt_path=first.checkpoint_callback.best_model_path,
                                     seed=1)  # another init: every weight and multiplier must come from the file
    assert resumed_trainer.global_step == full_trainer.global_step
    assert resumed_trainer.callbacks[0].seen == [2, 3]  # it continued from the checkpoint, not from scratch
    want, got = full.state_dict(), resumed.state_dict()
    assert set(got) == set(want) and set(extra) <= set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
    start = make()  # the technique's own state has moved away from its init, so the comparison means something
    for k in extra:
        assert not torch.equal(want[k], start.state_dict()[k]), k
    for opt_full, opt_res in zip(full_trainer.optimizers, resumed_trainer.optimizers, strict=True):
        for s_full, s_res in zip(opt_full.state.values(), opt_res.state.values(), strict=True):
            for key in s_full:
                torch.testing.assert_close(s_res[key], s_full[key])


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three DDP runs of up to 360 s each
def test_osp_under_ddp_stop_and_resume_equals_the_uninterrupted_run(tmp_path):
    """2-rank DDP (gloo) through main.py: OSP stopped after one epoch and resumed with ``--ckpt_path last`` ends
    with the same net, multipliers and slacks as two uninterrupted epochs."""
    from tests.ddp import run_ddp

    base = ["fit", "--seed_everything=0", "--model=modules.selective_classifier.SelectiveClassifier",
            "--model.init_args.net=small_cnn", "--model.init_args.net_kwargs={widths: [4, 8]}",
            "--model.init_args.method=osp", "--model.init_args.lagrangian=code",
            "--model.init_args.multiplier_lr=0.02", "--data=datamodules.glyphs.GlyphsDataModule",
            "--data.init_args.num_classes=4", "--data.init_args.train_size=64", "--data.init_args.test_size=16",
            "--data.init_args.batch_size=8", "--trainer.logger=false", "--trainer.num_sanity_val_steps=0"]
    root = tmp_path / "runs"
    run_ddp([*base, "--trainer.max_epochs=2", "--run_name=full"], root, timeout=360)
    run_ddp([*base, "--trainer.max_epochs=1", "--run_name=part"], root, timeout=360)
    run_ddp([*base, "--trainer.max_epochs=2", "--run_name=part", "--ckpt_path=last"], root, timeout=360)
    full, part = (torch.load(root / name / "checkpoints" / "last.ckpt", weights_only=False)
                  for name in ("full", "part"))
    assert part["global_step"] == full["global_step"] == 8  # 64 glyphs / 2 ranks / batch 8 = 4 steps per epoch
    assert set(part["state_dict"]) == set(full["state_dict"])
    for k, v in full["state_dict"].items():
        torch.testing.assert_close(part["state_dict"][k], v, msg=k)
    assert not torch.allclose(full["state_dict"]["multiplier.lam"], torch.full((4,), 1.67 - 0.5))  # it moved
