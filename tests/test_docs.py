"""docs/: every technique page exists with the sections the project promises, every ``docs/<page>.md#<anchor>``
cited anywhere in the repository (recipes, code, READMEs, results, the pages themselves) resolves to a heading of
that page, and the migration script that produced those citations maps every old section to a real anchor and
rewrites each citation form into readable text."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

TECHNIQUE_PAGES = [
    "pruning", "quantized_training", "loss_landscape", "irnn", "tarnn", "fptt", "global_layer", "sicnn", "dcl",
    "selective", "disk", "weight_sharing", "affine_vae", "transformer_search",
]
# Sections every technique page has (as GitHub heading slugs).
REQUIRED_SECTIONS = ["method", "published-numbers", "counting-conventions", "differences-from-the-released-code",
                     "in-this-project"]
# Pages whose method is the project's own design: they say what is public and label the design.
PROJECT_DESIGN_PAGES = ["sicnn", "dcl", "transformer_search"]

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".txt", ".toml", ".cfg", ".sh", ".sbatch", ".ini", ".rst"}
# "docs/<page>.md" with an optional "#anchor", as a path (``../docs/<page>.md#<anchor>`` in Markdown links included).
DOCS_CITE = re.compile(r"(?<![A-Za-z0-9_.-])docs/(?P<page>[A-Za-z_]+)\.md(?:#(?P<anchor>[A-Za-z0-9_-]+))?")
# Relative links between the pages: ](other.md#anchor)
PAGE_LINK = re.compile(r"\]\((?P<page>[A-Za-z_]+)\.md(?:#(?P<anchor>[A-Za-z0-9_-]+))?\)")


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (letters, digits, '_', '-' and spaces kept),
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Anchors of a Markdown page's headings (outside code fences), duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def repo_text_files() -> list[Path]:
    """Tracked and new (not ignored) text files; a plain walk when git is not available."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        rels = [p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        rels = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("runs", "wandb", "__pycache__")]
            rels += [os.path.relpath(os.path.join(root, f), REPO) for f in files]
    return [REPO / r for r in rels if Path(r).suffix in TEXT_SUFFIXES and (REPO / r).is_file()]


def test_every_cited_docs_anchor_exists():
    cache: dict[str, set[str] | None] = {}

    def page_anchors(page: str) -> set[str] | None:
        if page not in cache:
            path = DOCS / f"{page}.md"
            cache[page] = anchors(path) if path.is_file() else None
        return cache[page]

    bad, n = [], 0
    for path in repo_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        cites = list(DOCS_CITE.finditer(text))
        if path.parent == DOCS:
            cites += list(PAGE_LINK.finditer(text))
        for m in cites:
            n += 1
            page, anchor = m.group("page"), m.group("anchor")
            found = page_anchors(page)
            where = f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}"
            if found is None:
                bad.append(f"{where}: docs/{page}.md does not exist")
            elif anchor and anchor not in found:
                bad.append(f"{where}: docs/{page}.md has no heading with anchor #{anchor}")
    assert n > 0, "no docs citation found at all: the scan is broken"
    assert not bad, "dangling docs citations:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", TECHNIQUE_PAGES)
def test_technique_page_has_the_promised_sections(page):
    path = DOCS / f"{page}.md"
    assert path.is_file(), f"docs/{page}.md is missing"
    found = anchors(path)
    missing = [s for s in REQUIRED_SECTIONS if s not in found]
    assert not missing, f"docs/{page}.md lacks the sections {missing} (headings found: {sorted(found)})"
    if page in PROJECT_DESIGN_PAGES:
        for s in ("what-is-public", "project-design"):
            assert s in found, f"docs/{page}.md: a project-design page needs a '{s}' section"
    text = path.read_text(encoding="utf-8")
    # the page names its implementation, recipes and results rows
    assert "results/README.md" in text, f"docs/{page}.md does not point to its results rows"
    assert re.search(r"`(?:callbacks|modules|nets)/[a-z_]+\.py`", text), f"docs/{page}.md names no implementation file"
    assert "Recipes:" in text, f"docs/{page}.md lists no recipes"


def test_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in TECHNIQUE_PAGES + ["adding_a_technique"]:
        assert f"]({page}.md)" in index, f"docs/README.md does not link {page}.md"
    assert (DOCS / "adding_a_technique.md").is_file()


def test_docs_never_cite_the_old_notes():
    old = "REFERENCE" + ".md"  # the unpublished notes' name, spelled indirectly
    for path in sorted(DOCS.glob("*.md")):
        assert old not in path.read_text(encoding="utf-8"), f"{path.relative_to(REPO)} mentions {old}"


