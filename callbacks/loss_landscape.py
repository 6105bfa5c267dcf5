"""LossLandscape: loss-landscape visualisation with filter normalisation (Li et al., NeurIPS 2018).

H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018
(docs/loss_landscape.md). Drop-in Lightning callback: imports only torch, lightning, numpy, tqdm and, lazily,
scipy (Hessian eigenvalues) and matplotlib (plots, in ``loss_landscape_plots.py`` beside this file).

What it computes, around the model's own weights theta* (all written to ``out_dir``):

* **Random-direction surfaces.** 1-D ``f(a) = L(theta* + a d)`` and 2-D ``f(a, b) = L(theta* + a d + b e)``,
  loss and accuracy, with Gaussian directions normalised ``filter``-wise (default: every output-channel slice
  ``d_ij`` is rescaled to ``||theta_ij||``; a linear layer's rows are its filters), ``layer``-wise, ``weight``
  (``d * theta``), ``dfilter``/``dlayer`` (unit norm per filter/layer) or ``none``. ``ignore="biasbn"`` (the
  default, as in every script of the reference code) sets the direction of every tensor with ``dim <= 1``
  (biases, BN affine parameters and, for ``states``, BN running statistics) to **zero**; with ``ignore="none"``
  those tensors get random directions normalised by the same rule (their elements are their filters) -- not
  the non-random ``d = theta`` of the reference code (docs/loss_landscape.md#differences-from-the-released-code). ``dir_type="weights"`` perturbs the
  parameters only; ``"states"`` perturbs every floating-point entry of the ``state_dict`` (running statistics
  included; integer buffers such as ``num_batches_tracked`` never move). Directions are drawn from their own
  ``torch.Generator`` seeded with ``seed`` (123, the reference's) so training RNG streams are untouched.
* **Sharpness number** (``sharpness_directions=K``): the mean loss increase ``L(theta* +- r d_k) - L(theta*)``
  over K fresh directions (same normalisation) and both signs, at radius ``r = sharpness_radius`` (0.5).
* **Linear interpolation** (``interpolate_to=<ckpt>``): ``f(a) = L((1 - a) theta + a theta')``; ``states`` by
  default so BN statistics are interpolated too (the model sits at 0, the checkpoint at 1).
* **PCA trajectory** (``trajectory="auto" | <dir> | <glob>``): checkpoints theta_0..theta_n of the run, rows
  ``theta_i - theta*`` (parameters; ``dim <= 1`` zeroed under ``ignore="biasbn"``), 2-component PCA of the
  centred rows; the unit-norm principal axes (not filter-normalised) are the directions, the path is
  projected onto them (``x_i = <theta_i - theta*, d_x>``), the loss surface along them is evaluated under the
  path, and the axes are labelled with each component's explained-variance ratio. Epochs where the learning
  rate changed are marked. ``"auto"`` reads the trainer's ModelCheckpoint directories (a recipe adds one with
  ``save_top_k: -1, every_n_epochs: 1`` to keep every epoch); with ``save_initial=True`` the callback also
  stores the weights at fit start (``initial.ckpt`` in ``out_dir``) so the path starts at the initialisation.
* **Hessian eigenvalue-ratio map** (``hessian_grid``): at every point of a (smaller) grid, the extreme
  eigenvalues of the Hessian of the loss w.r.t. the parameters with ``dim > 1`` (scipy's ``eigsh`` Lanczos on
  Hessian-vector products, both ends of the spectrum in one run), and ``|lambda_min / lambda_max|``.

Evaluation: ``eval()`` mode (BN running statistics, no dropout), no gradient, mean cross-entropy (or ``mse`` of
the softmax against one-hot labels, the reference's alternative) and top-1 accuracy in percent, over the whole
evaluation data **without augmentation**. The data is, in this order: the ``data`` argument (a ``DataLoader`` or
a ``Dataset``, used as given); a DataModule's ``landscape_dataset(split)``; its ``<split>_set`` attribute (a
datamodule with an ``eval_transform()`` method, like this project's CIFAR ones, has that transform put on a
shallow copy; a ``Random*`` transform without ``eval_transform()`` is refused); its ``<split>_dataloader()``;
or, without a DataModule, the dataloaders given to ``trainer.fit``/``trainer.validate`` (``split`` is
``train`` by default, as in the paper). A dataloader's dataset is re-read in order with its collate function.
The data, scipy (for ``hessian_grid``) and the plots are checked when the run starts (``setup``, or
``on_train_start`` for plain dataloaders), never only after training. Batches are cached on
the model's device when they fit in ``cache_gb`` (in-memory ``TensorDataset``s are sliced directly), so every
grid point costs one forward pass over the data plus one weight update.

Distributed: grid points are dealt round-robin to the ranks of the trainer's strategy (DDP etc.), each rank
evaluates its points over the whole split, and the results are summed across ranks with ``strategy.reduce``
(what the reference code needs MPI for). Only rank 0 writes files and logs.

Exactness: the weights, buffers, gradients and per-module train/eval flags are snapshotted before anything runs
and copied back afterwards (also on error): the model is bit-identical after the callback. Grid values within
1e-12 of the span of zero are snapped to exactly 0, so the surface centre is exactly the model's own loss.

In any Lightning project (this file copied alone; ``loss_landscape_plots.py`` beside it for PNGs)::

    from loss_landscape import LossLandscape
    trainer = L.Trainer(callbacks=[LossLandscape(x_grid="-1:1:21", y_grid="-1:1:21")])
    trainer.fit(model, datamodule=dm)                         # or train/val DataLoaders
    trainer.validate(model, datamodule=dm, ckpt_path="last")  # a saved checkpoint's landscape

Plots (``plot=None``, the default): PNGs when ``loss_landscape_plots.py`` and matplotlib import; otherwise only the
``.npz`` files, and setup says once what is missing. ``plot=True`` makes setup fail instead; ``plot=False``
writes no PNGs. Files read by the callback (``interpolate_to``, trajectory checkpoints, ``dir_file``) are loaded
with ``torch.load(weights_only=True)``; ``trust_checkpoint=True`` is the opt-in for files that need more.

When: ``run_on="both"`` (default) runs at the end of training (``on_train_end``: before Lightning's teardown,
so the model is still on its device and the process group alive) and at the end of ``trainer.validate``, which
is how saved checkpoints are processed::

    python main.py validate --config recipes/landscape_resnet56_cifar10.yaml \\
        --ckpt_path runs/landscape_resnet56_cifar10/checkpoints/last.ckpt

or, for a recipe without the callback::

    python main.py validate --config recipes/baseline_resnet56_cifar10.yaml --ckpt_path <ckpt> \\
        --trainer.callbacks+=callbacks.loss_landscape.LossLandscape \\
        --trainer.callbacks.init_args.x_grid=-1:1:51 --trainer.callbacks.init_args.y_grid=-1:1:51

Under ``fast_dev_run`` only a 3-point 1-D curve on ``fast_dev_run`` batches is computed (saved, not plotted);
the 2-D surface, sharpness, interpolation, trajectory and Hessian are skipped with a message.

Outputs (``out_dir``, default ``<default_root_dir>/landscape/<fit_end | checkpoint stem>``): ``surface_1d.npz``
(``x``, ``loss``, ``acc``), ``surface_2d.npz`` (``x``, ``y``, ``loss`` and ``acc`` of shape ``[len(y),
len(x)]``, i.e. ``loss[j, i] = f(x[i], y[j])``), ``interpolation.npz``, ``trajectory.npz``, ``hessian.npz``,
``directions.pt`` / ``directions_pca.pt`` (reusable with ``dir_file``), ``summary.json`` and the PNGs (1-D
curves, contour, filled contour, 3-D surface, trajectory, eigenvalue ratio), which are also logged to every
logger that has ``log_image`` (W&B) under ``landscape/<name>``. The scalar results (centre loss and accuracy,
sharpness, the 2-D surface's local minima and non-convex fraction, ...; :func:`landscape_scalars`) go to every
logger and into ``trainer.callback_metrics`` under ``landscape/<name>``, so whatever records a run's final metrics
after ``fit``/``validate`` (this project's main.py: ``metrics/<subcommand>.json``) has them.
"""

from __future__ import annotations

import copy
import glob as globlib
import json
import math
import os
import pickle
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

DirType = Literal["weights", "states"]
Norm = Literal["filter", "layer", "weight", "dfilter", "dlayer", "none"]
Ignore = Literal["biasbn", "none"]
LossName = Literal["cross_entropy", "mse"]
RunOn = Literal["fit_end", "validate_end", "both"]
Split = Literal["train", "val", "test"]

DIRECTIONS_FORMAT = "loss_landscape.directions/1"
_NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
_EPS = 1e-10  # the reference code's guard in ||w|| / (||d|| + eps)

__all__ = [
    "EvalData", "LandscapeError", "LossLandscape", "compute_points", "compute_surface", "direction_targets",
    "eval_data_from_loader", "evaluate", "hessian_extreme_eigs", "landscape_scalars", "load_directions",
    "load_state_dict_file", "make_eval_data", "normalize_direction", "parse_grid", "pca_directions", "random_direction", "save_directions", "sharpness",
    "surface_stats", "ModelSnapshot",
]


class LandscapeError(ValueError):
    """A user-facing configuration or input error of the loss-landscape tools (``user_facing`` tells an entry
    point to print it as one paragraph instead of a traceback)."""

    user_facing = True


# ================================================================================================ grids
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_GRID = re.compile(rf"^\s*({_NUM})\s*:\s*({_NUM})\s*:\s*(\d+)\s*$")


