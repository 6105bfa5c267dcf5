"""Shared test setup: W&B offline (the real package, never `disabled`), quiet, one thread per process."""

import os
import sys

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_CONSOLE", "off")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # two cores, often shared: one thread per test process


@pytest.fixture(autouse=True)
def _finish_wandb_runs():
    """In-process CLI runs leave their W&B run open for inspection; close it after each test."""
    yield
    wandb = sys.modules.get("wandb")  # a test that never imported wandb cannot have left a run open
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@pytest.fixture()
def runs_root(tmp_path):
    return str(tmp_path / "runs")
