"""Shared fixtures of the studies tests."""

from __future__ import annotations

import pytest

from tests.studies.tiny import REPO


@pytest.fixture
def repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root (study files name recipes relative to it), W&B offline and quiet."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
