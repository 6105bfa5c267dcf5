"""Point mentions of the old per-study benchmark scripts at the study files that replaced them.

When a reproduction script under ``benchmarks/`` is ported to ``studies/<name>.yaml`` and deleted, the README,
the docs pages and the recipe headers still name it (``benchmarks/rnn_adding.py``, ``python -m
benchmarks.rnn_adding ...``). This script rewrites those mentions, for every script in ``PORTED`` whose file no
longer exists (a script still in the tree is left alone: its study is not finished yet):

* ``benchmarks/<script>.py`` -> ``studies/<study>.yaml``;
* ``python -m benchmarks.<script>`` (with its arguments up to the closing backtick) -> ``python -m studies run
  studies/<study>.yaml``;
* a leftover ``(`--study cells`)``-style option note right after the mention is dropped.

``results/`` is not touched: its reports record how earlier numbers were made, with the commit that had the
script.

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
    if args.check and left:
        print("run: python recipes/migrations/study_references.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
