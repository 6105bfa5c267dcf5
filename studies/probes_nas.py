"""Measurements the task-specific transformer studies take inside a run (Lightning callbacks; no training change).

* :class:`SearchSummary`: after a :class:`modules.transformer_search.TransformerSearch` run's search (it runs at the
  end of the last epoch's validation), logs the chosen architecture's and the full network's search numbers
  (validation accuracy with the supernet's weights, look-up-table latency, layers kept, tokens processed), so
  they land in ``metrics/fit.json``.
* :class:`ArchCost`: at the end of ``test``, the cost of the network the run tested: layers kept, tokens through
  its layers, MACs (li2017 convention: linear layers, the attention products left out) at the module's
  ``example_input_array``, and latency measured end to end at the given batch sizes x the data's length (median
  of ``repeats`` calls, no grad), so they land in ``metrics/test.json``. ``main.py report`` counts the recipe's
  network without a chained run's ``init_from``, so for a searched subnet it would count the full encoder.
* :class:`TextTestAccuracyAtStart`: test accuracy (%) when training starts, i.e. of the searched subnet with the
  supernet's weights before its fine-tune (dict batches of :mod:`datamodules.text`).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch

from studies.probes import TestAccuracyAtStart

__all__ = ["SearchSummary", "ArchCost", "TextTestAccuracyAtStart", "arch_tokens"]


def arch_tokens(arch: Any, seq_len: int, keep_first: int = 1) -> int:
    """Tokens processed by the kept layers of ``arch`` (a :class:`nets.searchable_encoder.Arch`) at ``seq_len``:
    the sum over kept layers of the tokens entering each (the full 6-layer encoder at 64 tokens: 384)."""
    return int(sum(arch.token_counts(seq_len, keep_first)))


class SearchSummary(pl.Callback):
    """Logs ``search/*`` from a TransformerSearch run's ``search_results`` at the end of the training epoch in which
    the search ran (kept in the checkpoint through the module, so a resumed finished run logs them again)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = getattr(pl_module, "search_results", None)
        if not result:
            return
        from nets.searchable_encoder import Arch

        seq_len = int(result["latency"]["seq_len"])
        n_layers = pl_module.net.num_layers
        keep_first = int(pl_module.hparams.keep_first)
        values = {"search/n_candidates": float(len(result["candidates"])),
                  "search/front_size": float(len(result["front"]))}
        for name in ("chosen", "full"):
            entry = result[name]
            arch = Arch.from_any(entry["arch"], n_layers)
            values[f"search/{name}_acc"] = float(entry["acc"])
            values[f"search/{name}_latency_ms"] = float(entry["latency_ms"])
            values[f"search/{name}_layers"] = float(len(arch.layers))
            values[f"search/{name}_tokens"] = float(arch_tokens(arch, seq_len, keep_first))
            values[f"search/{name}_downsamplers"] = float(len(arch.downsample))
        for key, value in values.items():
            pl_module.log(key, value, on_step=False, on_epoch=True)


class ArchCost(pl.Callback):
    """Logs ``arch/layers``, ``arch/tokens``, ``arch/macs`` and ``arch/latency_ms_b<B>`` of the tested network at
    the end of the test epoch.

    Args:
        latency_batches: batch sizes of the end-to-end latency (sequences of the data's ``max_length`` tokens).
        repeats: timed calls per batch size (median), after 2 untimed ones.
    """

    def __init__(self, latency_batches: list[int] = (1, 32), repeats: int = 10) -> None:  # type: ignore[assignment]
        self.latency_batches = [int(b) for b in latency_batches]
        self.repeats = int(repeats)

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from callbacks.efficiency_report import count_macs

        net = pl_module.net
        seq_len = int(pl_module.example_input_array.shape[-1])
        was_training = pl_module.training
        pl_module.eval()
        values = {"arch/layers": float(len(net.arch.layers)), "arch/downsamplers": float(len(net.arch.downsample)),
                  "arch/tokens": float(arch_tokens(net.arch, seq_len, int(pl_module.hparams.keep_first))),
                  "arch/macs": float(count_macs(pl_module, pl_module.example_input_array.to(pl_module.device),
                                                "li2017"))}
        for batch in self.latency_batches:
            ids = torch.randint(1000, 2000, (batch, seq_len), generator=torch.Generator().manual_seed(0))
            ids = ids.to(pl_module.device)
            mask = torch.ones_like(ids)
            sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
            for _ in range(2):
                net(ids, mask)
            times = []
            for _ in range(max(1, self.repeats)):
                sync()
                start = time.perf_counter()
                net(ids, mask)
                sync()
                times.append(1000.0 * (time.perf_counter() - start))
            values[f"arch/latency_ms_b{batch}"] = statistics.median(times)
        pl_module.train(was_training)
        for key, value in values.items():
            pl_module.log(key, value, on_step=False, on_epoch=True)


class TextTestAccuracyAtStart(TestAccuracyAtStart):
    """Top-1 accuracy (%) on the datamodule's test split when training starts (after ``init_from`` loaded the
    supernet's weights into the searched subnet), logged as ``key`` at the end of every training epoch. Measured
    on a fresh start only and kept in the checkpoint, so a resumed run reports the value of its first start.
    :class:`studies.probes.TestAccuracyAtStart` for the text modules' dict batches."""

    def count_correct(self, pl_module: pl.LightningModule, batch: Any) -> tuple[int, int]:
        batch = {k: v.to(pl_module.device) for k, v in batch.items()}
        pred = pl_module._logits(batch).argmax(-1)
        return int((pred == batch["labels"]).sum()), int(batch["labels"].numel())