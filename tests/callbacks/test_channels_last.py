"""ChannelsLast: NHWC weights during fit, the same training as NCHW, and re-conversion after mid-fit pruning."""

import torch

from callbacks.channels_last import ChannelsLast
from main import cli_main

CL = torch.channels_last


def _fit(runs_root, *extra):
    return cli_main(["fit", "--config", "recipes/quickstart.yaml", f"--runs_root={runs_root}", "--trainer.logger=false",
                     "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1",
                     "--model.init_args.log_images=false", "--trainer.enable_checkpointing=false", *extra])


def _convs(module):
    return [p for p in module.parameters() if p.dim() == 4]


def test_trains_in_nhwc_to_the_same_weights_as_nchw(tmp_path):
    plain = _fit(tmp_path / "a", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3")
    nhwc = _fit(tmp_path / "b", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                "--trainer.callbacks+=callbacks.channels_last.ChannelsLast")
    convs = _convs(nhwc.model)
    assert convs and all(p.is_contiguous(memory_format=CL) for p in convs)
    assert any(not p.is_contiguous() for p in convs)  # a real layout change (a 1-channel kernel is both)
    assert all(p.is_contiguous() for p in _convs(plain.model))
    for (name, a), b in zip(plain.model.state_dict().items(), nhwc.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_reconverts_the_layers_that_pruning_rebuilt(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2",
               "--trainer.callbacks+=callbacks.channels_last.ChannelsLast",
               "--trainer.callbacks+=callbacks.l1_filter_pruning.L1FilterPruning", '--trainer.callbacks.ratios={"1": 0.5}',
               "--trainer.callbacks.prune_at_epoch=1")
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, ChannelsLast))
    assert cli.model.net.features[0].out_channels == 16  # pruned mid-fit (32 -> 16 filters)
    assert cb.conversions == 2  # at fit start, then once after the pruning callback rebuilt the convolutions
    assert all(p.is_contiguous(memory_format=CL) for p in _convs(cli.model))
