"""ImageClassifier(compile=...): the same training as eager, compiled in place (state-dict keys unchanged), so a
compiled run's checkpoint loads, resumes and exports in eager mode; filter pruning and quantized training (which
change layers during fit) keep working with compile and ChannelsLast.

The default tier uses the ``aot_eager`` backend (Dynamo graph capture and AOTAutograd, no C compilation); the
inductor runs (C++ code generated and compiled with gcc) are marked slow.
"""

from __future__ import annotations

import pytest
import torch

import lightning.pytorch as pl
from callbacks.channels_last import ChannelsLast
from main import cli_main
from modules.image_classifier import ImageClassifier


class Batches:
    """A fixed, re-iterable list of (x, y) batches."""

    def __init__(self, n: int = 3, batch: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.rand(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g))
                        for _ in range(n)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Losses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def _module(compile=False) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(net="small_cnn", num_classes=10, input_shape=(1, 8, 8), log_images=False, compile=compile)


def _trainer(tmp_path, *callbacks, steps: int = 3, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=10, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=list(callbacks), **kwargs)


def _fit(tmp_path, compile, *callbacks, steps: int = 3):
    module, losses = _module(compile), Losses()
    trainer = _trainer(tmp_path, losses, *callbacks, steps=steps, enable_checkpointing=False)
    trainer.fit(module, train_dataloaders=Batches(steps))
    return module, losses.losses


def _assert_same_training(tmp_path, backend):
    eager, eager_losses = _fit(tmp_path / "eager", False)
    compiled, compiled_losses = _fit(tmp_path / "compiled", backend)
    assert getattr(compiled.net, "_compiled_call_impl", None) is not None  # really compiled, in place
    assert getattr(eager.net, "_compiled_call_impl", None) is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefix
    assert len(compiled_losses) == 3
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_training_matches_eager_aot_eager(tmp_path):
    _assert_same_training(tmp_path, "aot_eager")


@pytest.mark.slow
def test_compiled_training_matches_eager_inductor(tmp_path):
    _assert_same_training(tmp_path, True)


def test_compiled_checkpoint_loads_resumes_and_exports_eager(tmp_path):
    from nets.export import export_checkpoint

    module = _module("aot_eager")
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, ckpt_cb, steps=2).fit(module, train_dataloaders=Batches(2))
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert set(state) == set(_module().state_dict())
    # loads as an eager module (compiling happens only when a fit starts)
    loaded = ImageClassifier.load_from_checkpoint(ckpt, weights_only=True)
    assert getattr(loaded.net, "_compiled_call_impl", None) is None
    x = Batches(1).batches[0][0]
    torch.testing.assert_close(loaded.eval()(x), module.eval()(x))
    # resumes in eager mode
    eager = ImageClassifier.load_from_checkpoint(ckpt, weights_only=True, compile=False)
    trainer = _trainer(tmp_path / "resume", steps=3, enable_checkpointing=False)
    trainer.fit(eager, train_dataloaders=Batches(3), ckpt_path=ckpt, weights_only=True)
    assert trainer.global_step == 3 and getattr(eager.net, "_compiled_call_impl", None) is None
    # exports (the exported graph reproduces the checkpoint's eager outputs within the export's tolerance)
    summary = export_checkpoint(_module(), [], ckpt, "pt2", out=tmp_path / "net.pt2")
    assert (tmp_path / "net.pt2").is_file() and summary


@pytest.mark.slow
def test_pruning_and_channels_last_with_compile(tmp_path):
    """L1FilterPruning rebuilds the convolutions at epoch 1 of a compiled, NHWC fit: the net is pruned, its weights
    NHWC again, and it is still the compiled module (recompiled on the new layers)."""
    cli = cli_main(["fit", "--config", "recipes/quickstart.yaml", f"--runs_root={tmp_path}", "--trainer.logger=false",
                    "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1", "--trainer.max_epochs=2",
                    "--trainer.limit_train_batches=2", "--trainer.callbacks=[]", "--model.init_args.log_images=false",
                    "--model.init_args.compile=aot_eager",
                    "--trainer.callbacks+=callbacks.channels_last.ChannelsLast",
                    "--trainer.callbacks+=callbacks.l1_filter_pruning.L1FilterPruning",
                    '--trainer.callbacks.ratios={"1": 0.5}', "--trainer.callbacks.prune_at_epoch=1"])
    net = cli.model.net
    assert net.features[0].out_channels == 16  # pruned mid-fit (32 -> 16 filters)
    assert getattr(net, "_compiled_call_impl", None) is not None
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, ChannelsLast))
    assert cb.conversions == 2
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)
    assert cli.trainer.global_step == 4


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("callback", ["callbacks.l1_filter_pruning.L1FilterPruning",
                                      "callbacks.quantized_training.QuantizedTraining"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_structural_callbacks_with_compile(tmp_path, backend, callback, channels_last):
    """Every combination: the compiled fit runs, changes the net as the callback should and gives a finite loss."""
    extra = ['--trainer.callbacks.ratios={"1": 0.5}', "--trainer.callbacks.prune_at_epoch=1"] \
        if "Pruning" in callback else []
    cl = ["--trainer.callbacks+=callbacks.channels_last.ChannelsLast"] if channels_last else []
    cli = cli_main(["fit", "--config", "recipes/quickstart.yaml", f"--runs_root={tmp_path}", "--trainer.logger=false",
                    "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1", "--trainer.max_epochs=2",
                    "--trainer.limit_train_batches=2", "--trainer.callbacks=[]", "--model.init_args.log_images=false",
                    f"--model.init_args.compile={'true' if backend == 'inductor' else backend}", *cl,
                    f"--trainer.callbacks+={callback}", *extra])
    assert cli.trainer.global_step == 4
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    net = cli.model.net
    assert getattr(net, "_compiled_call_impl", None) is not None
    if "Pruning" in callback:
        assert net.features[0].out_channels == 16
    else:  # BinaryConnect: the weights the forward pass used are binary (+-delta); the stored ones stay real
        assert cli.model.net.features[0].weight.unique().numel() > 2