def parse_grid(spec: str, what: str = "grid") -> np.ndarray:
    """``"min:max:num"`` -> ``num`` inclusive, evenly spaced float64 values (``np.linspace``).

    Values within 1e-12 of the span of zero are set to exactly 0.0 so that the grid centre is the model itself.
    Raises :class:`LandscapeError` for anything else (``"-1:1"``, ``"-1:1:0"``, ``"1:-1:5"``, ``"a:b:c"``, ...).
    """
    if not isinstance(spec, str):
        raise LandscapeError(f"{what}: expected a string 'min:max:num' such as '-1:1:51', got {spec!r}")
    m = _GRID.match(spec)
    if m is None:
        raise LandscapeError(
            f"{what}: {spec!r} is not a grid spec; write 'min:max:num' with numbers min <= max and an integer "
            f"num >= 1, e.g. '-1:1:51' (51 points from -1 to 1, both included)"
        )
    lo, hi, num = float(m.group(1)), float(m.group(2)), int(m.group(3))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise LandscapeError(f"{what}: {spec!r}: min and max must be finite numbers")
    if num < 1:
        raise LandscapeError(f"{what}: {spec!r}: the number of points must be >= 1, got {num}")
    if lo > hi:
        raise LandscapeError(f"{what}: {spec!r}: min ({lo:g}) is larger than max ({hi:g})")
    if num > 1 and lo == hi:
        raise LandscapeError(f"{what}: {spec!r}: min equals max, so {num} points would all be the same")
    values = np.linspace(lo, hi, num, dtype=np.float64)
    values[np.abs(values) <= 1e-12 * max(hi - lo, 1.0)] = 0.0
    return values


def _minimal_grid(values: np.ndarray) -> np.ndarray:
    """The 3-point version of a grid (min, centre, max) used under ``fast_dev_run``."""
    if len(values) <= 3:
        return values
    lo, hi = float(values[0]), float(values[-1])
    mid = 0.0 if lo <= 0.0 <= hi else (lo + hi) / 2
    return np.array([lo, mid, hi], dtype=np.float64)


# ================================================================================================ directions
def direction_targets(module: nn.Module, dir_type: DirType = "weights") -> dict[str, Tensor]:
    """The live tensors a direction moves, by ``state_dict`` name.

    ``weights``: every parameter. ``states``: every floating-point ``state_dict`` entry (parameters and buffers
    such as BN running statistics; integer buffers like ``num_batches_tracked`` are left out).
    """
    if dir_type == "weights":
        return dict(module.named_parameters())
    if dir_type == "states":
        return {k: v for k, v in module.state_dict(keep_vars=True).items() if torch.is_floating_point(v)}
    raise LandscapeError(f"dir_type must be 'weights' or 'states', got {dir_type!r}")


def normalize_direction(d: Tensor, w: Tensor, norm: Norm = "filter") -> Tensor:
    """Normalise direction ``d`` against weights ``w`` in place (and return it).

    Filters are the slices along dim 0 (output channels of a conv, rows of a linear layer; the elements of a
    1-D tensor). ``filter``: ``d_i *= ||w_i|| / (||d_i|| + 1e-10)``; ``layer``: the same for the whole tensor;
    ``weight``: ``d *= w``; ``dfilter`` / ``dlayer``: unit norm per filter / per tensor; ``none``: unchanged.
    """
    if d.shape != w.shape:
        raise LandscapeError(f"direction shape {tuple(d.shape)} does not match weight shape {tuple(w.shape)}")
    w = w.detach()
    if norm == "none":
        return d
    if norm == "weight":
        return d.mul_(w)
    if d.dim() == 0:  # a scalar is its own filter and layer
        d2, w2 = d.reshape(1, 1), w.reshape(1, 1)
    else:
        d2, w2 = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
    if norm == "filter":
        d2.mul_((w2.norm(dim=1, keepdim=True) / (d2.norm(dim=1, keepdim=True) + _EPS)).to(d.dtype))
    elif norm == "dfilter":
        d2.div_(d2.norm(dim=1, keepdim=True) + _EPS)
    elif norm == "layer":
        d.mul_(w.norm() / (d.norm() + _EPS))
    elif norm == "dlayer":
        d.div_(d.norm() + _EPS)
    else:
        raise LandscapeError(f"norm must be one of {_NORMS}, got {norm!r}")
    return d


def random_direction(
    targets: dict[str, Tensor],
    norm: Norm = "filter",
    ignore: Ignore = "biasbn",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """A Gaussian direction shaped like ``targets``, normalised with ``norm``.

    With ``ignore="biasbn"`` every tensor with ``dim <= 1`` gets a zero direction. Drawn on the CPU in float32
    from ``generator`` in the order of ``targets`` (identical on every rank), then moved to each tensor's device.
    """
    if norm not in _NORMS:
        raise LandscapeError(f"norm must be one of {_NORMS}, got {norm!r}")
    if ignore not in ("biasbn", "none"):
        raise LandscapeError(f"ignore must be 'biasbn' or 'none', got {ignore!r}")
    out: dict[str, Tensor] = {}
    for name, w in targets.items():
        d = torch.randn(tuple(w.shape), generator=generator, dtype=torch.float32)
        if ignore == "biasbn" and w.dim() <= 1:
            d.zero_()
        else:
            normalize_direction(d, w.detach().float().cpu(), norm)
        out[name] = d.to(device=w.device, dtype=w.dtype)
    return out


def save_directions(path: str | os.PathLike, directions: Sequence[dict[str, Tensor]], dir_type: DirType,
                    meta: dict[str, Any] | None = None) -> None:
    """Write directions (1 or 2) with the names and shapes of the tensors they were made for."""
    first = directions[0]
    torch.save({
        "format": DIRECTIONS_FORMAT,
        "dir_type": dir_type,
        "names": list(first),
        "shapes": [list(v.shape) for v in first.values()],
        "directions": [{k: v.detach().cpu() for k, v in d.items()} for d in directions],
        "meta": _jsonable(dict(meta or {})),  # plain Python values: the file loads with weights_only=True
    }, path)


def load_directions(path: str | os.PathLike, targets: dict[str, Tensor],
                    dir_type: DirType | None = None) -> list[dict[str, Tensor]]:
    """Read a directions file and check it was made for these tensors; returns the directions on their devices.

    Raises ``FileNotFoundError`` when the file is missing and :class:`LandscapeError` when it is not a directions
    file, has another ``dir_type``, or names / shapes differ from the model's (a file made for another model).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LossLandscape: the directions file {path} does not exist; give the "
                                f"directions.pt (or directions_pca.pt) that an earlier run wrote into its out_dir")
    blob = _torch_load(path, "directions file")
    if not isinstance(blob, dict) or blob.get("format") != DIRECTIONS_FORMAT:
        raise LandscapeError(f"LossLandscape: {path} is not a directions file written by this callback "
                             f"(no format tag {DIRECTIONS_FORMAT!r})")
    if dir_type is not None and blob["dir_type"] != dir_type:
        raise LandscapeError(f"LossLandscape: {path} holds {blob['dir_type']!r} directions but dir_type is "
                             f"{dir_type!r}; set dir_type: {blob['dir_type']}")
    _check_matches(path, "directions file", dict(zip(blob["names"], map(tuple, blob["shapes"]))), targets,
                   "made for another model")
    return [{k: d[k].to(device=targets[k].device, dtype=targets[k].dtype) for k in targets}
            for d in blob["directions"]]


def _check_matches(path: str, what: str, found: dict[str, tuple[int, ...]], targets: dict[str, Tensor],
                   reason: str) -> None:
    """Raise a LandscapeError listing missing / extra names and shape mismatches between ``found`` and targets."""
    missing = [k for k in targets if k not in found]
    extra = [k for k in found if k not in targets]
    shapes = [f"{k}: {list(found[k])} vs model {list(targets[k].shape)}" for k in targets
              if k in found and tuple(found[k]) != tuple(targets[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's tensors are missing (e.g. {', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} tensors are not in the model (e.g. {', '.join(extra[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shapes differ (e.g. {'; '.join(shapes[:3])})")
    raise LandscapeError(f"LossLandscape: the {what} {path} was {reason}: " + "; ".join(parts) +
                         ". Use a file made for the same architecture (same layers and widths).")


def load_state_dict_file(path: str | os.PathLike, targets: dict[str, Tensor], what: str = "checkpoint",
                         reference: dict[str, Tensor] | None = None, trust_checkpoint: bool = False
                         ) -> dict[str, Tensor]:
    """The entries of ``targets`` read from a Lightning checkpoint (or a plain state_dict) on the CPU.

    ``FileNotFoundError`` when the file is missing; :class:`LandscapeError` when it is not a checkpoint or
    belongs to another architecture: a target is missing or has another shape, or (when ``reference``, the
    model's full ``state_dict``, is given) the file holds entries the model does not have. The file is read with
    ``torch.load(weights_only=True)`` unless ``trust_checkpoint``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"LossLandscape: the {what} {path} does not exist. Train the run that writes it first or correct "
            "the path.")
    blob = _torch_load(path, what, trust_checkpoint)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise LandscapeError(f"LossLandscape: {path} is not a Lightning checkpoint or state_dict")
    expected = dict(targets)
    if reference is not None:
        expected.update({k: v for k, v in reference.items() if k not in expected})
        found = {k: tuple(v.shape) for k, v in state.items()}
    else:
        found = {k: tuple(v.shape) for k, v in state.items() if k in targets}
    _check_matches(path, what, found, expected, "saved from another architecture than this model")
    return {k: state[k] for k in targets}


# ================================================================================================ evaluation data
@dataclass
class EvalData:
    """The evaluation split as (input, target) batches: cached on ``device`` or re-read from ``loader``."""

    num_samples: int
    device: torch.device
    batches: list[tuple[Tensor, Tensor]] | None = None
    loader: Any = None
    max_batches: int | None = None
    dtype: torch.dtype | None = None  # floating inputs are cast to it (a model held in bf16, say)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.batches is not None:
            for x, y in self.batches:
                yield self._cast(x), y
            return
        for i, batch in enumerate(self.loader):
            if self.max_batches is not None and i >= self.max_batches:
                break
            x, y = _xy(batch)
            yield self._cast(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)

    def _cast(self, x: Tensor) -> Tensor:
        return x.to(self.dtype) if self.dtype is not None and x.is_floating_point() else x

    def subset(self, max_samples: int) -> EvalData:
        """The first ``max_samples`` samples (cached data only)."""
        if self.batches is None or max_samples >= self.num_samples:
            return self
        out, n = [], 0
        for x, y in self.batches:
            take = min(len(y), max_samples - n)
            out.append((x[:take], y[:take]))
            n += take
            if n >= max_samples:
                break
        return EvalData(n, self.device, out, dtype=self.dtype)


def _xy(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, dict):
        return batch["x"] if "x" in batch else batch["input"], batch["y"] if "y" in batch else batch["target"]
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1]
    raise LandscapeError("LossLandscape: batches must be (input, target, ...) tuples or dicts with x/y")


