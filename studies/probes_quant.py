"""Measurements inside the quantized-training studies' runs (Lightning callbacks; no training changes).

:class:`ConvexExcessLoss` (studies/quant_convex.yaml): on a problem whose minimiser is known
(datamodules/convex_regression.py), the excess loss F(w) - F(w*) of what the model stores, recorded every
``every`` optimizer steps and averaged over the last half of every epoch (one learning-rate phase).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import lightning.pytorch as pl
import torch


def _quantizer(trainer: pl.Trainer) -> Any:
    """The QuantizedTraining callback of the trainer, or None (full precision)."""
    found = [c for c in trainer.callbacks if type(c).__name__ == "QuantizedTraining"]
    if len(found) > 1:
        raise ValueError("ConvexExcessLoss: more than one QuantizedTraining callback; the probe measures one "
                         "quantized weight")
    return found[0] if found else None


class ConvexExcessLoss(pl.Callback):
    """Excess loss F(w) - F(w*) of the stored weights during training (see the module docstring).

    Needs a datamodule with ``excess(w)`` and ``problem["w_star"]`` (``RidgeRegressionDataModule``) and a
    module whose weight vector is the parameter ``param``. After the optimizer step of step ``t`` (0-based) with
    ``t % every == 0`` it records ``excess(w)``, the excess of the weights as stored (BC: the float buffer; R/SR:
    grid values), and, when a ``QuantizedTraining`` callback quantizes ``param``, ``excess(Q_d(w))`` (what BC
    deploys). At the end of every epoch it logs, for every finished epoch ``k`` (1-based), the mean of the
    records of the epoch's second half:

    * ``excess/phase<k>`` and ``excess_q/phase<k>`` (quantized runs); ``excess/final`` and ``excess_q/final`` for
      the last finished epoch;
    * quantized runs: ``excess/grid_best`` = excess(Q_d(w*)), the best a grid point near w* achieves;
      ``grid/off_grid`` = max |w - Q_d(w)| / step of the stored weights (0: the stored weights are grid values);
    * ``freeze/last_change_step``: the last step whose optimizer step changed the stored weights;
      ``freeze/max_update_after``: the largest ``lr * max|g|`` recorded (at the steps ``t % every == 0``) after
      that step (``inf`` when none was recorded, i.e. the weights changed up to the end);
      ``freeze/half_step``: half the grid step (quantized runs). Under R the weights freeze once every
      ``lr * |g| < step / 2``.

    The records are kept in the checkpoint, so a resumed run reports what an uninterrupted one does. At the end of
    fit the records are written to ``<run dir>/excess_trace.json`` (for curves).
    """

    def __init__(self, every: int = 10, param: str = "linear.weight") -> None:
        if every < 1:
            raise ValueError(f"ConvexExcessLoss: every must be >= 1, got {every}")
        self.every = int(every)
        self.param = param
        self.records: dict[int, list[float]] = {}  # step -> [excess, excess_q or nan, lr * max|g|]
        self.last_change = -1
        self._before: torch.Tensor | None = None
        self._update: float = math.nan

    # ------------------------------------------------------------------ helpers
    def _weight(self, pl_module: pl.LightningModule) -> torch.Tensor:
        try:
            return pl_module.get_parameter(self.param)
        except AttributeError as err:
            raise ValueError(f"ConvexExcessLoss: the module has no parameter {self.param!r} ({err}); set the "
                             "probe's param to the weight vector being trained") from None

    def _grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        quant = _quantizer(trainer)
        if quant is None:
            return None
        weight = self._weight(pl_module)
        for layer in quant.layers.values():
            if layer.module.weight is weight:
                return layer.grid
        return quant.base_grid

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> Any:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "excess") or not hasattr(dm, "problem"):
            raise ValueError("ConvexExcessLoss needs a datamodule with a known minimiser (excess(w), problem), "
                             "e.g. datamodules.convex_regression.RidgeRegressionDataModule")
        return dm

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._datamodule(trainer)
        self._weight(pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._before = self._weight(pl_module).detach().clone()
        self._update = math.nan

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if trainer.global_step % self.every:
            return
        grad = self._weight(pl_module).grad
        if grad is not None:
            self._update = float(optimizer.param_groups[0]["lr"]) * float(grad.detach().abs().max())

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        t = trainer.global_step - 1  # the step whose optimizer step just ran
        w = self._weight(pl_module)
        if self._before is not None and not torch.equal(self._before, w):
            self.last_change = t
        self._before = None
        if t % self.every:
            return
        dm = self._datamodule(trainer)
        grid = self._grid(trainer, pl_module)
        from callbacks.quantized_training import quantize_nearest

        excess_q = dm.excess(quantize_nearest(w.detach().float(), grid)) if grid is not None else math.nan
        self.records[t] = [dm.excess(w), excess_q, self._update]

    def _phase_means(self, trainer: pl.Trainer, column: int) -> list[float]:
        steps = trainer.num_training_batches
        done = trainer.global_step // steps if steps and math.isfinite(steps) else 0
        means = []
        for k in range(done):
            half = [v[column] for t, v in self.records.items() if k * steps + steps // 2 <= t < (k + 1) * steps]
            means.append(sum(half) / len(half) if half else math.nan)
        return means

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        grid = self._grid(trainer, pl_module)
        columns = [("excess", 0)] + ([("excess_q", 1)] if grid is not None else [])
        values: dict[str, float] = {}
        for name, col in columns:
            means = self._phase_means(trainer, col)
            for k, v in enumerate(means, start=1):
                values[f"{name}/phase{k}"] = v
            if means:
                values[f"{name}/final"] = means[-1]
        after = [v[2] for t, v in self.records.items() if t // self.every > self.last_change // self.every
                 and not math.isnan(v[2])]
        values["freeze/last_change_step"] = float(self.last_change)
        values["freeze/max_update_after"] = max(after) if after else math.inf
        if grid is not None:
            from callbacks.quantized_training import quantize_nearest

            dm = self._datamodule(trainer)
            w = self._weight(pl_module).detach().float()
            values["excess/grid_best"] = dm.excess(quantize_nearest(dm.problem["w_star"].float(), grid))
            values["grid/off_grid"] = float((w - quantize_nearest(w, grid)).abs().max()) / grid.step
            values["freeze/half_step"] = grid.step / 2
        for key, value in values.items():
            pl_module.log(key, value, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        os.makedirs(trainer.default_root_dir, exist_ok=True)
        steps = sorted(self.records)
        with open(os.path.join(trainer.default_root_dir, "excess_trace.json"), "w") as f:
            json.dump({"every": self.every, "steps_per_epoch": trainer.num_training_batches, "step": steps,
                       "excess": [self.records[t][0] for t in steps],
                       "excess_q": [self.records[t][1] for t in steps],
                       "last_change_step": self.last_change}, f)

    def state_dict(self) -> dict[str, Any]:
        return {"records": {str(t): v for t, v in self.records.items()}, "last_change": self.last_change}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = {int(t): list(v) for t, v in state_dict.get("records", {}).items()}
        self.last_change = int(state_dict.get("last_change", -1))
