"""ImageClassifier: optimizer/scheduler from callables, constant warm-up, metrics, label smoothing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from modules.image_classifier import ImageClassifier


def _loader(n=8, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=n)


def _trainer(steps=1):
    return pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)


@pytest.mark.parametrize(("warmup_steps", "factor"), [(1, 0.1), (0, 0.1)])
def test_warmup_scales_the_first_steps_only(warmup_steps, factor):
    model = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), log_images=False,
                            optimizer=lambda p: torch.optim.SGD(p, lr=0.5), warmup_steps=warmup_steps,
                            warmup_factor=factor)
    model.net.eval()  # BN in eval on both sides, so the gradient below is the one the step used
    reference = copy.deepcopy(model)
    x, y = next(iter(_loader()))
    F.cross_entropy(reference(x), y).backward()

    class KeepBNEval(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            pl_module.net.eval()

    trainer = _trainer()
    trainer.callbacks.append(KeepBNEval())
    trainer.fit(model, _loader())
    effective = 0.5 * (factor if warmup_steps else 1.0)
    for (name, p), p0 in zip(model.named_parameters(), reference.parameters()):
        if p0.grad is not None:
            torch.testing.assert_close(p.detach(), (p0 - effective * p0.grad).detach(), msg=name)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.5  # the scheduled lr is restored


def test_scheduler_from_callable_and_top5_with_few_classes():
    model = ImageClassifier(
        net="small_cnn", num_classes=3, input_shape=(1, 8, 8), log_images=False,
        optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
        lr_scheduler_interval="step",
    )
    trainer = _trainer(steps=3)
    trainer.fit(model, _loader(classes=3))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.125)
    assert "train/acc1" in trainer.callback_metrics and "train/acc5" not in trainer.callback_metrics


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_validation_loss_is_label_smoothed_cross_entropy(smoothing):
    model = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), log_images=False,
                            label_smoothing=smoothing)
    x, y = next(iter(_loader()))
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, label_smoothing=smoothing).item()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(model, _loader(), verbose=False)
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert tuple(model.example_input_array.shape) == (1, 1, 8, 8)


def test_best_val_acc1_is_the_running_max_and_is_checkpointed(tmp_path):
    model = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), log_images=False,
                            optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    seen = []

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                seen.append(float(pl_module.metrics["val_acc1"].compute()))

    trainer = pl.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[Record()])
    trainer.fit(model, _loader(classes=4), _loader(n=16, classes=4))
    assert len(seen) == 4
    assert float(trainer.callback_metrics["val/acc1_best"]) == pytest.approx(max(seen))
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert ckpt["best_val_acc1"] == pytest.approx(max(seen))
