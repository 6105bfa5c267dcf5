"""callbacks/ema.py WeightEMA: one step equals its equation (timm's start), validation and checkpoints carry the
average, resuming with ckpt_path continues the same average, and a decay outside (0, 1) is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from callbacks.ema import WeightEMA


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        self.seen_in_val: list[torch.Tensor] = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.seen_in_val.append(self.net[0].weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _loader(n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)), batch_size=4)


def _trainer(tmp_path, ema, steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, max_steps=steps, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[ema], **kw)


def test_one_step_equals_the_ema_equation(tmp_path):
    model = Tiny()
    w0 = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    ema = WeightEMA(decay=0.9)
    trainer = _trainer(tmp_path, ema, 1, limit_val_batches=0)
    seen = {}

    class Grab(pl.Callback):  # the trained weights right after the step, before on_train_end copies the average
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.update({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

    trainer.callbacks.insert(0, Grab())
    trainer.fit(model, _loader(4))
    avg = {k[len("net."):]: v for k, v in ema.average_model.module.state_dict().items() if k.startswith("net.")}
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert not torch.equal(seen[key], w0[key])
        assert torch.allclose(avg[key], 0.9 * w0[key] + 0.1 * seen[key], atol=1e-6), key


def test_validation_uses_the_average_and_the_checkpoint_holds_it(tmp_path):
    model = Tiny()
    ema = WeightEMA(decay=0.5)
    trainer = _trainer(tmp_path, ema, 4, val_check_interval=2, check_val_every_n_epoch=None)
    trainer.fit(model, _loader(), _loader(4))
    trainer.save_checkpoint(tmp_path / "x.ckpt")  # after fit the model holds the average (as exported)
    ckpt = torch.load(tmp_path / "x.ckpt", weights_only=True)
    avg = ema.average_model.module.net[0].weight
    assert torch.equal(model.seen_in_val[-1], avg)  # the last validation ran on the average
    assert torch.equal(ckpt["state_dict"]["net.0.weight"], avg)


def test_resume_continues_the_same_average(tmp_path):
    def trainer(root, ema, epochs):
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True)
        return pl.Trainer(default_root_dir=root, max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          callbacks=[ema, ckpt])

    full = WeightEMA(decay=0.7)
    trainer(tmp_path / "a", full, 2).fit(Tiny(), _loader(8))
    trainer(tmp_path / "b", WeightEMA(decay=0.7), 1).fit(Tiny(), _loader(8))  # stops after epoch 1 of 2
    mid = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert "current_model_state" in mid and "averaging_state" in mid  # training weights and average both saved
    second = WeightEMA(decay=0.7)
    trainer(tmp_path / "b", second, 2).fit(Tiny(), _loader(8), ckpt_path=tmp_path / "b" / "last.ckpt")
    for a, b in zip(full.average_model.module.state_dict().values(),
                    second.average_model.module.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, "x"])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be strictly between 0 and 1"):
        WeightEMA(decay=decay)


def test_export_uses_the_average_of_a_checkpoint_saved_during_training(tmp_path):
    """ModelCheckpoint saves while the raw weights are in the model; the checkpoint's state_dict (what
    nets.export.export_checkpoint and load_from_checkpoint read) still holds the average."""
    from nets.export import export_checkpoint

    ema = WeightEMA(decay=0.5)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[ema, ckpt_cb])
    trainer.fit(Tiny(), _loader(8))
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert not torch.equal(ckpt["state_dict"]["net.0.weight"], ckpt["current_model_state"]["net.0.weight"])
    fresh = Tiny()
    export_checkpoint(fresh, [], tmp_path / "last.ckpt", fmt="pt2", out=tmp_path / "m.pt2",
                      example_input=torch.randn(2, 4))
    assert torch.equal(fresh.net[0].weight, ckpt["state_dict"]["net.0.weight"])
    assert torch.equal(fresh.net[1].running_mean, ckpt["state_dict"]["net.1.running_mean"])