def make_eval_data(dataset: Any, batch_size: int = 128, device: torch.device | str = "cpu",
                   max_samples: int | None = None, cache_gb: float = 4.0, num_workers: int = 0,
                   max_batches: int | None = None) -> EvalData:
    """Batches of ``dataset`` in order (no shuffling), cached on ``device`` when they fit in ``cache_gb``."""
    from torch.utils.data import DataLoader, Subset, TensorDataset

    device = torch.device(device)
    n = len(dataset)
    if max_samples is not None:
        n = min(n, int(max_samples))
    if max_batches is not None:
        n = min(n, int(max_batches) * batch_size)
    if n <= 0:
        raise LandscapeError("LossLandscape: the evaluation split is empty")
    if isinstance(dataset, TensorDataset):  # in memory: slice, no per-sample collation
        xs, ys = dataset.tensors[0][:n], dataset.tensors[1][:n]
        return EvalData(n, device, [(xs[i:i + batch_size].to(device), ys[i:i + batch_size].to(device))
                                    for i in range(0, n, batch_size)])
    if n < len(dataset):
        dataset = Subset(dataset, range(n))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    first_x, _ = _xy(next(iter(DataLoader(dataset, batch_size=1))))
    estimate = first_x.element_size() * first_x.numel() * n
    if estimate > cache_gb * 2**30:
        return EvalData(n, device, loader=loader)
    batches = []
    for batch in loader:
        x, y = _xy(batch)
        batches.append((x.to(device), y.to(device)))
    return EvalData(n, device, batches)


def eval_data_from_loader(loader: Any, device: torch.device | str = "cpu", batch_size: int | None = None,
                          max_samples: int | None = None, cache_gb: float = 4.0,
                          max_batches: int | None = None) -> EvalData:
    """Evaluation batches from a ``DataLoader``: its map-style dataset re-read in order (no shuffling) with the
    loader's collate function and ``batch_size`` (default: the loader's), or, for an iterable dataset, the
    loader's own batches. Cached on ``device`` when they fit in ``cache_gb``."""
    from torch.utils.data import DataLoader, IterableDataset, Subset

    device = torch.device(device)
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__"):
        bs = int(batch_size or getattr(loader, "batch_size", None) or 128)
        n = len(dataset)
        if max_samples is not None:
            n = min(n, int(max_samples))
        if max_batches is not None:
            n = min(n, int(max_batches) * bs)
        if n <= 0:
            raise LandscapeError("LossLandscape: the evaluation data is empty")
        if n < len(dataset):
            dataset = Subset(dataset, range(n))
        loader = DataLoader(dataset, batch_size=bs, shuffle=False, collate_fn=loader.collate_fn,
                            num_workers=getattr(loader, "num_workers", 0))
    batches: list[tuple[Tensor, Tensor]] | None = []
    n, size = 0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = _xy(batch)
        if max_samples is not None and n + len(y) > max_samples:
            x, y = x[: max_samples - n], y[: max_samples - n]
        if batches is not None:
            size += x.element_size() * x.numel()
            if size > cache_gb * 2**30:
                batches = None  # too large to cache: re-read the loader at every grid point
            else:
                batches.append((x.to(device), y.to(device)))
        n += len(y)
        if max_samples is not None and n >= max_samples:
            break
    if n == 0:
        raise LandscapeError("LossLandscape: the evaluation data is empty")
    if batches is None:
        return EvalData(n, device, loader=loader, max_batches=max_batches)
    return EvalData(n, device, batches)


def _loss_sum(logits: Tensor, y: Tensor, loss: LossName) -> Tensor:
    logits = logits.float()
    if loss == "cross_entropy":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "mse":
        one_hot = F.one_hot(y, logits.shape[1]).float()
        return (logits.softmax(dim=1) - one_hot).pow(2).mean(dim=1).sum()
    raise LandscapeError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")


@torch.no_grad()
def evaluate(model: nn.Module, data: EvalData, loss: LossName = "cross_entropy") -> tuple[float, float]:
    """Mean loss and top-1 accuracy (percent) of ``model`` as it is (the caller sets ``eval()``) over ``data``."""
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    for x, y in data:
        logits = model(x)
        total += _loss_sum(logits, y, loss).double()
        correct += (logits.argmax(dim=1) == y).sum()
    return total.item() / data.num_samples, 100.0 * correct.item() / data.num_samples


# ================================================================================================ exact restore
class ModelSnapshot:
    """Snapshot of every state tensor, gradient and per-module training flag; ``restore()`` copies them back."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.state = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}
        self.grads = {n: p.grad for n, p in module.named_parameters()}
        self.requires_grad = {n: p.requires_grad for n, p in module.named_parameters()}
        self.modes = {name: m.training for name, m in module.named_modules()}

    @torch.no_grad()
    def restore(self) -> None:
        live = self.module.state_dict(keep_vars=True)
        for k, v in self.state.items():
            live[k].detach().copy_(v)
        for n, p in self.module.named_parameters():
            p.grad = self.grads.get(n)
            p.requires_grad_(self.requires_grad.get(n, p.requires_grad))
        for name, m in self.module.named_modules():
            m.training = self.modes.get(name, m.training)


class _Mover:
    """Sets ``targets = origin + sum_k c_k d_k`` for coefficient vectors c (tensors with zero directions skipped)."""

    def __init__(self, targets: dict[str, Tensor], directions: Sequence[dict[str, Tensor]]) -> None:
        self.items = []
        for name, t in targets.items():
            ds = [d[name] for d in directions]
            if all(not bool(torch.any(v != 0)) for v in ds):
                continue
            self.items.append((t, t.detach().clone(), ds))

    @torch.no_grad()
    def set(self, coeffs: Sequence[float]) -> None:
        for t, origin, ds in self.items:
            t = t.detach()
            t.copy_(origin)
            for c, d in zip(coeffs, ds, strict=True):
                if c != 0.0:
                    t.add_(d, alpha=float(c))

    @torch.no_grad()
    def reset(self) -> None:
        for t, origin, _ in self.items:
            t.detach().copy_(origin)


# ================================================================================================ grids of points
Reducer = Callable[[Tensor], Tensor]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def compute_points(
    model: nn.Module,
    data: EvalData,
    targets: dict[str, Tensor],
    directions: Sequence[dict[str, Tensor]],
    coords: np.ndarray,
    loss: LossName = "cross_entropy",
    rank: int = 0,
    world_size: int = 1,
    reduce: Reducer | None = None,
    progress: bool = False,
    desc: str = "loss landscape",
) -> dict[str, Any]:
    """Loss and accuracy at ``theta + sum_k coords[p, k] d_k`` for every row p of ``coords`` ([P, K]).

    Rank ``r`` evaluates rows ``r, r + world_size, ...`` over the whole of ``data``; ``reduce`` (a sum over
    ranks, e.g. ``strategy.reduce(t, reduce_op="sum")``) combines them. The model is put in ``eval()`` and
    restored exactly (values, gradients, train/eval flags) afterwards. Returns ``loss`` and ``acc`` ([P]
    float64), ``seconds`` (this rank's wall time for its points), ``seconds_gathered`` (until the results of all
    ranks are combined) and ``points_per_rank`` (this rank's).
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    if coords.shape[1] != len(directions):
        raise LandscapeError(f"{coords.shape[1]} coordinates per point but {len(directions)} directions")
    n_points = len(coords)
    mine = list(range(rank, n_points, world_size))
    result = torch.zeros(n_points, 3, dtype=torch.float64, device=data.device)  # loss, acc, owner flag
    snapshot = ModelSnapshot(model)
    mover = _Mover(targets, directions)
    start = time.perf_counter()
    try:
        model.eval()
        with _progress(len(mine), desc, progress) as bar:
            for p in mine:
                mover.set(coords[p])
                lo, acc = evaluate(model, data, loss)
                result[p] = torch.tensor([lo, acc, 1.0], dtype=torch.float64)
                bar.update(1)
    finally:
        mover.reset()
        snapshot.restore()
    seconds = time.perf_counter() - start
    if world_size > 1 and reduce is not None:
        result = reduce(result)
    result = result.cpu().numpy()
    seconds_gathered = time.perf_counter() - start
    if not np.all(result[:, 2] == 1.0):
        raise RuntimeError(f"LossLandscape: {int(np.sum(result[:, 2] != 1))} grid points were not evaluated "
                           f"exactly once across {world_size} ranks")
    return {"loss": result[:, 0], "acc": result[:, 1], "seconds": seconds, "seconds_gathered": seconds_gathered,
            "points_per_rank": len(mine)}


def compute_surface(
    model: nn.Module,
    data: EvalData,
    targets: dict[str, Tensor],
    directions: Sequence[dict[str, Tensor]],
    xs: np.ndarray,
    ys: np.ndarray | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """1-D (``ys`` None: ``loss[i] = f(xs[i])``) or 2-D (``loss[j, i] = f(xs[i], ys[j])``) surface."""
    xs = np.asarray(xs, dtype=np.float64)
    if ys is None:
        out = compute_points(model, data, targets, directions[:1], xs[:, None], **kwargs)
        return {"x": xs, **out}
    ys = np.asarray(ys, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)  # [len(y), len(x)]
    out = compute_points(model, data, targets, directions[:2], np.stack([gx.ravel(), gy.ravel()], 1), **kwargs)
    out["loss"] = out["loss"].reshape(len(ys), len(xs))
    out["acc"] = out["acc"].reshape(len(ys), len(xs))
    return {"x": xs, "y": ys, **out}


def sharpness(
    model: nn.Module,
    data: EvalData,
    targets: dict[str, Tensor],
    num_directions: int = 8,
    radius: float = 0.5,
    norm: Norm = "filter",
    ignore: Ignore = "biasbn",
    seed: int = 123,
    **kwargs: Any,
) -> dict[str, Any]:
    """Mean loss increase ``L(theta +- r d_k) - L(theta)`` over ``num_directions`` normalised random directions.

    The directions are drawn from ``torch.Generator().manual_seed(seed + 1)`` (so they differ from the surface's).
    Returns ``mean_increase``, ``std_increase`` (over the 2K evaluations), ``center_loss``, ``losses`` [K, 2].
    """
    if num_directions < 1:
        raise LandscapeError(f"sharpness needs at least one direction, got {num_directions}")
    g = torch.Generator().manual_seed(int(seed) + 1)
    dirs = [random_direction(targets, norm, ignore, g) for _ in range(num_directions)]
    coords = np.zeros((2 * num_directions + 1, num_directions))
    for k in range(num_directions):
        coords[2 * k, k], coords[2 * k + 1, k] = radius, -radius
    out = compute_points(model, data, targets, dirs, coords, **kwargs)
    center = float(out["loss"][-1])
    losses = out["loss"][:-1].reshape(num_directions, 2)
    inc = losses - center
    return {"radius": radius, "num_directions": num_directions, "center_loss": center,
            "mean_increase": float(inc.mean()), "std_increase": float(inc.std(ddof=1)) if inc.size > 1 else 0.0,
            "losses": losses, "seconds": out["seconds"]}


def surface_stats(x: np.ndarray, y: np.ndarray, loss: np.ndarray, radius: float | None = None) -> dict[str, Any]:
    """Shape numbers of a 2-D surface ``loss[j, i] = f(x[i], y[j])``.

    ``local_minima``: grid points strictly below their 8 neighbours (1 for a convex bowl); ``nonconvex_fraction``:
    interior points whose 2x2 finite-difference Hessian has a negative eigenvalue (below -1e-6 times the largest
    curvature on the grid); ``mean_increase_at_radius``: mean of ``f - f(0, 0)`` over the grid points on the
    square ``max(|a|, |b|) = radius`` (when ``radius`` is given and on the grid).
    """
    f = np.asarray(loss, dtype=np.float64)
    finite = np.where(np.isfinite(f), f, np.inf)
    pad = np.pad(finite, 1, constant_values=np.inf)
    neigh = np.stack([pad[1 + di:1 + di + f.shape[0], 1 + dj:1 + dj + f.shape[1]]
                      for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)])
    minima = int(np.sum(np.all(finite[None] < neigh, axis=0)))
    out: dict[str, Any] = {"local_minima": minima}
    if f.shape[0] >= 3 and f.shape[1] >= 3:
        hx, hy = float(x[1] - x[0]), float(y[1] - y[0])
        fxx = (f[1:-1, 2:] - 2 * f[1:-1, 1:-1] + f[1:-1, :-2]) / hx**2
        fyy = (f[2:, 1:-1] - 2 * f[1:-1, 1:-1] + f[:-2, 1:-1]) / hy**2
        fxy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * hx * hy)
        lam_min = (fxx + fyy) / 2 - np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
        lam_max = (fxx + fyy) / 2 + np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
        ok = np.isfinite(lam_min)
        scale = float(np.max(np.abs(lam_max[ok]))) if ok.any() else 0.0
        out["nonconvex_fraction"] = float(np.mean(lam_min[ok] < -1e-6 * scale)) if ok.any() else float("nan")
    if radius is not None:
        i0, j0 = np.flatnonzero(x == 0.0), np.flatnonzero(y == 0.0)
        ring = np.maximum(np.abs(x)[None, :], np.abs(y)[:, None])
        on = np.isclose(ring, radius, atol=1e-9)
        if len(i0) and len(j0) and on.any():
            out["mean_increase_at_radius"] = float(np.mean(f[on] - f[j0[0], i0[0]]))
    return out


