"""A tiny study for the runner tests: two chained stages of the digits quickstart at a few steps, 2 seeds, 1 claim."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

TINY: dict[str, Any] = {
    "name": "tiny",
    "header": {"title": "tiny test study", "paper": "none", "section": "none", "published": "none",
               "command": "python -m studies run tiny.yaml"},
    "seeds": [0, 1],
    "stages": {
        "first": {"recipe": "tests/studies/tiny_digits.yaml", "budget_min": 5, "test": True},
        "second": {"recipe": "tests/studies/tiny_digits.yaml", "init_from": "first", "budget_min": 5,
                   "test": True, "overrides": {"model.init_args.optimizer.init_args.lr": 0.02}},
    },
    "metrics": {
        "first_acc": {"stage": "first", "key": "test/acc1", "scale": 100},
        "second_acc": {"stage": "second", "key": "test/acc1", "scale": 100},
    },
    "claims": {
        "second_not_much_worse": {"a": "second_acc", "b": "first_acc", "test": "non_inferior", "margin": 100.0,
                                  "paired": True, "min_seeds": 2, "primary": True},
    },
}


def tiny_study(path: Path, edit: Any = None) -> Path:
    """Writes the tiny study (after ``edit(dict)``, if given) to ``path`` and returns it."""
    data = copy.deepcopy(TINY)
    if edit is not None:
        edit(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def studies(*args: str) -> int:
    """``python -m studies ...`` in this process."""
    from studies.__main__ import main

    return main([str(a) for a in args])


def metrics(run_dir: Path, step: str) -> dict[str, float]:
    return json.loads((run_dir / "metrics" / f"{step}.json").read_text())["metrics"]


def repo_study(name: str, seeds: list[int], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The repository's ``studies/<name>.yaml`` as a dict, with ``seeds`` and ``overrides`` merged into the
    overrides of every stage (a shrunk copy for a tiny test run)."""
    data = yaml.safe_load((REPO / "studies" / f"{name}.yaml").read_text())
    data["seeds"] = list(seeds)
    for stage in data["stages"].values():
        stage["overrides"] = {**stage.get("overrides", {}), **(overrides or {})}
    return data


def run_tiny(data: dict[str, Any], tmp_path: Path) -> Path:
    """Writes a shrunk copy of a repository study (``data``, named by its ``name``) into ``tmp_path``, runs it with
    the in-process debug launcher and reports it into ``tmp_path / "results"`` (no W&B); returns the runs root."""
    study = tmp_path / f"{data['name']}.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb") == 0
    return runs
