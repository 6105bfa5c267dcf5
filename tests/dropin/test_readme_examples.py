"""The README's "use in your own project" examples, run as written in a foreign project."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dropin.foreign import REPO, run_python, write_project

README = (REPO / "README.md").read_text()
EXAMPLES = re.findall(r"<!-- readme-example: ([^>]+?) -->\n```python\n(.*?)```", README, re.S)


def test_the_readme_has_both_examples_of_ten_lines_or_so():
    kinds = [k.split()[0] for k, _ in EXAMPLES]
    assert kinds == ["copy", "installed"]
    assert all(len(code.strip().splitlines()) <= 12 for _, code in EXAMPLES)


def test_copied_callback_example(tmp_path):
    spec, code = next((k, c) for k, c in EXAMPLES if k.startswith("copy"))
    root = write_project(tmp_path / "project", copy=spec.split()[1:])
    run_python(root, code)  # the repository is not importable there: only the copied file


def test_installed_package_example(tmp_path):
    code = next(c for k, c in EXAMPLES if k.startswith("installed"))
    root = write_project(tmp_path / "project")
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=240)  # the installed (editable) package, imported from a foreign folder
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val" in proc.stdout
