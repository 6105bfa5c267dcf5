"""The convex problem of the quantized-training study: RidgeRegressionDataModule (datamodules/convex_regression.py),
RidgeRegression (modules/convex_regression.py) and the excess-loss probe (studies/probes_quant.py)."""

from __future__ import annotations

import math

import pytest
import torch

import lightning.pytorch as pl
from datamodules.convex_regression import ReplacementBatchSampler, RidgeRegressionDataModule
from modules.convex_regression import RidgeRegression


def _objective(dm: RidgeRegressionDataModule, w: torch.Tensor) -> float:
    p = dm.problem
    r = p["x"] @ w.double() - p["y"]
    return float(0.5 * (r @ r) / dm.samples + 0.5 * dm.mu * (w.double() @ w.double()))


def test_problem_minimiser_and_excess() -> None:
    dm = RidgeRegressionDataModule(dim=5, samples=300, mu=0.1, seed=3)
    assert dm.data_seed == 1003 and dm.input_shape == (5,) and dm.num_classes == 1
    w_star = dm.problem["w_star"]
    p = dm.problem
    grad = p["x"].T @ (p["x"] @ w_star - p["y"]) / dm.samples + dm.mu * w_star
    assert grad.abs().max() < 1e-12  # the exact minimiser of F
    w = torch.randn(5, dtype=torch.float64)
    assert dm.excess(w) == pytest.approx(_objective(dm, w) - _objective(dm, w_star), rel=1e-9)
    assert dm.excess(w_star) == 0.0
    # the same seed draws the same problem, another seed another one
    assert torch.equal(RidgeRegressionDataModule(dim=5, samples=300, seed=3).problem["x"], p["x"])
    assert not torch.equal(RidgeRegressionDataModule(dim=5, samples=300, seed=4).problem["x"], p["x"])


def test_batches_are_one_stream_of_draws_and_epochs_replay() -> None:
    """Epoch e's batches are the draws an uninterrupted per-step torch.randint stream gives (so a resumed run,
    which recomputes epoch e from the seed, sees the same batches)."""
    n, batch, steps, seed = 50, 4, 6, 7
    g = torch.Generator().manual_seed(seed)
    stream = [torch.randint(n, (batch,), generator=g) for _ in range(3 * steps)]
    sampler = ReplacementBatchSampler(n, batch, steps, seed)
    for epoch in (2, 0, 1):  # any order: each epoch is computed from the seed and the epoch alone
        sampler.set_epoch(epoch)
        got = list(sampler)
        assert len(got) == len(sampler) == steps
        for a, b in zip(got, stream[epoch * steps:(epoch + 1) * steps]):
            assert torch.equal(a, b)


def test_loader_gives_rows_of_the_problem() -> None:
    dm = RidgeRegressionDataModule(dim=3, samples=40, batch_size=5, steps_per_epoch=2, seed=1)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    x, y = batches[0]
    assert x.shape == (5, 3) and y.shape == (5,) and x.dtype == torch.float32
    rows = ReplacementBatchSampler(40, 5, 2, 1)
    idx = next(iter(rows))
    assert torch.equal(x, dm.problem["x"][idx].float()) and torch.equal(y, dm.problem["y"][idx].float())


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="mu must be > 0"):
        RidgeRegressionDataModule(mu=0.0)
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        RidgeRegressionDataModule(batch_size=0)
    with pytest.raises(ValueError, match="one regression target"):
        RidgeRegression(num_classes=3)
    with pytest.raises(ValueError, match=r"input_shape must be \(d,\)"):
        RidgeRegression(input_shape=(1, 8, 8))


def _fit(tmp_path, callbacks, epochs=3, steps=200, lr=0.2, penalty=None, seed=0):
    from lightning.pytorch.cli import instantiate_class

    pl.seed_everything(seed, verbose=False)
    dm = RidgeRegressionDataModule(dim=4, samples=200, batch_size=8, steps_per_epoch=steps, seed=seed)
    model = RidgeRegression(
        input_shape=(4,), penalty=penalty,
        optimizer=lambda p: torch.optim.SGD(p, lr=lr),
        lr_scheduler=lambda o: instantiate_class(o, {"class_path": "torch.optim.lr_scheduler.StepLR",
                                                     "init_args": {"step_size": 1, "gamma": 0.5}}))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    return trainer, model, dm


def test_sgd_approaches_the_minimiser_and_the_probe_measures_it(tmp_path) -> None:
    from studies.probes_quant import ConvexExcessLoss

    probe = ConvexExcessLoss(every=10)
    trainer, model, dm = _fit(tmp_path, [probe])
    m = trainer.callback_metrics
    phases = [float(m[f"excess/phase{k}"]) for k in (1, 2, 3)]
    # the excess loss of full-precision SGD falls as the learning rate halves, and is what the datamodule computes
    assert phases[2] < phases[1] < phases[0]
    assert float(m["excess/final"]) == phases[2]
    last_half = [v[0] for t, v in probe.records.items() if 500 <= t < 600]
    assert len(last_half) == 10 and phases[2] == pytest.approx(sum(last_half) / 10)
    assert "excess_q/final" not in m  # nothing quantizes the weights
    assert model.mu == dm.mu  # the penalty is the problem's
    assert (tmp_path / "excess_trace.json").is_file()


def test_penalty_that_differs_from_the_problem_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="penalty is 0.5 but the datamodule's problem has mu 0.1"):
        _fit(tmp_path, [], epochs=1, steps=2, penalty=0.5)


def test_probe_sees_rounding_freeze_and_grid(tmp_path) -> None:
    """Under R with a coarse grid the stored weights are grid values and stop moving once lr * |g| < step / 2;
    the probe's freeze measures agree with that rule."""
    from callbacks.quantized_training import QuantizedTraining
    from studies.probes_quant import ConvexExcessLoss

    probe = ConvexExcessLoss(every=1)
    quant = QuantizedTraining(method="r", grid="uniform", bits=8, step=0.1)
    trainer, model, _ = _fit(tmp_path, [probe, quant], epochs=4, steps=100, lr=0.2)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["grid/off_grid"] == 0.0
    w = model.linear.weight.detach()
    assert torch.allclose(w / 0.1, torch.round(w / 0.1), atol=1e-4)
    assert m["freeze/half_step"] == pytest.approx(0.05)
    last = int(m["freeze/last_change_step"])
    assert 0 <= last < 399  # it froze before the end
    assert m["freeze/max_update_after"] < 0.05  # every later update was below half a step (R's freeze rule)
    assert m["excess_q/final"] == pytest.approx(m["excess/final"])  # stored weights are their own Q_d
    assert m["excess/grid_best"] > 0 and not math.isnan(m["excess/grid_best"])
