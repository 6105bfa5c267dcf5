"""Rewrite every citation of the old, unpublished reference notes into a link to the project's own docs pages.

Recipes, code, READMEs and results notes used to cite sections of a notes file that was never part of the
repository (its name is ``NOTES`` below; it is spelled indirectly so that this script does not mention it).
Each cited section number maps to a page and heading anchor under ``docs/`` (``SECTION_TARGETS``); this
script rewrites every occurrence in every tracked text file, in its context:

* ``(NOTES 12)``, ``NOTES section 8``, ``see NOTES 11.3``   -> the page / anchor, e.g. ``docs/disk.md#settings``;
* ``NOTES sections 4-6``, ``NOTES 10.2 and 11.4``, ``NOTES 7.3-7.4, 8.1`` -> a list of targets;
* ``NOTES (3.6)``, ``section 10.1 of NOTES``, ``eq. 7.2 of NOTES``        -> the target (the equation's words kept);
* a number wrapped onto the next line (YAML comments, docstrings, implicit string concatenation) -> the target
  on that next line, so the line count never changes;
* mentions without a number (``not in NOTES``, ``NOTES's tables``) -> the page the same file cites most, or a
  fixed phrase for the few special sentences (``SPECIAL``);
* in ``results/README.md`` the *Paper* column's bare section numbers ``(1.8)``, ``(7.3, 7.4)`` become links.

In Markdown files the target becomes a relative link, ``[docs/<page>.md#<anchor>](../docs/<page>.md#<anchor>)``.

Usage (from the repository root)::

    python recipes/migrations/cite_docs.py            # rewrite, print a summary
    python recipes/migrations/cite_docs.py --dry-run  # summary only, nothing written
    python recipes/migrations/cite_docs.py --check    # exit 1 if any mention is left (CI)

Idempotent: a second run finds nothing to do. ``docs/`` is never touched.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
from pathlib import Path

NOTES = "REFERENCE" + ".md"  # the old notes' file name, never written out whole in this repository
NOTES_RE = re.escape(NOTES)

# Every section number cited anywhere in the repository -> docs target (page, or page#anchor).
SECTION_TARGETS: dict[str, str] = {
    "1": "docs/pruning.md",
    "1.1": "docs/pruning.md#method",
    "1.2": "docs/pruning.md#sensitivity-analysis",
    "1.3": "docs/pruning.md#independent-and-greedy-ranking",
    "1.4": "docs/pruning.md#residual-networks-and-layer-numbers",
    "1.5": "docs/pruning.md#retraining",
    "1.6": "docs/pruning.md#architectures",
    "1.7": "docs/pruning.md#pruned-configurations",
    "1.8": "docs/pruning.md#published-numbers",
    "1.9": "docs/pruning.md#counting-conventions",
    "1.10": "docs/pruning.md#differences-from-the-released-code",
    "1.11": "docs/pruning.md#differences-from-the-released-code",
    "2": "docs/quantized_training.md",
    "2.1": "docs/quantized_training.md#method",
    "2.2": "docs/quantized_training.md#quantizers",
    "2.3": "docs/quantized_training.md#training-rules",
    "2.4": "docs/quantized_training.md#theory",
    "2.5": "docs/quantized_training.md#published-numbers",
    "2.6": "docs/quantized_training.md#in-this-project",
    "2.7": "docs/quantized_training.md#differences-from-the-released-code",
    "3": "docs/loss_landscape.md",
    "3.1": "docs/loss_landscape.md#plot-types",
    "3.2": "docs/loss_landscape.md#filter-normalisation",
    "3.3": "docs/loss_landscape.md#grids-evaluation-and-training",
    "3.4": "docs/loss_landscape.md#pca-trajectory",
    "3.5": "docs/loss_landscape.md#hessian-eigenvalue-ratio",
    "3.6": "docs/loss_landscape.md#published-numbers",
    "3.7": "docs/loss_landscape.md#differences-from-the-released-code",
    "3.8": "docs/loss_landscape.md#differences-from-the-released-code",
    "4": "docs/irnn.md",
    "4.1": "docs/irnn.md#method",
    "4.2": "docs/irnn.md#update-rule",
    "4.3": "docs/irnn.md#published-numbers",
    "5": "docs/tarnn.md",
    "5.1": "docs/tarnn.md#method",
    "5.2": "docs/tarnn.md#update-as-released",
    "5.3": "docs/tarnn.md#published-numbers",
    "5.4": "docs/tarnn.md#differences-from-the-released-code",
    "6": "docs/fptt.md",
    "6.1": "docs/fptt.md#method",
    "6.2": "docs/fptt.md#algorithm",
    "6.3": "docs/fptt.md#window-losses",
    "6.4": "docs/fptt.md#models-and-settings",
    "6.5": "docs/fptt.md#published-numbers",
    "6.6": "docs/fptt.md#differences-from-the-released-code",
    "6.7": "docs/fptt.md#in-this-project",
    "7": "docs/global_layer.md",
    "7.1": "docs/global_layer.md#method",
    "7.2": "docs/global_layer.md#discretisation",
    "7.3": "docs/global_layer.md#architectures-and-settings",
    "7.4": "docs/global_layer.md#published-numbers",
    "7.5": "docs/global_layer.md#differences-from-the-released-code",
    "8": "docs/sicnn.md",
    "8.1": "docs/sicnn.md#what-is-public",
    "8.2": "docs/sicnn.md#what-is-public",
    "8.3": "docs/sicnn.md#project-design",
    "9": "docs/dcl.md",
    "9.1": "docs/dcl.md#what-is-public",
    "9.2": "docs/dcl.md#what-is-public",
    "9.3": "docs/dcl.md#project-design",
    "10": "docs/selective.md",
    "10.1": "docs/selective.md#osp-one-sided-prediction",
    "10.2": "docs/selective.md#hybrid-edge-and-cloud-router",
    "11": "docs/disk.md",
    "11.1": "docs/disk.md#method",
    "11.2": "docs/disk.md#loss-as-implemented",
    "11.3": "docs/disk.md#settings",
    "11.4": "docs/disk.md#published-numbers",
    "11.5": "docs/disk.md#in-this-project",
    "12": "docs/weight_sharing.md",
    "12.1": "docs/weight_sharing.md#what-is-public",
    "12.2": "docs/weight_sharing.md#method",
    "12.3": "docs/weight_sharing.md#training-settings",
    "12.4": "docs/weight_sharing.md#published-numbers",
    "12.5": "docs/weight_sharing.md#equivalence-with-a-narrow-network",
    "13": "docs/affine_vae.md",
    "13.1": "docs/affine_vae.md#method",
    "13.2": "docs/affine_vae.md#architectures-and-settings",
    "13.3": "docs/affine_vae.md#published-numbers",
    "13.4": "docs/affine_vae.md#differences-from-the-released-code",
    "14": "docs/transformer_search.md",
    "14.1": "docs/transformer_search.md#what-is-public",
    "14.2": "docs/transformer_search.md#baseline-protocol",
    "14.3": "docs/transformer_search.md#project-design",
    "15": "docs/README.md",
    "15.1": "docs/README.md#counting-compute",
    "15.2": "docs/README.md#truncated-sequences-in-lightning",
    "15.3": "docs/README.md",
}

# Sentences that need their own wording (whole match -> replacement; {target} is formatted as a target, (\1) is
# the match's first group).
SPECIAL: list[tuple[str, str]] = [
    (r"the published value with its " + NOTES_RE + r" section",
     "the published value with a link to its source in the technique's docs page"),
    (r"Parameter counts of " + NOTES_RE + r"'s tables",
     "Parameter counts of the published tables ({docs/weight_sharing.md#published-numbers})"),
    (r"has " + NOTES_RE + r"'s count", "has the published count ({docs/weight_sharing.md#published-numbers})"),
    (r"\(period not in " + NOTES_RE + r"\)", "(period not published; {docs/disk.md#settings})"),
    # results notes: a past statement about the old notes stays in the past tense (the docs page now says it)
    (NOTES_RE + r" section 11 does not((?:\s|\\n)+)say this",
     "The notes of the time (since replaced by {docs/disk.md#settings}) did not(\\1)say this"),
    (NOTES_RE + r" section 2, whose definitions are tagged(\s+)\[unverified\] there",
     "{docs/quantized_training.md}, which marks these definitions as(\\1)not verified"),
]

NUM = r"\d{1,2}(?:\.\d{1,2})?(?![\d.]\d)"
# What may sit between two words of one citation: spaces, or a line break with the next line's comment
# marker / string quotes (implicit concatenation), so wrapped citations are found.
SEP = r"(?:[ \t]+|[ \t]*\"?[ \t]*\n[ \t]*(?:#|\*|//)?[ \t]*\"?[ \t]*)"
NUM_LIST = rf"(?P<nums>{NUM}(?:(?:[ \t]*[-\u2013][ \t]*|,[ \t]*|/|[ \t]+and[ \t]+){NUM})*)"

# "NOTES [section(s)] <numbers>" or "NOTES (<numbers>)"
CITE = re.compile(
    r"(?P<lead>[ \t]*\(?)" + NOTES_RE + rf"(?:(?P<sep1>{SEP})sections?)?(?P<sep2>{SEP}|[ \t]*\([ \t]*)" + NUM_LIST + r"(?P<close>\))?"
)
# "section 10.1 of NOTES", "eq. 7.2 of NOTES"
CITE_OF = re.compile(rf"(?P<lead>[ \t]*)(?P<word>section|eq\.)(?P<sep1>{SEP})(?P<nums>{NUM})(?P<sep2>{SEP})of(?P<sep3>{SEP})" + NOTES_RE)
# "not in NOTES" (a bare mention inside a sentence)
NOT_IN = re.compile(rf"not in(?P<sep>{SEP})" + NOTES_RE)
BARE = re.compile(NOTES_RE + r"(?:'s)?")

# Bare section numbers that only made sense next to a citation, in files that cite the notes: "(8.1)",
# "(section 6.3)", "(..., section 6.6)". Only sub-section numbers (N.M) that are in SECTION_TARGETS, and only
# directly after "(" or as "section N.M" after ", " / "; " (a paper's "section 4.1" is not in parentheses).
BARE_SECTION = re.compile(
    r"(?:(?<=\()(?:section )?|(?:(?<=, )|(?<=; ))section )(?P<num>\d{1,2}\.\d{1,2}(?:, \d{1,2}\.\d{1,2})*)(?=[),;])"
)

# results/README.md, column "Paper": bare section numbers such as "(1.8)", "(7.3, 7.4)", "of 12.4".
RESULTS_README = "results/README.md"
PAPER_NUM = re.compile(rf"(?:(?<=\()|(?<=, )|(?<=; )|(?<=of )|(?<=^ ))(?P<num>{NUM})(?=\)|,|;| \(|\s*$)")

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".txt", ".toml", ".cfg", ".sh", ".sbatch", ".ini", ".rst"}
SKIP_PREFIXES = ("docs/",)
SKIP_FILES = {"recipes/migrations/cite_docs.py", "tests/test_docs.py"}


def _expand(nums: str) -> list[str]:
    """'4-6' -> ['4', '5', '6']; '7.3-7.4, 8.1' -> ['7.3-7.4', '8.1'] (a sub-section range stays one item)."""
    out: list[str] = []
    for part in re.split(r",[ \t]*|/|[ \t]+and[ \t]+", nums):
        part = part.strip()
        m = re.fullmatch(rf"({NUM})[ \t]*[-\u2013][ \t]*({NUM})", part)
        if m and "." not in part:
            out += [str(i) for i in range(int(m.group(1)), int(m.group(2)) + 1)]
        else:
            out.append(part)
    return out


def _target(item: str) -> str:
    """Target of one section number or sub-section range ('13.2-13.3' -> the page)."""
    if item in SECTION_TARGETS:
        return SECTION_TARGETS[item]
    m = re.fullmatch(rf"({NUM})[ \t]*[-\u2013][ \t]*({NUM})", item)
    if m:
        a, b = (SECTION_TARGETS.get(x) for x in m.groups())
        if a and b:
            pa, pb = a.split("#")[0], b.split("#")[0]
            return pa if pa == pb else f"{a}#{b}"  # the second form never happens in this repository
    top = item.split(".")[0]
    if top in SECTION_TARGETS:  # an unlisted sub-section: its page
        return SECTION_TARGETS[top]
    raise KeyError(item)


def _join(targets: list[str]) -> str:
    seen: list[str] = []
    for t in targets:
        if t not in seen:
            seen.append(t)
    if len(seen) == 1:
        return seen[0]
    return ", ".join(seen[:-1]) + " and " + seen[-1]


def _newline_part(m: re.Match, *seps: str | None) -> str:
    """The first separator that holds a line break (without its leading blanks), kept so the rewritten text breaks
    the line at the same place."""
    for s in seps:
        if s and "\n" in s:
            return s.lstrip(" \t")
    return ""


class Rewriter:
    def __init__(self, rel: str, text: str):
        self.rel = rel
        self.text = text
        self.markdown = rel.endswith(".md")
        self.depth = rel.count("/")
        self.count = 0
        self.unhandled: list[str] = []
        self.bare_sections: list[str] = []
        self.default = self._default_target()

    def _default_target(self) -> str:
        pages = collections.Counter(
            _target(_expand(m.group("nums"))[0]).split("#")[0]
            for m in CITE.finditer(self.text)
            if _safe_expand(m.group("nums"))
        )
        if not pages:
            name = Path(self.rel).name
            for prefix, page in PREFIX_PAGES:
                if name.startswith(prefix):
                    return page
            return "docs/README.md"
        return pages.most_common(1)[0][0]

    def fmt(self, targets: str) -> str:
        """Markdown files get relative links; everything else the plain path."""
        if not self.markdown:
            return targets
        up = "../" * self.depth
        parts = re.split(r"(, | and )", targets)
        return "".join(p if p in (", ", " and ") else f"[{p}]({up}{p})" for p in parts)

    def _special(self, m: re.Match, repl: str) -> str:
        self.count += 1
        out = re.sub(r"\{([^}]+)\}", lambda t: self.fmt(t.group(1)), repl)
        return re.sub(r"\(\\(\d)\)", lambda g: m.group(int(g.group(1))), out)  # "(\\1)": the match's group 1

    def _cite(self, m: re.Match) -> str:
        try:
            targets = _join([_target(i) for i in _expand(m.group("nums"))])
        except KeyError as e:
            self.unhandled.append(f"{self.rel}: unknown section {e} in {m.group(0)!r}")
            return m.group(0)
        self.count += 1
        paren = m.group("sep2").strip().startswith("(")
        nl = _newline_part(m, m.group("sep1"), m.group("sep2"))
        lead = m.group("lead")
        # a wrapped citation moves whole onto the next line (with its opening parenthesis, if any)
        if not nl:
            out = lead + self.fmt(targets)
        elif '"' in nl:  # implicit string concatenation: the blank before the closing quote stays in the string
            out = lead.rstrip("(") + nl + lead.strip() + self.fmt(targets)
        else:
            out = nl + lead.strip() + self.fmt(targets)
        if paren:  # "NOTES (3.6)": the parentheses only held the number
            return out if m.group("close") else out + " ("  # unbalanced: keep the opening one
        return out + (m.group("close") or "")

    def _cite_of(self, m: re.Match) -> str:
        try:
            target = _target(m.group("nums"))
        except KeyError as e:
            self.unhandled.append(f"{self.rel}: unknown section {e} in {m.group(0)!r}")
            return m.group(0)
        self.count += 1
        nl = _newline_part(m, m.group("sep1"), m.group("sep2"), m.group("sep3"))
        words = "the equation in " if m.group("word") == "eq." else ""
        return (nl if nl else m.group("lead")) + words + self.fmt(target)

    def _not_in(self, m: re.Match) -> str:
        self.count += 1
        return "not documented in" + m.group("sep") + self.fmt(self.default)

    def _bare(self, m: re.Match) -> str:
        self.count += 1
        t = self.fmt(self.default)
        return f"the notes in {t}" if m.group(0).endswith("'s") else t

    def _paper_cells(self, text: str) -> str:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if not line.startswith("|") or line.startswith("|---") or line.count("|") < 4:
                continue
            cells = line.split("|")
            cell = cells[2]
            if "](" in cell:  # already linked
                continue

            def link(m: re.Match) -> str:
                num = m.group("num")
                if num not in SECTION_TARGETS:
                    return num
                self.count += 1
                target = SECTION_TARGETS[num]
                page = target.split("/")[1].split(".")[0]
                return f"[{page}]({'../' * self.depth}{target})"

            cells[2] = PAPER_NUM.sub(link, cell)
            lines[i] = "|".join(cells)
        return "\n".join(lines)

    def run(self) -> str:
        text = self.text
        if NOTES not in text:
            return text
        for pattern, repl in SPECIAL:
            text = re.sub(pattern, lambda m, r=repl: self._special(m, r), text)
        if self.rel == RESULTS_README:
            text = self._paper_cells(text)
        text = CITE_OF.sub(self._cite_of, text)
        text = CITE.sub(self._cite, text)
        text = NOT_IN.sub(self._not_in, text)
        text = BARE.sub(self._bare, text)
        if not self.rel.startswith("tests/"):
            text = BARE_SECTION.sub(self._bare_section, text)
        return text

    def _bare_section(self, m: re.Match) -> str:
        nums = m.group("num").split(", ")
        if any(n not in SECTION_TARGETS for n in nums) or re.search(r"\b(?:19|20)\d\d, $", m.string[max(0, m.start() - 8):m.start()]):
            return m.group(0)  # not a notes section, or a paper's own section ("ICLR 2017, section 4.1")
        self.count += 1
        self.bare_sections.append(f"{self.rel}: {m.group(0)!r}")
        return self.fmt(_join([SECTION_TARGETS[n] for n in nums]))


def _safe_expand(nums: str) -> bool:
    try:
        [_target(i) for i in _expand(nums)]
        return True
    except KeyError:
        return False


# Files whose only mentions carry no number: their page from the file name.
PREFIX_PAGES = [
    ("prune_", "docs/pruning.md"), ("scratch_", "docs/pruning.md"), ("quant_", "docs/quantized_training.md"),
    ("landscape_", "docs/loss_landscape.md"), ("irnn_", "docs/irnn.md"), ("tarnn_", "docs/tarnn.md"),
    ("fptt_", "docs/fptt.md"), ("bptt_", "docs/fptt.md"), ("global_", "docs/global_layer.md"),
    ("sicnn_", "docs/sicnn.md"), ("dcl_", "docs/dcl.md"), ("osp_", "docs/selective.md"),
    ("selective_", "docs/selective.md"), ("hybrid_", "docs/selective.md"), ("disk_", "docs/disk.md"),
    ("kd_", "docs/disk.md"), ("wshare_", "docs/weight_sharing.md"), ("narrow_", "docs/weight_sharing.md"),
    ("avae_", "docs/affine_vae.md"), ("vae_", "docs/affine_vae.md"), ("nas_", "docs/transformer_search.md"),
    ("finetune_", "docs/transformer_search.md"),
]


def tracked_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def candidates(root: Path) -> list[str]:
    files = []
    for rel in tracked_files(root):
        if rel in SKIP_FILES or rel.startswith(SKIP_PREFIXES) or Path(rel).suffix not in TEXT_SUFFIXES:
            continue
        if (root / rel).is_file():
            files.append(rel)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="repository root (default: the current directory)")
    ap.add_argument("--check", action="store_true", help="exit 1 if any tracked file still mentions the notes")
    ap.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every changed file")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    if not (root / ".git").exists():
        sys.exit(f"cite_docs: {root} is not a git repository root; pass --root <repository root>.")

    total, changed, unhandled, left, review = 0, [], [], [], []
    for rel in candidates(root):
        path = root / rel
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if NOTES not in text:
            continue
        if args.check:
            left += [f"{rel}:{i}" for i, line in enumerate(text.split("\n"), 1) if NOTES in line]
            continue
        rw = Rewriter(rel, text)
        new = rw.run()
        total += rw.count
        unhandled += rw.unhandled
        review += rw.bare_sections
        if NOTES in new:
            left += [f"{rel}:{i}" for i, line in enumerate(new.split("\n"), 1) if NOTES in line]
        if new != text:
            changed.append((rel, rw.count))
            if not args.dry_run:
                tmp = path.with_name(path.name + ".cite_docs.tmp")
                tmp.write_text(new, encoding="utf-8")
                os.replace(tmp, path)

    if args.check:
        for loc in left:
            print(f"cite_docs: mention left at {loc}")
        print(f"cite_docs --check: {len(left)} line(s) still mention the old notes.")
        return 1 if left else 0

    by_dir = collections.Counter(rel.split("/")[0] if "/" in rel else "." for rel, _ in changed)
    verb = "would rewrite" if args.dry_run else "rewrote"
    print(f"cite_docs: {verb} {total} mention(s) in {len(changed)} file(s): "
          + ", ".join(f"{d} {n}" for d, n in sorted(by_dir.items())))
    if args.verbose:
        for rel, n in changed:
            print(f"  {rel}: {n}")
    if review:
        print(f"cite_docs: of these, {len(review)} bare section number(s) next to a citation"
              + (":" if args.verbose else " (-v lists them)"))
        if args.verbose:
            for loc in review:
                print(f"  {loc}")
    for msg in unhandled:
        print(f"cite_docs: NOT HANDLED {msg}")
    for loc in left:
        print(f"cite_docs: mention left at {loc}")
    return 1 if (unhandled or left) else 0


if __name__ == "__main__":
    sys.exit(main())