# ---- the migration script (recipes/migrations/cite_docs.py) ----

def _cite_docs():
    spec = importlib.util.spec_from_file_location("cite_docs", REPO / "recipes" / "migrations" / "cite_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_migration_targets_are_real_anchors():
    mod = _cite_docs()
    for section, target in mod.SECTION_TARGETS.items():
        page, _, anchor = target.partition("#")
        path = REPO / page
        assert path.is_file(), f"section {section} -> {target}: {page} does not exist"
        assert not anchor or anchor in anchors(path), f"section {section} -> {target}: no such heading"


N = "REFERENCE" + ".md"


FORMS = [
    ("recipes/x.yaml", f"# Bidart thesis ({N} 12), ResNet", "# Bidart thesis (docs/weight_sharing.md), ResNet"),
    ("nets/x.py", f"public ({N} section 8).", "public (docs/sicnn.md)."),
    ("modules/x.py", f"see {N} 11.3 for", "see docs/disk.md#settings for"),
    ("modules/x.py", f"(Kag et al.; {N} sections 4-6)", "(Kag et al.; docs/irnn.md, docs/tarnn.md and docs/fptt.md)"),
    ("recipes/x.yaml", f"ICLR 2023; {N} 10.2 and 11.4).",
     "ICLR 2023; docs/selective.md#hybrid-edge-and-cloud-router and docs/disk.md#published-numbers)."),
    ("recipes/x.yaml", f"# not reproduced in {N} (3.6); check", "# not reproduced in docs/loss_landscape.md#published-numbers; check"),
    ("modules/x.py", f"AISTATS 2021, section\n10.1 of {N}): a", "AISTATS 2021,\ndocs/selective.md#osp-one-sided-prediction): a"),
    ("nets/x.py", f"(eq. 7.2 of {N}; module", "(the equation in docs/global_layer.md#discretisation; module"),
    # a number wrapped onto the next comment line moves there with its parenthesis
    ("recipes/x.yaml", f"# not public ({N}\n#    13.3), so", "# not public\n#    (docs/affine_vae.md#published-numbers), so"),
    # implicit string concatenation keeps the blank inside the first string
    ("benchmarks/x.py", f'"batch 128, {N} section "\n    "6.5) leaves"',
     '"batch 128, "\n    "docs/fptt.md#published-numbers) leaves"'),
    # a mention without a number takes the page the file cites most
    ("recipes/kd_x.yaml", f"# ({N} 11.4)\n# are not in\n#   {N}).",
     "# (docs/disk.md#published-numbers)\n# are not documented in\n#   docs/disk.md)."),
    ("modules/x.py", f"windows ({N} section 6.2/6.7): parts", "windows (docs/fptt.md#algorithm and docs/fptt.md#in-this-project): parts"),
    ("callbacks/x.py", f"(arXiv; {N} section 2, whose definitions are tagged\n[unverified] there). Drop",
     "(arXiv; docs/quantized_training.md, which marks these definitions as\nnot verified). Drop"),
    ("results/x.json", f"warm-up. {N} section 11 does not\\n  say this.",
     "warm-up. The notes of the time (since replaced by docs/disk.md#settings) did not\\n  say this."),
    # Markdown files get relative links
    ("results/x.md", f"(Kag; {N} section 9)", "(Kag; [docs/dcl.md](../docs/dcl.md))"),
]


@pytest.mark.parametrize("rel, before, after", FORMS, ids=[f"form{i}" for i in range(len(FORMS))])
def test_migration_rewrites_each_form(rel, before, after):
    mod = _cite_docs()
    out = mod.Rewriter(rel, before).run()
    assert out == after
    assert mod.Rewriter(rel, out).run() == out  # idempotent
    assert N not in out


def test_no_file_mentions_the_old_notes():
    """No tracked or new file names the unpublished notes any more (recipes/migrations/cite_docs.py rewrote them)."""
    old = "REFERENCE" + ".md"
    left = []
    for path in repo_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        left += [f"{path.relative_to(REPO)}:{i}" for i, line in enumerate(text.splitlines(), 1) if old in line]
    assert not left, (f"{len(left)} line(s) still mention {old}; run `python recipes/migrations/cite_docs.py` "
                      "from the repository root:\n" + "\n".join(left[:50]))


def test_no_mention_of_a_deleted_study_script():
    """README, docs and recipe headers name the study file once a benchmarks/ reproduction script is ported and
    deleted (recipes/migrations/study_references.py rewrites them)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "recipes/migrations/study_references.py"), "--check"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
