"""``python -m studies readme [--check]``: the study rows of ``results/README.md``, written from the study reports.

Every ``studies/<name>.yaml`` whose report exists (``results/<name>.json``, written by ``python -m studies
report``) gets one row: the paper and its published number, the primary claim's verdict (then the others'), how
many of the study's runs finished through ``main.py``, the command, the commits the runs were made at and the
machine. The rows live between two markers in ``results/README.md``; nothing else there is touched. ``--check``
exits 1 when the block is not what the reports give (a test runs it), so the table cannot drift from the reports.
"""

from __future__ import annotations

import json
from pathlib import Path

BEGIN = "<!-- studies:begin (written by `python -m studies readme`; do not edit by hand) -->"
END = "<!-- studies:end -->"
HEADING = "## Studies"
INTRO = ("One row per study file, written from its report (`results/<study>.json`). Every trained number in these "
         "reports comes from runs of recipes through `main.py` that the studies runner made; a study whose runs "
         "are not all finished says so, and its report shows the earlier numbers (from the old per-study scripts) "
         "in its *previous* column.")


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _claims(report: dict) -> str:
    parts = []
    ordered = sorted(report.get("claims", {}).values(), key=lambda c: not c.get("primary"))
    for c in ordered:
        for pt, d in c["points"].items():
            what = d.get("text") or d.get("why", "")
            tag = "primary: " if c.get("primary") else ""
            where = f" at {pt}" if pt else ""
            parts.append(f"{tag}{c['label']}{where}: {what} — **{d['status']}**")
    if not parts:
        return "no claims (descriptive)"
    shown = parts[:3]
    rest = parts[3:]
    if rest:
        counts: dict[str, int] = {}
        for c in ordered:
            for d in c["points"].values():
                counts[d["status"]] = counts.get(d["status"], 0) + 1
        shown.append(f"all {len(parts)} claims: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "<br>".join(shown)


def row(report: dict, study_file: str) -> str:
    h = report.get("header", {})
    name = report["study"]
    done, total = len(report.get("runs_finished", [])), report.get("runs_total", 0)
    runs = f"{done} of {total} through main.py" + ("" if done == total else " (**incomplete**; see the report's "
                                                                              "previous column)")
    commits = ", ".join(c[:7] for c in report.get("run_commits", {})) or "-"
    paper = h.get("paper", "")
    published = h.get("published", "")
    return (f"| [`{study_file}`](../{study_file}) ([{name}.md]({name}.md)) | {_cell(paper)}; published: "
            f"{_cell(published)} | {_cell(_claims(report))} | {runs} | `{_cell(h.get('command', ''))}` | {commits} | "
            f"{_cell(report.get('machine', '?'))} |")


def block(repo: Path) -> str:
    lines = [BEGIN, HEADING, "", INTRO, "",
             "| Study | Paper; published | Claims (margins fixed before the runs) | Runs | Command | Run commits | "
             "Machine |", "|---|---|---|---|---|---|---|"]
    for path in sorted((repo / "studies").glob("*.yaml")):
        if path.stem.endswith("_bridge"):
            continue  # a check of a port (old path vs new), not a result: linked from its study's notes
        result = repo / "results" / f"{path.stem}.json"
        if not result.is_file():
            continue
        try:
            report = json.loads(result.read_text())
        except json.JSONDecodeError:
            continue
        if report.get("study") != path.stem or "claims" not in report:
            continue  # another tool's JSON of the same name
        lines.append(row(report, f"studies/{path.name}"))
    lines.append(END)
    return "\n".join(lines)


def update(repo: Path, check: bool = False) -> bool:
    """Writes (or, with ``check``, compares) the block; returns True when the file is (now) up to date."""
    readme = repo / "results" / "README.md"
    text = readme.read_text()
    new = block(repo)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        updated = head + new + tail
    else:  # first time: after the introduction, before the first section
        first = text.find("\n## ")
        updated = text[:first + 1] + new + "\n\n" + text[first + 1:] if first >= 0 else text + "\n" + new + "\n"
    if check:
        return updated == text
    readme.write_text(updated)
    return True
