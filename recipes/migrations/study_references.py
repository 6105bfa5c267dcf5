"""Point mentions of the old per-study benchmark scripts at the study files that replaced them.

When a reproduction script under ``benchmarks/`` is ported to ``studies/<name>.yaml`` and deleted, the README,
the docs pages and the recipe headers still name it (``benchmarks/rnn_adding.py``, ``python -m
benchmarks.rnn_adding ...``). This script rewrites those mentions, for every script in ``PORTED`` whose file no
longer exists (a script still in the tree is left alone: its study is not finished yet):

* ``benchmarks/<script>.py`` -> ``studies/<study>.yaml``;
* ``python -m benchmarks.<script>`` (with its arguments up to the closing backtick) -> ``python -m studies run
  studies/<study>.yaml``;
* a leftover ``(`--study cells`)``-style option note right after the mention is dropped.

In ``results/`` the reports are not touched: they record how earlier numbers were made, with the commit that had
the script. Only the hand-written rows of ``results/README.md`` (outside the block that ``python -m studies readme``
generates) get a label: a row whose command is a deleted script says it is an old-path number, not rerun through
the recipes yet, and names the study that replaces the script; the command itself is kept. A row that already says
it was rerun through the recipes (edited by hand when its study's rerun finished) is left alone.

Usage (from the repository root)::

    python recipes/migrations/study_references.py            # rewrite, print a summary
    python recipes/migrations/study_references.py --check    # exit 1 if a mention of a deleted script is left

Idempotent.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PORTED = {  # old script (benchmarks/<key>.py) -> study file
    "prune_glyphs": "prune_glyphs", "quant_glyphs": "quant_glyphs", "dcl_glyphs": "dcl_glyphs",
    "rnn_adding": "rnn_adding", "quant_convex": "quant_convex", "landscape_glyphs": "landscape_glyphs",
    "avae_glyphs": "avae_glyphs", "global_illustrative": "global_illustrative", "sicnn_glyphs": "sicnn_glyphs",
    "hardness_glyphs": "hardness_glyphs", "nas_synthetic": "nas_synthetic", "prune_sensitivity": "prune_sensitivity",
}
GLOBS = ("README.md", "docs/*.md", "studies/README.md", "recipes/*.yaml", "recipes/glyphs/*.yaml")


def deleted() -> dict[str, str]:
    return {old: new for old, new in PORTED.items() if not (REPO / "benchmarks" / f"{old}.py").exists()}


def rewrite(text: str, mapping: dict[str, str]) -> tuple[str, int]:
    count = 0
    for old, new in mapping.items():
        study = f"studies/{new}.yaml"
        text, n1 = re.subn(rf"python -m benchmarks\.{old}\b[^`\n]*", f"python -m studies run {study}", text)
        text, n2 = re.subn(rf"`benchmarks/{old}\.py`( \(`--[a-z-]+ [a-z_]+`\))?", f"`{study}`", text)
        text, n3 = re.subn(rf"benchmarks/{old}\.py", study, text)
        count += n1 + n2 + n3
    return text, count


OLD_PATH = "old path, not rerun through the recipes yet (script since removed; the study is `{study}`): "
GENERATED = ("<!-- studies:begin", "<!-- studies:end")


def label_results_rows(text: str, mapping: dict[str, str]) -> tuple[str, int]:
    """Labels the hand-written rows of results/README.md whose command is a deleted script (see the docstring)."""
    count, inside, out = 0, False, []
    for line in text.splitlines(keepends=True):
        if line.startswith(GENERATED[0]):
            inside = True
        elif line.startswith(GENERATED[1]):
            inside = False
        if not inside and line.startswith("|") and "not rerun" not in line and "rerun through the recipes" not in line:
            if "old path (script since removed" in line:
                line = line.replace("old path (script since removed", "old path, not rerun through the recipes yet "
                                    "(script since removed")
                count += 1
            else:
                for old, new in mapping.items():
                    mention = f"`python -m benchmarks.{old}"
                    if mention in line:
                        line = line.replace(mention, OLD_PATH.format(study=f"studies/{new}.yaml") + mention, 1)
                        count += 1
                        break
        out.append(line)
    return "".join(out), count


def files() -> list[Path]:
    out: list[Path] = []
    for pattern in GLOBS:
        out += sorted(REPO.glob(pattern))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a mention of a deleted script is left")
    args = p.parse_args(argv)
    mapping = deleted()
    left = 0
    for path in files():
        text = path.read_text()
        new, n = rewrite(text, mapping)
        if n:
            left += n
            rel = path.relative_to(REPO)
            if args.check:
                print(f"{rel}: {n} mention(s) of deleted scripts")
            else:
                path.write_text(new)
                print(f"{rel}: {n} mention(s) rewritten")
    results = REPO / "results" / "README.md"
    if results.is_file():
        new, n = label_results_rows(results.read_text(), mapping)
        if n:
            left += n
            if args.check:
                print(f"results/README.md: {n} row(s) of deleted scripts without the old-path label")
            else:
                results.write_text(new)
                print(f"results/README.md: {n} row(s) labelled as old path")
    if args.check and left:
        print("run: python recipes/migrations/study_references.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