# ================================================================================================ Hessian
def hessian_extreme_eigs(model: nn.Module, data: EvalData, params: dict[str, Tensor],
                         loss: LossName = "cross_entropy", tol: float = 1e-2, maxiter: int | None = 50,
                         seed: int = 0) -> tuple[float, float, int]:
    """(lambda_min, lambda_max, number of HVPs) of the Hessian of the mean loss over ``data`` w.r.t. ``params``.

    ARPACK Lanczos (``scipy.sparse.linalg.eigsh``, ``which="BE"``, k=2: one eigenvalue from each end of the
    spectrum) on a Hessian-vector-product operator; each product is a double backward over the whole of
    ``data``. ``model`` is evaluated as it is (the caller sets ``eval()``). A run that does not converge within
    ``maxiter`` restarts returns its current estimates.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    names = list(params)
    tensors = [params[k] for k in names]
    sizes = [t.numel() for t in tensors]
    n = sum(sizes)
    if n < 4:
        raise LandscapeError("the Hessian ratio needs at least 4 parameters with dim > 1")
    device = tensors[0].device
    count = [0]
    req = [t.requires_grad for t in tensors]

    def hvp(v_np: np.ndarray) -> np.ndarray:
        count[0] += 1
        v = torch.from_numpy(np.ascontiguousarray(v_np, dtype=np.float32).reshape(-1)).to(device)
        vs = [c.view_as(t) for c, t in zip(v.split(sizes), tensors, strict=True)]
        acc = [torch.zeros_like(t, dtype=torch.float64) for t in tensors]
        with torch.enable_grad():
            for x, y in data:
                lo = _loss_sum(model(x), y, loss) / data.num_samples
                grads = torch.autograd.grad(lo, tensors, create_graph=True)
                dot = sum((g * u).sum() for g, u in zip(grads, vs, strict=True))
                hv = torch.autograd.grad(dot, tensors)
                for a, h in zip(acc, hv, strict=True):
                    a += h.double()
        return torch.cat([a.reshape(-1) for a in acc]).cpu().numpy()

    op = LinearOperator((n, n), matvec=hvp, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        for t in tensors:
            t.requires_grad_(True)
        try:
            vals = eigsh(op, k=2, which="BE", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False)
        except ArpackNoConvergence as err:
            vals = err.eigenvalues if len(err.eigenvalues) else np.array([np.nan, np.nan])
    finally:
        for t, r in zip(tensors, req, strict=True):
            t.requires_grad_(r)
    vals = np.sort(np.asarray(vals, dtype=np.float64))
    return float(vals[0]), float(vals[-1]), count[0]


# ================================================================================================ PCA trajectory
def pca_directions(rows: Sequence[dict[str, Tensor]], center: dict[str, Tensor], ignore: Ignore = "biasbn"
                   ) -> dict[str, Any]:
    """2-component PCA of the trajectory ``rows[i] - center`` (docs/loss_landscape.md#pca-trajectory).

    ``rows`` and ``center`` map the same names to tensors. Entries with ``dim <= 1`` are zeroed under
    ``ignore="biasbn"``. The rows are centred (as sklearn's PCA does), the two principal axes are returned as
    unit-norm directions (``directions``: two dicts shaped like ``center``, on the CPU, **not** filter-normalised),
    with ``explained_variance_ratio`` and the projections ``x``/``y`` of every uncentred row
    ``<rows[i] - center, d>``. Signs are fixed so that the first row has non-positive coordinates.
    """
    names = [k for k in center]
    keep = [k for k in names if not (ignore == "biasbn" and center[k].dim() <= 1)]
    if len(rows) < 2:
        raise LandscapeError(f"the PCA trajectory needs at least 2 checkpoints, got {len(rows)}")
    flat_c = torch.cat([center[k].detach().float().cpu().reshape(-1) for k in keep])
    m = torch.stack([torch.cat([r[k].detach().float().cpu().reshape(-1) for k in keep]) - flat_c for r in rows])
    mc = m - m.mean(dim=0, keepdim=True)
    gram = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    for start in range(0, mc.shape[1], 1 << 20):  # float64 Gram matrix, column block by block
        block = mc[:, start:start + (1 << 20)].double()
        gram += block @ block.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    total = float(evals.sum())
    if total <= 0 or float(evals[0]) <= 0:
        raise LandscapeError("the checkpoints of the trajectory are all identical: nothing to project")
    comps, ratios = [], []
    for k in range(2):
        if float(evals[k]) <= 1e-12 * total:  # a path with one direction only: any orthogonal second axis
            raise LandscapeError("the trajectory spans fewer than 2 dimensions (need at least 3 distinct "
                                 "checkpoints)")
        comp = torch.mv(mc.T, evecs[:, k].float()).double()
        comp = comp / comp.norm()
        comps.append(comp)
        ratios.append(float(evals[k]) / total)
    coords = [torch.mv(m, c.float()).double().numpy() for c in comps]
    for k in range(2):
        if coords[k][0] > 0:
            comps[k], coords[k] = -comps[k], -coords[k]
    directions = []
    for comp in comps:
        d, offset = {}, 0
        for k in names:
            t = center[k]
            if k in keep:
                d[k] = comp[offset:offset + t.numel()].float().reshape(t.shape)
                offset += t.numel()
            else:
                d[k] = torch.zeros(tuple(t.shape), dtype=torch.float32)
        directions.append(d)
    return {"directions": directions, "explained_variance_ratio": ratios, "x": coords[0], "y": coords[1]}


def _checkpoint_files(spec: str) -> list[str]:
    if os.path.isdir(spec):
        return sorted(globlib.glob(os.path.join(spec, "*.ckpt")))
    return sorted(globlib.glob(spec))


# ================================================================================================ the callback
@dataclass
class _Context:
    trainer: pl.Trainer
    module: pl.LightningModule
    rank: int
    world: int
    out: Path
    progress: bool
    fast: bool
    summary: dict[str, Any] = field(default_factory=dict)
    images: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def reduce(self, t: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(t, reduce_op="sum")

    def kwargs(self, loss: LossName, desc: str) -> dict[str, Any]:
        return {"loss": loss, "rank": self.rank, "world_size": self.world, "reduce": self.reduce,
                "progress": self.progress and self.main, "desc": desc}


class LossLandscape(Callback):
    """Loss landscapes of the trained (or checkpointed) model; see the module docstring.

    Args:
        x_grid: grid of the first direction, ``"min:max:num"`` (inclusive); ``None`` skips random surfaces.
        y_grid: grid of the second direction; set it for a 2-D surface (the 1-D curve along x is computed too
            when ``surface_1d``).
        surface_1d: also compute the 1-D curve along x when ``y_grid`` is set.
        dir_type: ``weights`` (parameters) or ``states`` (every float state_dict entry).
        norm: direction normalisation: ``filter`` | ``layer`` | ``weight`` | ``dfilter`` | ``dlayer`` | ``none``.
        ignore: ``biasbn`` zeroes the direction of every tensor with dim <= 1; ``none`` perturbs them too.
        seed: seed of the directions' generator (the reference code's 123).
        dir_file: reuse directions from a ``directions.pt`` / ``directions_pca.pt`` of an earlier run (checked
            against the model's tensor names and shapes).
        split: ``train`` (the paper), ``val`` or ``test``; always evaluated without augmentation.
        batch_size: evaluation batch size (default: the datamodule's); results do not depend on it (eval mode).
        max_samples: evaluate on the first N samples of the split only (CPU studies); ``None`` = all.
        loss: ``cross_entropy`` or ``mse`` (softmax vs one-hot).
        sharpness_directions: K > 0 adds the sharpness number: mean loss increase at ``+- sharpness_radius``
            along K fresh normalised directions.
        sharpness_radius: radius of the sharpness number (0.5).
        interpolate_to: a checkpoint: 1-D linear interpolation from the model (0) to it (1).
        interpolate_grid: grid of the interpolation coefficient.
        interpolate_dir_type: ``states`` (default; interpolates BN statistics too) or ``weights``.
        trajectory: ``"auto"`` (the trainer's ModelCheckpoint directories), a directory or a glob of checkpoints
            for the PCA trajectory; ``None`` skips it.
        trajectory_points: points per axis of the loss surface under the trajectory (range fitted to the path).
        trajectory_grid: explicit grid (both axes) for that surface instead.
        save_initial: save the weights at fit start to ``out_dir/initial.ckpt`` and start the path there.
        hessian_grid: grid (per axis; 2-D when ``y_grid`` is set) of the |lambda_min/lambda_max| map.
        hessian_max_samples: samples used by the Hessian-vector products (``None`` = the whole split).
        hessian_tol: ARPACK tolerance (the reference's 1e-2).
        hessian_maxiter: ARPACK restarts at most.
        run_on: ``fit_end`` (end of training), ``validate_end`` (end of ``trainer.validate``) or ``both``.
        out_dir: output folder (default ``<default_root_dir>/landscape/<fit_end | checkpoint stem>``).
        plot: write PNGs (and log them to loggers with ``log_image``). ``None`` (default): when
            ``loss_landscape_plots.py`` (beside this file) and matplotlib import, else only the ``.npz`` files,
            said once at setup; ``True``: required, setup fails naming what is missing; ``False``: no PNGs.
        data: the evaluation data, a ``DataLoader`` or a map-style ``Dataset`` (used as given, ``split`` is then
            only a label). Default: the ``split`` of the run's data: a DataModule's ``landscape_dataset(split)``
            or ``<split>_set`` (augmentation removed, see the module docstring) or ``<split>_dataloader()``, or
            the dataloaders given to ``trainer.fit/validate``. Checked when the run starts, not after training.
        trust_checkpoint: checkpoints and directions files are read with ``torch.load(weights_only=True)``;
            True allows other Python objects in them (only for files you trust).
        contour_levels: ``(vmin, vmax, step)`` of the contour lines (the reference's 0.1, 10, 0.5).
        loss_max: clip of the 3-D surface plot (the reference's 5).
        cache_gb: cache the evaluation batches on the device when they take at most this many GiB.
        progress: progress bars over grid points (default: when the trainer shows a progress bar).
    """

    def __init__(
        self,
        x_grid: str | None = "-1:1:51",
        y_grid: str | None = None,
        surface_1d: bool = True,
        dir_type: DirType = "weights",
        norm: Norm = "filter",
        ignore: Ignore = "biasbn",
        seed: int = 123,
        dir_file: str | None = None,
        split: Split = "train",
        batch_size: int | None = None,
        max_samples: int | None = None,
        loss: LossName = "cross_entropy",
        sharpness_directions: int = 0,
        sharpness_radius: float = 0.5,
        interpolate_to: str | None = None,
        interpolate_grid: str = "-0.5:1.5:101",
        interpolate_dir_type: DirType = "states",
        trajectory: str | None = None,
        trajectory_points: int = 21,
        trajectory_grid: str | None = None,
        save_initial: bool = False,
        hessian_grid: str | None = None,
        hessian_max_samples: int | None = None,
        hessian_tol: float = 1e-2,
        hessian_maxiter: int = 50,
        run_on: RunOn = "both",
        out_dir: str | None = None,
        plot: bool | None = None,
        contour_levels: tuple[float, float, float] = (0.1, 10.0, 0.5),
        loss_max: float = 5.0,
        cache_gb: float = 4.0,
        progress: bool | None = None,
        data: Any = None,
        trust_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        choices = {"dir_type": (dir_type, ("weights", "states")), "norm": (norm, _NORMS),
                   "ignore": (ignore, ("biasbn", "none")), "split": (split, ("train", "val", "test")),
                   "loss": (loss, ("cross_entropy", "mse")), "run_on": (run_on, ("fit_end", "validate_end", "both")),
                   "interpolate_dir_type": (interpolate_dir_type, ("weights", "states"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise LandscapeError(f"LossLandscape: {name} must be one of {allowed}, got {value!r}")
        self.x = parse_grid(x_grid, "x_grid") if x_grid is not None else None
        self.y = parse_grid(y_grid, "y_grid") if y_grid is not None else None
        if self.y is not None and self.x is None:
            raise LandscapeError("LossLandscape: y_grid needs x_grid")
        self.interp_grid = parse_grid(interpolate_grid, "interpolate_grid")
        self.trajectory_grid = parse_grid(trajectory_grid, "trajectory_grid") if trajectory_grid else None
        self.hessian = parse_grid(hessian_grid, "hessian_grid") if hessian_grid is not None else None
        if self.hessian is not None and self.x is None:
            raise LandscapeError("LossLandscape: hessian_grid needs x_grid (the map uses the same directions)")
        for name, value in (("batch_size", batch_size), ("max_samples", max_samples),
                            ("hessian_max_samples", hessian_max_samples)):
            if value is not None and int(value) < 1:
                raise LandscapeError(f"LossLandscape: {name} must be >= 1, got {value}")
        if sharpness_directions < 0 or not sharpness_radius > 0:
            raise LandscapeError("LossLandscape: sharpness_directions must be >= 0 and sharpness_radius > 0")
        if trajectory_points < 2:
            raise LandscapeError(f"LossLandscape: trajectory_points must be >= 2, got {trajectory_points}")
        vmin, vmax, vstep = contour_levels
        if not (vmin < vmax and vstep > 0):
            raise LandscapeError(f"LossLandscape: contour_levels must be (vmin < vmax, step > 0), got {contour_levels}")
        self.surface_1d = surface_1d
        self.dir_type, self.norm, self.ignore, self.seed = dir_type, norm, ignore, int(seed)
        self.dir_file = dir_file
        self.split, self.batch_size, self.max_samples, self.loss = split, batch_size, max_samples, loss
        self.sharpness_directions, self.sharpness_radius = int(sharpness_directions), float(sharpness_radius)
        self.interpolate_to, self.interpolate_dir_type = interpolate_to, interpolate_dir_type
        self.trajectory, self.trajectory_points, self.save_initial = trajectory, int(trajectory_points), save_initial
        self.hessian_max_samples, self.hessian_tol, self.hessian_maxiter = hessian_max_samples, hessian_tol, hessian_maxiter
        self.run_on, self.out_dir, self.plot = run_on, out_dir, plot
        self.contour_levels, self.loss_max = (float(vmin), float(vmax), float(vstep)), float(loss_max)
        self.cache_gb, self.progress = float(cache_gb), progress
        if data is not None and not (hasattr(data, "__iter__") or hasattr(data, "__getitem__")):
            raise LandscapeError(f"LossLandscape: data must be a DataLoader or a Dataset, got {type(data).__name__}")
        self.data, self.trust_checkpoint = data, bool(trust_checkpoint)
        self._plots_on: bool | None = None  # resolved from plot at setup (or at the first run)
        self._source: tuple[str, Any] | None = None  # (description, DataLoader or Dataset), found at run start
        self.summary: dict[str, Any] | None = None  # the last run's summary (also summary.json)
        self.last_out_dir: Path | None = None

    # ------------------------------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail early, before any training, on what exists before the run: the optional dependencies (scipy for
        the Hessian, the plots), the directions file, the interpolation target and the evaluation data."""
        if trainer.fast_dev_run or not self._runs_in(stage):
            return
        self._check_dependencies()
        for what, path in (("directions file", self.dir_file), ("interpolation checkpoint", self.interpolate_to)):
            if path and not os.path.isfile(path):
                raise FileNotFoundError(
                    f"LossLandscape: the {what} {path} does not exist. Produce it first or correct the "
                    f"{'dir_file' if what == 'directions file' else 'interpolate_to'} argument.")
        if self.trajectory not in (None, "auto") and stage == "validate" and not _checkpoint_files(self.trajectory):
            raise FileNotFoundError(f"LossLandscape: no checkpoints found for trajectory={self.trajectory!r}")
        self._source = None
        if self.data is not None or trainer.datamodule is not None:
            self._source = self._find_source(trainer, pl_module, stage)

    def _check_dependencies(self) -> None:
        if self.hessian is not None:
            try:
                import scipy.sparse.linalg  # noqa: F401
            except ImportError:
                raise LandscapeError(
                    "LossLandscape: hessian_grid needs scipy (its eigsh computes the Hessian eigenvalues), which "
                    "does not import here: install scipy, or leave hessian_grid unset.") from None
        if self.plot is False:
            self._plots_on = False
            return
        missing = _plots_missing()
        if missing and self.plot:
            raise LandscapeError(f"LossLandscape: plot=True needs {missing}; provide it, or set plot=None (PNGs "
                                 "when possible) or plot=False. The .npz results are written either way.")
        if missing and self._plots_on is None:
            rank_zero_info(f"LossLandscape: no PNG plots: they need {missing}. The results are saved as .npz "
                           "files; set plot=False to silence this.")
        self._plots_on = not missing

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or not self._runs_in("fit"):
            return
        if self._source is None:  # plain dataloaders: trainer.train_dataloader exists from here on
            self._source = self._find_source(trainer, pl_module, "fit", required=self.split != "val")
        self._save_initial(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "validate" or not self._runs_in("validate"):
            return
        if self._source is None and not trainer.fast_dev_run:
            self._source = self._find_source(trainer, pl_module, "validate")

    def _find_source(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str,
                     required: bool = True) -> tuple[str, Any] | None:
        """Where the evaluation data comes from: (description, DataLoader or Dataset); see the ``data`` argument."""
        split = self.split
        if self.data is not None:
            return "the data argument", self.data
        dm = trainer.datamodule
        tried = []
        if dm is not None:
            name = type(dm).__name__
            hook = getattr(dm, "landscape_dataset", None)
            if callable(hook):
                return f"{name}.landscape_dataset({split!r})", hook(split)
            dataset = _clean_dataset(dm, split)
            if dataset is not None:
                return f"{name}.{split}_set", dataset
            tried.append(f"{name} has no landscape_dataset() or {split}_set")
            loader = _call_loader_hook(dm, split)
            if loader is not None:
                return f"{name}.{split}_dataloader()", _clean_loader(loader, f"{name}.{split}_dataloader()")
            tried.append(f"its {split}_dataloader() gives nothing")
        else:
            attr = {"train": "train_dataloader", "val": "val_dataloaders", "test": "test_dataloaders"}[split]
            loader = getattr(trainer, attr, None)
            if isinstance(loader, list | tuple):
                loader = loader[0] if loader else None
            elif isinstance(loader, dict):
                loader = next(iter(loader.values()), None)
            if loader is not None:
                return f"trainer.{attr}", _clean_loader(loader, f"the {split} dataloader")
            tried.append(f"the dataloaders given to trainer.{stage}() have no {split} split")
            loader = _call_loader_hook(pl_module, split)
            if loader is not None:
                return f"{type(pl_module).__name__}.{split}_dataloader()", _clean_loader(loader, "")
        if not required:
            return None
        raise LandscapeError(
            f"LossLandscape: no evaluation data for split={split!r} in trainer.{stage}(): {'; '.join(tried)}. "
            "Pass the data to the callback (data=<a DataLoader or Dataset>), or set split to a split this run "
            "has ('train', 'val' or 'test')."
        )

    def _runs_in(self, stage: str) -> bool:
        return (stage == "fit" and self.run_on in ("fit_end", "both")) or (
            stage == "validate" and self.run_on in ("validate_end", "both"))

    def _save_initial(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.save_initial or trainer.fast_dev_run or not self._runs_in("fit"):
            return
        if trainer.global_step > 0:  # resumed: the initial weights are long gone
            return
        out = self._out_dir(trainer, "fit")
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                        "epoch": -1, "global_step": 0}, out / "initial.ckpt")
        trainer.strategy.barrier("loss_landscape_initial")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._runs_in("fit") and not trainer.interrupted:
            self.run(trainer, pl_module, "fit")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "validate" or not self._runs_in("validate"):
            return
        self.run(trainer, pl_module, "validate")

    # ------------------------------------------------------------------------------------------ run
    def _out_dir(self, trainer: pl.Trainer, stage: str) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        tag = "fit_end"
        if stage == "validate":
            ckpt = getattr(trainer, "ckpt_path", None)
            tag = f"validate_{Path(ckpt).stem}" if ckpt else "validate"
        return Path(trainer.default_root_dir) / "landscape" / tag

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> dict[str, Any]:
        """Compute everything configured for ``pl_module`` as it is now; returns (and writes) the summary."""
        fast = bool(trainer.fast_dev_run)
        if self._plots_on is None:  # run() called without setup()
            self._check_dependencies()
        progress = self.progress if self.progress is not None else trainer.progress_bar_callback is not None
        ctx = _Context(trainer, pl_module, trainer.global_rank, trainer.world_size, self._out_dir(trainer, stage),
                       progress=bool(progress), fast=fast)
        if ctx.main:
            ctx.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data = self._eval_data(trainer, pl_module, fast)
        ctx.summary.update({"stage": stage, "split": self.split, "num_samples": data.num_samples,
                            "world_size": ctx.world, "dir_type": self.dir_type, "norm": self.norm,
                            "ignore": self.ignore, "seed": self.seed, "loss_name": self.loss,
                            "global_step": trainer.global_step, "ckpt_path": getattr(trainer, "ckpt_path", None)})
        snapshot = ModelSnapshot(pl_module)
        try:
            pl_module.eval()
            center = evaluate(pl_module, data, self.loss)
            ctx.summary.update({"center_loss": center[0], "center_acc": center[1]})
            if self.x is not None:
                self._random_surfaces(ctx, data)
            skipped = ["2-D surface"] if fast and self.y is not None else []
            for name, wanted, fn in (
                ("sharpness", self.sharpness_directions > 0, self._sharpness),
                ("interpolation", bool(self.interpolate_to), self._interpolation),
                ("trajectory", self.trajectory is not None, self._trajectory),
                ("hessian", self.hessian is not None, self._hessian),
            ):
                if not wanted:
                    continue
                if fast:
                    skipped.append(name)
                    continue
                fn(ctx, data)
            if skipped and ctx.main:
                print(f"LossLandscape: fast_dev_run: computed a 3-point 1-D curve on {data.num_samples} samples; "
                      f"skipped {', '.join(skipped)}.")
        finally:
            snapshot.restore()
        ctx.summary["seconds_total"] = time.perf_counter() - started
        self._publish(trainer, ctx.summary)
        if ctx.main:
            (ctx.out / "summary.json").write_text(json.dumps(_jsonable(ctx.summary), indent=2))
            self._log(ctx)
            print(f"LossLandscape: wrote {ctx.out} (centre loss {center[0]:.4f}, acc {center[1]:.2f}%, "
                  f"{ctx.summary['seconds_total']:.1f} s on {ctx.world} rank(s))")
        self.summary, self.last_out_dir = ctx.summary, ctx.out
        return ctx.summary

    # ------------------------------------------------------------------------------------------ pieces
    def _eval_data(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fast: bool) -> EvalData:
        source = self._source
        if source is None:  # run() called directly, or the val loader appeared only after fit started
            stage = "validate" if trainer.state.fn == "validate" else "fit"
            source = self._find_source(trainer, pl_module, stage)
        _, data = source
        dm = trainer.datamodule
        loader = data if _is_loader(data) else None
        default_bs = getattr(loader, "batch_size", None) or getattr(dm, "batch_size", None) or 128
        bs = int(self.batch_size or default_bs)
        max_batches = None
        if fast:  # the run's own (smoke) batch size and number of batches
            bs, max_batches = int(default_bs), int(trainer.fast_dev_run)
        if loader is not None:
            out = eval_data_from_loader(loader, pl_module.device, bs if self.batch_size else None,
                                        self.max_samples, self.cache_gb, max_batches)
        else:
            out = make_eval_data(data, bs, pl_module.device, self.max_samples, self.cache_gb,
                                 num_workers=int(getattr(dm, "num_workers", 0) or 0), max_batches=max_batches)
        param = next((p for p in pl_module.parameters() if p.is_floating_point()), None)
        if param is not None and param.dtype != torch.float32:
            out.dtype = param.dtype  # e.g. precision="bf16-true": the inputs follow the weights
        return out

    def _directions(self, ctx: _Context, targets: dict[str, Tensor], count: int) -> list[dict[str, Tensor]]:
        if self.dir_file:
            dirs = load_directions(self.dir_file, targets, self.dir_type)
            if len(dirs) < count:
                raise LandscapeError(f"LossLandscape: {self.dir_file} holds {len(dirs)} direction(s); the 2-D "
                                     f"surface needs 2")
            return dirs[:count]
        g = torch.Generator().manual_seed(self.seed)
        return [random_direction(targets, self.norm, self.ignore, g) for _ in range(count)]

    def _random_surfaces(self, ctx: _Context, data: EvalData) -> None:
        targets = direction_targets(ctx.module, self.dir_type)
        dirs = self._directions(ctx, targets, 2 if self.y is not None else 1)
        if ctx.main and not self.dir_file:
            save_directions(ctx.out / "directions.pt", dirs, self.dir_type,
                            {"norm": self.norm, "ignore": self.ignore, "seed": self.seed})
        xs = _minimal_grid(self.x) if ctx.fast else self.x
        if self.y is None or self.surface_1d or ctx.fast:
            s1 = compute_surface(ctx.module, data, targets, dirs, xs, **ctx.kwargs(self.loss, "landscape 1-D"))
            self._save(ctx, "surface_1d", {"x": s1["x"], "loss": s1["loss"], "acc": s1["acc"]})
            ctx.summary["surface_1d"] = {"points": len(xs), **_timing(s1),
                                         **_curve_increase(s1["x"], s1["loss"], self.sharpness_radius)}
            if self._plots_on and ctx.main and not ctx.fast:
                path = ctx.out / "surface_1d.png"
                _plots().plot_curve(path, s1["x"], s1["loss"], s1["acc"], xlabel="alpha (filter-normalised direction)"
                           if self.norm == "filter" else "alpha", title=f"1-D {self.norm}-normalised "
                           f"{self.dir_type} direction ({self.split} split)")
                ctx.images.append(("surface_1d", path))
        if self.y is None or ctx.fast:
            return
        s2 = compute_surface(ctx.module, data, targets, dirs, xs, self.y, **ctx.kwargs(self.loss, "landscape 2-D"))
        self._save(ctx, "surface_2d", {"x": s2["x"], "y": s2["y"], "loss": s2["loss"], "acc": s2["acc"]})
        ctx.summary["surface_2d"] = {"points": int(s2["loss"].size), **_timing(s2),
                                     **surface_stats(s2["x"], s2["y"], s2["loss"], self.sharpness_radius)}
        if self._plots_on and ctx.main and not ctx.fast:
            for name, path in _plots().plot_surface_2d(ctx.out / "surface_2d", s2["x"], s2["y"], s2["loss"],
                                              levels=self.contour_levels, zmax=self.loss_max,
                                              title=f"{self.norm}-normalised {self.dir_type} directions"):
                ctx.images.append((name, path))

    def _sharpness(self, ctx: _Context, data: EvalData) -> None:
        targets = direction_targets(ctx.module, self.dir_type)
        s = sharpness(ctx.module, data, targets, self.sharpness_directions, self.sharpness_radius, self.norm,
                      self.ignore, self.seed, **ctx.kwargs(self.loss, "landscape sharpness"))
        ctx.summary["sharpness"] = {k: v for k, v in s.items() if k != "losses"}
        ctx.summary["sharpness"]["losses"] = s["losses"].tolist()

    def _interpolation(self, ctx: _Context, data: EvalData) -> None:
        targets = direction_targets(ctx.module, self.interpolate_dir_type)
        other = load_state_dict_file(self.interpolate_to, targets, "interpolation checkpoint",
                                     ctx.module.state_dict(), self.trust_checkpoint)
        d = {k: other[k].to(device=t.device, dtype=t.dtype) - t.detach() for k, t in targets.items()}
        out = compute_surface(ctx.module, data, targets, [d], self.interp_grid,
                              **ctx.kwargs(self.loss, "landscape interpolation"))
        self._save(ctx, "interpolation", {"alpha": out["x"], "loss": out["loss"], "acc": out["acc"]})
        ctx.summary["interpolation"] = {"target": self.interpolate_to, "dir_type": self.interpolate_dir_type,
                                        "distance": float(math.sqrt(sum(float(v.double().pow(2).sum())
                                                                        for v in d.values()))),
                                        "seconds": out["seconds"]}
        if self._plots_on and ctx.main:
            path = ctx.out / "interpolation.png"
            _plots().plot_curve(path, out["x"], out["loss"], out["acc"], xlabel="alpha", marks={0.0: "this model",
                       1.0: Path(self.interpolate_to).stem}, title=f"linear interpolation ({self.interpolate_dir_type})")
            ctx.images.append(("interpolation", path))

    def _trajectory(self, ctx: _Context, data: EvalData) -> None:
        targets = direction_targets(ctx.module, "weights")
        found = self._trajectory_files(ctx)
        files = [f["file"] for f in found]
        epochs = [f["epoch"] for f in found]
        lrs = [f["lr"] for f in found]
        result = None
        if ctx.main:
            reference = ctx.module.state_dict()
            rows = [load_state_dict_file(path, targets, "trajectory checkpoint", reference, self.trust_checkpoint)
                    for path in files]
            result = pca_directions(rows, {k: t.detach().cpu() for k, t in targets.items()}, self.ignore)
            del rows
        result = ctx.trainer.strategy.broadcast(result, src=0)
        dirs = [{k: v.to(device=targets[k].device, dtype=targets[k].dtype) for k, v in d.items()}
                for d in result["directions"]]
        xs_path, ys_path = np.asarray(result["x"]), np.asarray(result["y"])
        if self.trajectory_grid is not None:
            gx = gy = self.trajectory_grid
        else:
            gx, gy = _fit_range(xs_path, self.trajectory_points), _fit_range(ys_path, self.trajectory_points)
        surf = compute_surface(ctx.module, data, targets, dirs, gx, gy, **ctx.kwargs(self.loss, "landscape PCA"))
        ratios = result["explained_variance_ratio"]
        if ctx.main:
            save_directions(ctx.out / "directions_pca.pt", dirs, "weights",
                            {"explained_variance_ratio": ratios, "files": files})
        lr_changes = [i for i in range(1, len(lrs)) if lrs[i] is not None and lrs[i - 1] is not None
                      and not math.isclose(lrs[i], lrs[i - 1])]
        self._save(ctx, "trajectory", {"path_x": xs_path, "path_y": ys_path, "epochs": np.asarray(epochs),
                                       "explained_variance_ratio": np.asarray(ratios), "x": surf["x"],
                                       "y": surf["y"], "loss": surf["loss"], "acc": surf["acc"],
                                       "lr_change_index": np.asarray(lr_changes, dtype=np.int64)})
        ctx.summary["trajectory"] = {"checkpoints": len(files), "explained_variance_ratio": ratios,
                                     "lr_change_epochs": [epochs[i] for i in lr_changes],
                                     "seconds": surf["seconds"]}
        if self._plots_on and ctx.main:
            path = ctx.out / "trajectory.png"
            _plots().plot_trajectory(path, xs_path, ys_path, ratios, surf["x"], surf["y"], surf["loss"],
                                     epochs=epochs, lr_changes=lr_changes, levels=self.contour_levels)
            ctx.images.append(("trajectory", path))

    def _trajectory_files(self, ctx: _Context) -> list[dict[str, Any]]:
        """The trajectory's checkpoints in training order, one per global step, with epoch and learning rate."""
        if self.trajectory == "auto":
            dirs = {c.dirpath for c in ctx.trainer.checkpoint_callbacks
                    if isinstance(c, ModelCheckpoint) and c.dirpath}
            files = sorted({f for d in dirs for f in _checkpoint_files(d)})
            where = ", ".join(sorted(dirs)) or "(the trainer has no ModelCheckpoint with a dirpath)"
        else:
            files, where = _checkpoint_files(self.trajectory), self.trajectory
        initial = self._out_dir(ctx.trainer, "fit") / "initial.ckpt"
        if self.save_initial and initial.is_file():
            files = [str(initial), *files]
        keyed: dict[tuple[int, int], dict[str, Any]] = {}  # last.ckpt duplicates the last epoch's file
        for f in files:
            meta = _load_lazily(f, self.trust_checkpoint)
            key = (int(meta.get("global_step", 0)), int(meta.get("epoch", -1)))
            if key not in keyed or Path(keyed[key]["file"]).stem == "last":
                # "epoch" is the 0-based epoch a Lightning checkpoint was saved in: epochs done = epoch + 1
                keyed[key] = {"file": f, "epoch": key[1] + 1, "lr": _checkpoint_lr(meta)}
            del meta
        ordered = [keyed[k] for k in sorted(keyed)]
        if len(ordered) < 3:
            raise LandscapeError(
                f"LossLandscape: the PCA trajectory needs at least 3 checkpoints from different steps; found "
                f"{len(ordered)} in {where}. Keep one checkpoint per epoch by adding ModelCheckpoint(save_top_k=-1, "
                f"every_n_epochs=1) to the Trainer's callbacks, or set trajectory to the folder that holds them.")
        return ordered

    def _hessian(self, ctx: _Context, data: EvalData) -> None:
        targets = direction_targets(ctx.module, self.dir_type)
        dirs = self._directions(ctx, targets, 2 if self.y is not None else 1)
        params = {n: p for n, p in ctx.module.named_parameters() if p.dim() > 1}
        hdata = data.subset(self.hessian_max_samples) if self.hessian_max_samples else data
        xs = self.hessian
        if self.y is None:
            coords, shape, ys = xs[:, None], (len(xs),), None
        else:
            ys = self.hessian
            gx, gy = np.meshgrid(xs, ys)
            coords, shape = np.stack([gx.ravel(), gy.ravel()], 1), (len(ys), len(xs))
        mine = list(range(ctx.rank, len(coords), ctx.world))
        result = torch.zeros(len(coords), 4, dtype=torch.float64, device=data.device)
        mover, snapshot = _Mover(targets, dirs), ModelSnapshot(ctx.module)
        start = time.perf_counter()
        try:
            ctx.module.eval()
            with _progress(len(mine), "landscape Hessian", ctx.progress and ctx.main) as bar:
                for p in mine:
                    mover.set(coords[p])
                    lo, hi, n_hvp = hessian_extreme_eigs(ctx.module, hdata, params, self.loss, self.hessian_tol,
                                                         self.hessian_maxiter, seed=self.seed)
                    result[p] = torch.tensor([lo, hi, n_hvp, 1.0], dtype=torch.float64)
                    bar.update(1)
        finally:
            mover.reset()
            snapshot.restore()
        seconds = time.perf_counter() - start
        if ctx.world > 1:
            result = ctx.reduce(result)
        r = result.cpu().numpy()
        lam_min, lam_max = r[:, 0].reshape(shape), r[:, 1].reshape(shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(lam_min / lam_max)
        arrays = {"x": xs, "lambda_min": lam_min, "lambda_max": lam_max, "ratio": ratio}
        if ys is not None:
            arrays["y"] = ys
        self._save(ctx, "hessian", arrays)
        ctx.summary["hessian"] = {"points": len(coords), "samples": hdata.num_samples, "seconds": seconds,
                                  "hvps_per_point": float(r[:, 2].mean()),
                                  "center_ratio": _center_value(xs, ys, ratio)}
        if self._plots_on and ctx.main:
            path = ctx.out / "hessian_ratio.png"
            _plots().plot_eig_ratio(path, xs, ys, ratio)
            ctx.images.append(("hessian_ratio", path))

    # ------------------------------------------------------------------------------------------ output
    def _save(self, ctx: _Context, name: str, arrays: dict[str, Any]) -> None:
        if ctx.main:
            np.savez(ctx.out / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})

    @staticmethod
    def _publish(trainer: pl.Trainer, summary: dict[str, Any]) -> None:
        """Put the run's scalar results into ``trainer.callback_metrics``, the record of final metrics that a
        script or CLI reads after ``fit``/``validate`` (this project's main.py writes it to
        ``metrics/<subcommand>.json``); ``self.log`` is not allowed in the end-of-run hooks."""
        for key, value in landscape_scalars(summary).items():
            trainer.callback_metrics[key] = torch.tensor(value, dtype=torch.float64)

    def _log(self, ctx: _Context) -> None:
        scalars = landscape_scalars(ctx.summary)
        for logger in ctx.trainer.loggers:
            try:
                logger.log_metrics(scalars, step=ctx.trainer.global_step)
            except Exception:  # noqa: BLE001 - a logger that cannot take these does not stop the run
                pass
            if hasattr(logger, "log_image"):
                for name, path in ctx.images:
                    logger.log_image(key=f"landscape/{name}", images=[str(path)], step=ctx.trainer.global_step)


# ================================================================================================ helpers
def landscape_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The scalar results of a run's summary, under ``landscape/<name>``: ``center_loss``, ``center_acc``,
    ``sharpness`` (mean increase) and ``sharpness_std``, ``curve_increase`` (1-D curve, mean increase at the
    sharpness radius), ``local_minima``, ``nonconvex_fraction`` and ``surface_increase`` (2-D surface),
    ``interpolation_distance``, ``trajectory_variance_1``/``_2`` (explained-variance ratios of the PCA axes) and
    ``hessian_center_ratio``; only those the run computed (and finite)."""
    picks = {
        "center_loss": ("center_loss",), "center_acc": ("center_acc",),
        "sharpness": ("sharpness", "mean_increase"), "sharpness_std": ("sharpness", "std_increase"),
        "curve_increase": ("surface_1d", "mean_increase_at_radius"),
        "local_minima": ("surface_2d", "local_minima"), "nonconvex_fraction": ("surface_2d", "nonconvex_fraction"),
        "surface_increase": ("surface_2d", "mean_increase_at_radius"),
        "interpolation_distance": ("interpolation", "distance"),
        "hessian_center_ratio": ("hessian", "center_ratio"),
    }
    out: dict[str, float] = {}
    for name, path in picks.items():
        value: Any = summary
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[f"landscape/{name}"] = float(value)
    ratios = (summary.get("trajectory") or {}).get("explained_variance_ratio") or []
    for k, ratio in enumerate(ratios[:2], start=1):
        out[f"landscape/trajectory_variance_{k}"] = float(ratio)
    return out


def _plots() -> Any:
    """The plotting helpers (matplotlib, imported only when plots are written)."""
    try:
        from . import loss_landscape_plots
    except ImportError:  # the two files copied next to each other outside a package
        import loss_landscape_plots  # type: ignore[no-redef]
    return loss_landscape_plots


def _plots_missing() -> str | None:
    """What the PNG plots need and is missing here (None: nothing)."""
    try:
        _plots()
    except ImportError as err:
        if "loss_landscape_plots" in str(err):
            return "loss_landscape_plots.py beside loss_landscape.py (the plotting code; copy both files)"
        return f"a package it imports ({err})"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib (pip install matplotlib)"
    return None


def _is_loader(data: Any) -> bool:
    return hasattr(data, "__iter__") and hasattr(data, "dataset") and hasattr(data, "batch_size")


def _call_loader_hook(owner: Any, split: str) -> Any:
    """``owner.<split>_dataloader()`` when the owner (a DataModule or LightningModule) implements it, else None."""
    fn = getattr(owner, f"{split}_dataloader", None)
    if not callable(fn):
        return None
    try:
        loader = fn()
    except Exception as err:  # noqa: BLE001 - Lightning's default hook raises when it is not implemented
        if "must be implemented" in str(err) or isinstance(err, NotImplementedError):
            return None
        raise LandscapeError(
            f"LossLandscape: {type(owner).__name__}.{split}_dataloader() failed ({type(err).__name__}: {err}); pass "
            "the evaluation data to the callback with data=<a DataLoader or Dataset>, or set split."
        ) from err
    if isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    elif isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    return loader


def _clean_loader(loader: Any, where: str) -> Any:
    """A found DataLoader, refused when its dataset applies random augmentation (the surface would be noisy)."""
    transform = getattr(getattr(loader, "dataset", None), "transform", None)
    if transform is not None and _is_random(transform):
        raise LandscapeError(
            f"LossLandscape: {where or 'the evaluation dataloader'} applies random augmentation ({transform}), "
            "which would distort the surface; pass data=<a DataLoader or Dataset without augmentation>.")
    return loader


def _clean_dataset(dm: Any, split: str) -> Any:
    """The DataModule's ``<split>_set`` without augmentation (see the module docstring), or None when it has none.

    A DataModule that names its splits ``*_set`` but was set up for another stage (``validate`` has no train
    split) is set up for the stage that has the split."""
    dataset = getattr(dm, f"{split}_set", None)
    named = any(hasattr(dm, f"{s}_set") for s in ("train", "val", "test"))
    if dataset is None and named and callable(getattr(dm, "setup", None)):
        dm.setup("fit" if split in ("train", "val") else "test")
        dataset = getattr(dm, f"{split}_set", None)
    if dataset is None:
        return None
    transform = getattr(dataset, "transform", None)
    eval_transform = getattr(dm, "eval_transform", None)
    if transform is not None and callable(eval_transform):
        dataset = copy.copy(dataset)
        dataset.transform = eval_transform()
    elif transform is not None and _is_random(transform):
        raise LandscapeError(
            f"LossLandscape: the {split} split of {type(dm).__name__} applies random augmentation ({transform}), "
            f"which would distort the surface; give the datamodule an eval_transform() or a "
            f"landscape_dataset(split) method, or pass data=<a DataLoader or Dataset without augmentation>")
    return dataset


def _is_random(transform: Any) -> bool:
    parts = getattr(transform, "transforms", [transform])
    return any(type(t).__name__.startswith("Random") or _is_random_nested(t) for t in parts)


def _is_random_nested(t: Any) -> bool:
    inner = getattr(t, "transforms", None)
    return isinstance(inner, list | tuple) and _is_random(t)


def _curve_increase(x: np.ndarray, loss: np.ndarray, radius: float) -> dict[str, float]:
    """Mean of ``f(+r) - f(0)`` and ``f(-r) - f(0)`` of a 1-D curve (linear interpolation between grid points)."""
    if not (x.min() <= -radius and radius <= x.max() and np.any(x == 0.0)):
        return {}
    f0 = float(loss[np.flatnonzero(x == 0.0)[0]])
    vals = np.interp([-radius, radius], x, loss)
    return {"mean_increase_at_radius": float(np.mean(vals) - f0), "radius": radius}


def _timing(out: dict[str, Any]) -> dict[str, Any]:
    return {"points_per_rank": out["points_per_rank"], "seconds": out["seconds"],
            "seconds_gathered": out["seconds_gathered"],
            "seconds_per_point": out["seconds"] / max(out["points_per_rank"], 1)}


def _fit_range(values: np.ndarray, num: int) -> np.ndarray:
    """``num`` evenly spaced values covering ``values`` and 0 with a 25% margin, with 0 exactly on the grid."""
    lo, hi = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
    pad = 0.25 * max(hi - lo, 1e-8)
    step = (hi - lo + 2 * pad) / (num - 1)
    first = -math.ceil((pad - lo) / step)  # index offset of the first point: lo - pad rounded down onto the grid
    grid = (np.arange(num) + first) * step
    grid[np.arange(num) + first == 0] = 0.0
    return grid


def _center_value(xs: np.ndarray, ys: np.ndarray | None, values: np.ndarray) -> float | None:
    i = np.flatnonzero(xs == 0.0)
    if not len(i):
        return None
    if ys is None:
        return float(values[i[0]])
    j = np.flatnonzero(ys == 0.0)
    return float(values[j[0], i[0]]) if len(j) else None


def _load_lazily(path: str, trust_checkpoint: bool = False) -> dict[str, Any]:
    """A checkpoint memory-mapped where possible, so reading its epoch, step and lr does not read the weights."""
    return _torch_load(path, "trajectory checkpoint", trust_checkpoint, mmap=True)


def _torch_load(path: str | os.PathLike, what: str, trust_checkpoint: bool = False, mmap: bool = False) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``: the files this callback writes (directions,
    ``initial.ckpt``) and Lightning's checkpoints hold only tensors and plain containers. A file with other Python
    objects is refused with their name; ``trust_checkpoint=True`` loads it with ``weights_only=False``."""
    def load(trusted: bool) -> Any:
        if mmap:
            try:
                return torch.load(path, map_location="cpu", mmap=True, weights_only=not trusted)
            except RuntimeError:  # files in torch's legacy (non-zip) format cannot be memory-mapped
                pass
        return torch.load(path, map_location="cpu", weights_only=not trusted)

    if trust_checkpoint:
        return load(trusted=True)
    try:
        return load(trusted=False)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        obj = f"the Python object {found.group(1)}" if found else "a Python object"
        raise LandscapeError(
            f"LossLandscape: the {what} {os.fspath(path)} holds {obj}, which safe loading (torch.load with "
            "weights_only=True) refuses because unpickling it could run code. If you trust this file, pass "
            "trust_checkpoint=True to LossLandscape."
        ) from None
    except Exception as err:  # noqa: BLE001 - any other unreadable file is the same user error
        raise LandscapeError(f"LossLandscape: the {what} {os.fspath(path)} could not be read ({err})") from None


def _checkpoint_lr(meta: dict[str, Any]) -> float | None:
    try:
        return float(meta["optimizer_states"][0]["param_groups"][0]["lr"])
    except (KeyError, IndexError, TypeError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
