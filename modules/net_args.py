"""Network arguments of the LightningModules: an ``nn.Module``, a registry name, or a class_path description.

Every module that trains a network takes it as an ``nn.Module`` (the Lightning way), as a name from
``nets.list_nets()``, or as ``{"class_path": ..., "init_args": {...}}`` (what LightningCLI writes for a module
argument). Networks are never pickled into checkpoints: :func:`store_net_hparams` keeps a name or a class_path
description in ``hparams`` (so ``load_from_checkpoint`` rebuilds the net in a fresh process), and ``None`` for a
module passed as an object, which the user passes again when loading::

    model = ImageClassifier.load_from_checkpoint(path, net=MyNet())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

__all__ = ["net_hparam", "store_net_hparams"]


def _given_hparams() -> dict[str, Any] | None:
    """The init arguments LightningCLI is instantiating this module with (plain data), if it is."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # another Lightning version: the descriptions are simply not kept
        return None
    given = _given_hyperparameters.get()
    return given if isinstance(given, dict) else None


def net_hparam(value: Any, given: Any = None) -> Any:
    """What goes into ``hparams`` for a network argument: a name or a class_path description as it is; for an
    ``nn.Module``, LightningCLI's description of it (``given``) when there is one, else ``None``."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, Mapping) and "class_path" in value:
        return dict(value)
    if isinstance(given, Mapping) and "class_path" in given:
        return dict(given)
    return None


def store_net_hparams(module: pl.LightningModule, nets: Mapping[str, Any]) -> None:
    """Call right after ``save_hyperparameters(ignore=[<the net arguments>, ...])``: puts back, for each network
    argument in ``nets`` (``{argument name: value passed}``), what :func:`net_hparam` allows to store."""
    given = _given_hparams() or {}
    initial = getattr(module, "_hparams_initial", None)
    for name, value in nets.items():
        stored = net_hparam(value, given.get(name))
        module.hparams[name] = stored
        if initial is not None:
            initial[name] = stored
