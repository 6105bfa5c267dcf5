"""A strongly convex problem for studying quantized training: ridge regression on synthetic Gaussian data.

The problem (Li, De, Xu, Studer, Samet & Goldstein, "Training Quantized Nets: A Deeper Understanding", NeurIPS
2017, docs/quantized_training.md, analyse BC, SR and R on strongly convex objectives) is

    F(w) = 1/(2m) ||X w - y||^2 + mu/2 ||w||^2,   X ~ N(0, 1)^{m x d},  y = X w_true + noise * N(0, 1),

with w_true uniform in [-1, 1]^d. It is drawn in float64 from a ``torch.Generator`` seeded with ``data_seed``
(default ``1000 + seed``, so the problem and the minibatch stream come from different seeds). The exact minimiser
``w_star``, the Hessian ``H = X^T X / m + mu I`` and the excess loss ``F(w) - F(w*) = 1/2 (w - w*)^T H (w - w*)``
are available from :meth:`RidgeRegressionDataModule.excess` (used by the probe studies/probes_quant.py).

Training batches: ``steps_per_epoch`` minibatches of ``batch_size`` rows drawn uniformly **with replacement**
(minibatch SGD on the finite sum), from one ``torch.Generator`` seeded with ``seed`` whose stream runs on across
epochs; epoch ``e`` is recomputed from ``seed`` and ``e`` alone (:class:`ReplacementBatchSampler`), so a resumed
run sees the batches an uninterrupted run sees. Inputs are float32 (the model trains in float32); the problem's
exact quantities stay float64. No validation or test split: the objective is known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ReplacementBatchSampler(Sampler[torch.Tensor]):
    """Epoch ``e`` yields ``steps`` index tensors of ``batch_size`` uniform draws from ``range(n)``: the draws
    ``e * steps * batch_size`` onwards of one generator seeded once with ``seed``, i.e. exactly what
    ``torch.randint(n, (batch_size,), generator=g)`` called once per step returns over the whole run."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int = 0) -> None:
        self.n, self.batch_size, self.steps, self.seed = int(n), int(batch_size), int(steps), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        per_epoch = self.steps * self.batch_size
        if self.epoch:
            torch.randint(self.n, (self.epoch * per_epoch,), generator=generator)  # the earlier epochs' draws
        draws = torch.randint(self.n, (per_epoch,), generator=generator)
        return iter(draws.view(self.steps, self.batch_size).unbind(0))

    def __len__(self) -> int:
        return self.steps


class _Rows(Dataset):
    """``dataset[index_tensor]`` -> (x[index], y[index]): one whole minibatch per fetch, no collation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __len__(self) -> int:
        return len(self.x)


def make_problem(dim: int, samples: int, mu: float, noise: float, data_seed: int) -> dict[str, torch.Tensor]:
    """X, y, H, w* (float64) of the ridge problem drawn from ``data_seed`` (see the module docstring)."""
    g = torch.Generator().manual_seed(int(data_seed))
    x = torch.randn(samples, dim, generator=g, dtype=torch.float64)
    w_true = torch.rand(dim, generator=g, dtype=torch.float64) * 2 - 1
    y = x @ w_true + noise * torch.randn(samples, generator=g, dtype=torch.float64)
    h = x.T @ x / samples + mu * torch.eye(dim, dtype=torch.float64)
    w_star = torch.linalg.solve(h, x.T @ y / samples)
    return {"x": x, "y": y, "h": h, "w_star": w_star, "w_true": w_true}


class RidgeRegressionDataModule(pl.LightningDataModule):
    """Synthetic ridge regression (see the module docstring).

    Args:
        dim: number of features d (the model's ``input_shape`` is ``(dim,)``).
        samples: rows m of the finite sum.
        mu: ridge penalty (the model reads it from here: it is part of the objective).
        noise: standard deviation of the label noise.
        batch_size: rows per minibatch (drawn with replacement).
        steps_per_epoch: minibatches per epoch (e.g. one learning-rate phase).
        seed: seed of the minibatch stream (a study sets it to the run's seed).
        data_seed: seed of the problem (X, w_true, noise); default ``1000 + seed``.
    """

    num_classes = 1  # outputs of the linear model (linked to the module by main.py)

    def __init__(self, dim: int = 10, samples: int = 2000, mu: float = 0.1, noise: float = 0.1, batch_size: int = 8,
                 steps_per_epoch: int = 1000, seed: int = 0, data_seed: int | None = None) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("samples", samples), ("batch_size", batch_size),
                            ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RidgeRegressionDataModule: {name} must be an integer >= 1, got {value!r}")
        if not mu > 0:
            raise ValueError(f"RidgeRegressionDataModule: mu must be > 0 (the problem is then strongly convex), "
                             f"got {mu!r}")
        self.save_hyperparameters()
        self.dim, self.samples, self.mu, self.noise = int(dim), int(samples), float(mu), float(noise)
        self.batch_size, self.steps_per_epoch, self.seed = int(batch_size), int(steps_per_epoch), int(seed)
        self.data_seed = 1000 + self.seed if data_seed is None else int(data_seed)
        self.input_shape = (self.dim,)
        self._problem: dict[str, torch.Tensor] | None = None

    @property
    def problem(self) -> dict[str, torch.Tensor]:
        if self._problem is None:
            self._problem = make_problem(self.dim, self.samples, self.mu, self.noise, self.data_seed)
        return self._problem

    def setup(self, stage: str | None = None) -> None:
        self.problem  # noqa: B018 (drawn once)

    @torch.no_grad()
    def excess(self, w: torch.Tensor) -> float:
        """F(w) - F(w*) = 1/2 (w - w*)^T H (w - w*), exact in float64."""
        e = w.detach().to("cpu", torch.float64).reshape(-1) - self.problem["w_star"]
        return float(0.5 * e @ self.problem["h"] @ e)

    def train_dataloader(self) -> DataLoader:
        p = self.problem
        rows = _Rows(p["x"].float(), p["y"].float())
        sampler = ReplacementBatchSampler(self.samples, self.batch_size, self.steps_per_epoch, self.seed)
        return DataLoader(rows, sampler=sampler, batch_size=None)
