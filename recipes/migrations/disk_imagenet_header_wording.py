"""The ImageNet DiSK headers: the released ImageNet runners are now described in docs/disk.md#settings, so the
headers say that their epoch split and student start are not ported yet (instead of "not documented").

Idempotent; ``--check`` exits 1 if a header still needs the edit.

    python recipes/migrations/disk_imagenet_header_wording.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1]
EDITS = {
    "trainer are not documented in docs/disk.md: here": "trainer are not ported yet (docs/disk.md#settings): here",
    "its ImageNet protocol is not documented in docs/disk.md.": "its ImageNet runners are not ported yet (docs/disk.md#settings).",
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    todo = []
    for path in sorted(RECIPES.glob("disk_*imagenet*.yaml")):
        text = path.read_text()
        new = text
        for old, replacement in EDITS.items():
            new = new.replace(old, replacement)
        if new != text:
            todo.append(path.name)
            if not check:
                path.write_text(new)
    print(f"{'would change' if check else 'changed'} {len(todo)} recipes")
    return 1 if check and todo else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
