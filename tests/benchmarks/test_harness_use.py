"""Every speed and memory benchmark in benchmarks/ stands on the shared harness (benchmarks/harness.py): it imports
from it, builds no Lightning ``Trainer`` of its own (``harness.quiet_trainer`` does) and names no machine by hand
(a report says the machine through ``harness.machine_info``, detected at run time).

benchmarks/ holds speed and memory measurements only: the reproductions that used to live here (with their own
training loops) are studies now (studies/*.yaml, run through main.py by the studies runner)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NOT_BENCHMARKS = {"__init__.py", "harness.py"}
MOVED_ONTO_THE_HARNESS = {"avae_search_speed.py", "deploy_latency.py", "landscape_speed.py", "nas_latency.py",
                          "quant_overhead.py", "rnn_memory.py", "global_counts.py", "gpu_plain_loop.py",
                          "throughput.py", "overhead.py", "gpu_recipes.py"}
MACHINE_NAMES = re.compile(r"cpu2", re.IGNORECASE)


def scripts() -> list[Path]:
    return sorted(p for p in BENCHMARKS.glob("*.py") if p.name not in NOT_BENCHMARKS)


def imports_harness(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks.harness":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks" and any(
                a.name == "harness" for a in node.names):
            return True
        if isinstance(node, ast.Import) and any(a.name == "benchmarks.harness" for a in node.names):
            return True
    return False


def trainer_calls(tree: ast.AST) -> list[int]:
    """Lines that call ``Trainer(...)`` or ``<anything>.Trainer(...)`` (text in strings and comments is not a call)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name == "Trainer":
                lines.append(node.lineno)
    return lines


def test_the_benchmarks_are_found():
    names = {p.name for p in scripts()}
    assert names >= MOVED_ONTO_THE_HARNESS, f"missing from benchmarks/: {sorted(MOVED_ONTO_THE_HARNESS - names)}"


def test_the_checks_catch_what_they_look_for():
    own = ast.parse("import lightning.pytorch as pl\nt = pl.Trainer(max_steps=1)\nu = Trainer()\n")
    assert trainer_calls(own) == [2, 3] and not imports_harness(own)
    shared = ast.parse('"""uses ``Trainer(...)``"""\n# pl.Trainer(\n'
                       'from benchmarks.harness import quiet_trainer\nt = quiet_trainer()\n')
    assert trainer_calls(shared) == [] and imports_harness(shared)
    assert imports_harness(ast.parse("from benchmarks import harness\n"))
    assert MACHINE_NAMES.search('machine = "CPU2 (2 shared cores)"')


@pytest.mark.parametrize("path", scripts(), ids=lambda p: p.name)
def test_benchmark_stands_on_the_harness(path: Path):
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    assert imports_harness(tree), f"{path.name} does not import from benchmarks.harness"
    assert not trainer_calls(tree), (f"{path.name} builds its own Trainer at line(s) {trainer_calls(tree)}: use "
                                     "benchmarks.harness.quiet_trainer")
    named = [i + 1 for i, line in enumerate(text.splitlines()) if MACHINE_NAMES.search(line)]
    assert not named, f"{path.name} names a machine by hand at line(s) {named}: report harness.machine_info()"
