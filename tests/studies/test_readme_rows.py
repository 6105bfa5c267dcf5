"""results/README.md's study rows are written from the study reports (``python -m studies readme``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from studies import readme
from tests.studies.tiny import REPO


def test_the_committed_rows_match_the_committed_reports() -> None:
    assert readme.update(REPO, check=True), "results/README.md is stale: run `python -m studies readme`"


def test_a_row_follows_its_report(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "studies/demo.yaml").write_text("name: demo\n")
    (tmp_path / "studies/demo_bridge.yaml").write_text("name: demo_bridge\n")
    (tmp_path / "results/README.md").write_text("# Results\n\nintro\n\n## Section\n\n| a |\n")
    report = {"study": "demo", "header": {"paper": "P", "published": "1.0", "command": "python -m studies run x"},
              "claims": {"c": {"label": "A beats B", "primary": True,
                               "points": {"": {"status": "not met", "text": "A - B = -0.5 [-1, 0]"}}}},
              "runs_finished": ["a"], "runs_total": 2, "run_commits": {"abcdef123456": 1}, "machine": "M"}
    (tmp_path / "results/demo.json").write_text(json.dumps(report))
    shutil.copy(tmp_path / "results/demo.json", tmp_path / "results/demo_bridge.json")
    assert not readme.update(tmp_path, check=True)
    readme.update(tmp_path)
    text = (tmp_path / "results/README.md").read_text()
    assert text.index(readme.BEGIN) < text.index("## Section")  # before the hand-written sections, which stay
    rows = [ln for ln in text.splitlines() if ln.startswith("| [`studies/")]
    assert len(rows) == 1 and "studies/demo.yaml" in rows[0]  # bridge checks get no row
    assert "primary: A beats B: A - B = -0.5 [-1, 0] — **not met**" in rows[0]
    assert "1 of 2 through main.py (**incomplete**" in rows[0] and "abcdef1" in rows[0]
    assert readme.update(tmp_path, check=True)
    report["runs_finished"] = ["a", "b"]
    (tmp_path / "results/demo.json").write_text(json.dumps(report))
    assert not readme.update(tmp_path, check=True)  # a new report makes the committed rows stale
