"""Measurements of the loss-landscape study (studies/landscape_glyphs.yaml) inside a run, as Lightning callbacks.

``InterpolationProbe`` is ``callbacks.loss_landscape.LossLandscape`` (same arguments, same computation, same
files) that also reduces the linear interpolation curve to scalars in ``trainer.callback_metrics``, so that
``main.py validate`` writes them to ``metrics/validate.json`` where a study reads them. A ``fit: false`` stage
runs it on one upstream run's ``last.ckpt`` (alpha = 0) with ``interpolate_to`` set to another upstream run's
``last.ckpt`` (alpha = 1).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from callbacks.loss_landscape import LossLandscape

RISE_STEP = 0.25  # alpha units: how far from each end the rise of the curve is read


def interpolation_scalars(alpha: np.ndarray, loss: np.ndarray, acc: np.ndarray,
                          step: float = RISE_STEP) -> dict[str, float]:
    """Scalars of an interpolation curve ``f(alpha)`` whose grid holds 0 and 1 (the two models).

    ``loss_at_0``, ``loss_at_1``, ``acc_at_0``, ``acc_at_1``: the two ends. ``barrier``: the largest excess of the
    loss on ``[0, 1]`` over the straight line between the two ends (0 when the curve never rises above it).
    ``rise_at_0`` / ``rise_at_1``: the mean loss increase ``step`` outwards and inwards from each end (the curve's
    width at that end along this one, not normalised, direction); present when both points are on the grid range
    and the curve is finite around them. Outside [0, 1] it can be NaN: the interpolation covers the BN running
    variances too (as 1-D interpolation between two trained nets must), and extrapolating them can make them
    negative; such a rise is left out rather than logged as NaN.
    """
    alpha, loss, acc = (np.asarray(v, dtype=np.float64) for v in (alpha, loss, acc))
    ends = []
    for a in (0.0, 1.0):
        hit = np.flatnonzero(np.isclose(alpha, a, atol=1e-9))
        if not len(hit):
            raise ValueError(f"interpolation_scalars: alpha = {a:g} is not on the grid {alpha.min():g}..{alpha.max():g}")
        ends.append(int(hit[0]))
    (i0, i1), (f0, f1) = ends, (float(loss[ends[0]]), float(loss[ends[1]]))
    out = {"loss_at_0": f0, "loss_at_1": f1, "acc_at_0": float(acc[i0]), "acc_at_1": float(acc[i1])}
    inside = (alpha >= 0.0) & (alpha <= 1.0)
    out["barrier"] = float(max(0.0, np.max(loss[inside] - ((1.0 - alpha[inside]) * f0 + alpha[inside] * f1))))
    for name, a, f in (("rise_at_0", 0.0, f0), ("rise_at_1", 1.0, f1)):
        if alpha.min() <= a - step and a + step <= alpha.max():
            near = (alpha >= a - step - 1e-9) & (alpha <= a + step + 1e-9)
            if np.all(np.isfinite(loss[near])):
                out[name] = float(np.mean(np.interp([a - step, a + step], alpha, loss)) - f)
    return out


class InterpolationProbe(LossLandscape):
    """``LossLandscape`` whose interpolation curve is also logged as ``interpolation/<name>`` scalars
    (:func:`interpolation_scalars`) in ``trainer.callback_metrics``; every argument is LossLandscape's."""

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> dict[str, Any]:
        summary = super().run(trainer, pl_module, stage)
        path = self.last_out_dir / "interpolation.npz" if self.last_out_dir is not None else None
        if self.interpolate_to and path is not None and path.is_file():  # rank 0 writes the file
            with np.load(path) as curve:
                scalars = interpolation_scalars(curve["alpha"], curve["loss"], curve["acc"])
            summary.setdefault("interpolation", {}).update(scalars)
            for key, value in scalars.items():
                trainer.callback_metrics[f"interpolation/{key}"] = torch.tensor(value, dtype=torch.float64)
        return summary
