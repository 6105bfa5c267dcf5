"""Student-t intervals over seeds: the one helper behind every "method A beats method B" claim in the project.

A claim is decided by a margin fixed *before* looking at the numbers and by the low end of the two-sided
``confidence`` interval of the difference ``a - b`` (so at 95% the decision is a one-sided test at 2.5%):

* ``margin_met``    -- "A beats B by at least ``margin``":   low(a - b) >  margin
* ``non_inferior``  -- "A is within ``margin`` of B":        low(a - b) > -margin

``non_inferior`` is one-sided: it says A is not *worse* than B by more than the margin. It does not say the two
are equivalent (A may be much better). With ``margin=0`` both read "A is better than B".

Pairing: with ``paired=True`` (the default) ``a[i]`` and ``b[i]`` must come from the same seed (same data order,
same init where the methods allow), and the interval is that of the mean per-seed difference. Otherwise the
Welch (unequal variances) interval is used. Pairing is only valid when the seeds really are shared.

Example::

    from studies.seeds import compare, mean_ci
    c = compare(acc_pruned, acc_baseline, margin=1.0, names=("pruned", "baseline"))
    print(c)              # pruned - baseline = -0.31 [-0.62, 0.00] (95% CI, n=5, paired); margin 1.00: not met
    c.non_inferior        # True: the pruned net is within 1 point of the baseline

Command line (each file a JSON list of per-seed numbers, or an object ``{"seed": value}`` paired by key)::

    python -m studies.seeds a.json b.json --margin 0.5
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Comparison", "Interval", "compare", "format_table", "main", "mean_ci", "t_quantile"]


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``df`` may be fractional: Welch)."""
    from scipy.stats import t as student_t

    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"t_quantile: df must be > 0, got {df}")
    return float(student_t.ppf(p, df))


def _as_values(values: Iterable[float], what: str) -> list[float]:
    if isinstance(values, str | bytes | Mapping):
        raise TypeError(f"{what}: expected a sequence of numbers, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) and not hasattr(v, "__float__"):
            raise TypeError(f"{what}: value {i} is not a number: {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{what}: value {i} is not finite ({f}); a diverged seed must be handled explicitly")
        out.append(f)
    return out


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _mean_std(x: Sequence[float]) -> tuple[float, float]:
    n = len(x)
    mean = math.fsum(x) / n
    var = math.fsum((v - mean) ** 2 for v in x) / (n - 1)
    return mean, math.sqrt(var)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its two-sided Student-t interval [low, high]; ``std`` is the sample std (n-1)."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def __str__(self) -> str:
        return (
            f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}] "
            f"({self.confidence * 100:g}% CI, n={self.n}, std={self.std:.2f})"
        )


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t ``confidence`` interval of ``values`` (at least 2 finite numbers)."""
    _check_confidence(confidence)
    x = _as_values(values, "mean_ci")
    n = len(x)
    if n < 2:
        raise ValueError(f"mean_ci: a t interval needs at least 2 values, got {n}")
    mean, std = _mean_std(x)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean=mean, low=mean - half, high=mean + half, n=n, std=std, confidence=confidence)


@dataclass(frozen=True)
class Comparison:
    """The difference ``a - b`` with its t interval and the margin decisions (see the module docstring)."""

    diff: float
    low: float
    high: float
    df: float
    se: float
    n_a: int
    n_b: int
    paired: bool
    confidence: float
    margin: float
    margin_met: bool
    non_inferior: bool
    names: tuple[str, str] = ("A", "B")

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def beats(self, margin: float) -> bool:
        """low(a - b) > ``margin``: "A beats B by at least ``margin``" (the margin must be fixed in advance)."""
        return self.low > margin

    def within(self, margin: float) -> bool:
        """low(a - b) > -``margin``: "A is within ``margin`` of B" (one-sided: A is not worse by more)."""
        if margin < 0:
            raise ValueError(f"within: the margin must be >= 0, got {margin}")
        return self.low > -margin

    def __str__(self) -> str:
        a, b = self.names
        n = f"n={self.n_a}" if self.paired else f"n={self.n_a}+{self.n_b}"
        kind = "paired" if self.paired else "Welch"
        verdict = "met" if self.margin_met else "not met"
        return (
            f"{a} - {b} = {self.diff:.2f} [{self.low:.2f}, {self.high:.2f}] "
            f"({self.confidence * 100:g}% CI, {n}, {kind}); margin {self.margin:.2f}: {verdict}"
        )


def compare(
    a: Iterable[float],
    b: Iterable[float],
    margin: float = 0.0,
    paired: bool = True,
    confidence: float = 0.95,
    min_seeds: int = 5,
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Compare per-seed results ``a`` and ``b`` (higher is better) against a ``margin`` fixed in advance.

    Paired (by seed index; ``a`` and ``b`` must have the same length) or Welch. Raises ``ValueError`` when
    either side has fewer than ``min_seeds`` values.
    """
    _check_confidence(confidence)
    if min_seeds < 2:
        raise ValueError(f"compare: min_seeds must be >= 2 (a t interval needs 2 values), got {min_seeds}")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"compare: the margin must be a finite number >= 0, got {margin}")
    xa = _as_values(a, f"compare ({names[0]})")
    xb = _as_values(b, f"compare ({names[1]})")
    for name, x in zip(names, (xa, xb), strict=True):
        if len(x) < min_seeds:
            raise ValueError(
                f"compare: {name} has {len(x)} seeds, fewer than min_seeds={min_seeds}; "
                f"run more seeds rather than lowering the bar"
            )
    if paired:
        if len(xa) != len(xb):
            raise ValueError(
                f"compare: paired comparison needs one value per seed on both sides, got {len(xa)} and {len(xb)} "
                f"(use paired=False for independent runs)"
            )
        d = [x - y for x, y in zip(xa, xb, strict=True)]
        n = len(d)
        diff, std = _mean_std(d)
        se = std / math.sqrt(n)
        df: float = n - 1
    else:
        ma, sa = _mean_std(xa)
        mb, sb = _mean_std(xb)
        va, vb = sa**2 / len(xa), sb**2 / len(xb)
        diff = ma - mb
        se = math.sqrt(va + vb)
        if se > 0:  # Welch-Satterthwaite
            df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
        else:
            df = len(xa) + len(xb) - 2
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    low, high = diff - half, diff + half
    return Comparison(
        diff=diff,
        low=low,
        high=high,
        df=float(df),
        se=se,
        n_a=len(xa),
        n_b=len(xb),
        paired=paired,
        confidence=confidence,
        margin=float(margin),
        margin_met=low > margin,
        non_inferior=low > -margin,
        names=(str(names[0]), str(names[1])),
    )


def _cell(value: Any, digits: int, confidence: float) -> str:
    if isinstance(value, Interval | Comparison):
        mean = value.mean if isinstance(value, Interval) else value.diff
        return f"{mean:.{digits}f} ± {value.half_width:.{digits}f}"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return _cell(mean_ci(value, confidence), digits, confidence)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(
    rows: Sequence[Mapping[str, Any]], digits: int = 2, confidence: float = 0.95, columns: Sequence[str] | None = None
) -> str:
    """A markdown table of ``rows`` (dicts column -> value); intervals print as ``mean ± half-width``.

    A value may be an ``Interval``, a ``Comparison`` (difference ± half-width), a list of per-seed numbers
    (turned into ``mean_ci(values, confidence)``), a float (``digits`` decimals) or anything else (``str``).
    Columns are ``columns`` or the keys of the rows in first-seen order. When any cell is an interval the
    table is followed by a line saying what ± means.
    """
    if not rows:
        raise ValueError("format_table: no rows")
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    header = "| " + " | ".join(str(c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c], digits, confidence) if c in row else "" for c in columns) + " |")
    if any(_is_interval(v) for row in rows for v in row.values()):
        lines += ["", f"± is the half-width of the two-sided {confidence * 100:g}% Student-t interval over seeds."]
    return "\n".join(lines) + "\n"


def _is_interval(value: Any) -> bool:
    return isinstance(value, Interval | Comparison) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes)
    )


def _load(path: str) -> list[float] | dict[str, float]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"studies.seeds: cannot read {path}: {e}") from e
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    if isinstance(data, list):
        return data
    raise SystemExit(f"studies.seeds: {path} must hold a JSON list of numbers or an object seed -> number")


def _align(a: Any, b: Any, paired: bool, names: tuple[str, str]) -> tuple[list[float], list[float]]:
    if isinstance(a, dict) != isinstance(b, dict):
        raise SystemExit("studies.seeds: give both files as lists or both as {seed: value} objects")
    if not isinstance(a, dict):
        return a, b
    if paired and set(a) != set(b):
        raise SystemExit(
            f"studies.seeds: paired comparison needs the same seeds; only in {names[0]}: "
            f"{sorted(set(a) - set(b))}, only in {names[1]}: {sorted(set(b) - set(a))}"
        )
    if not paired:
        return list(a.values()), list(b.values())
    numeric = all(k.lstrip("-").isdigit() for k in a)
    keys = sorted(a, key=int) if numeric else sorted(a)
    return [a[k] for k in keys], [b[k] for k in keys]


def main(argv: Sequence[str] | None = None) -> Comparison:
    parser = argparse.ArgumentParser(
        prog="python -m studies.seeds",
        description="Student-t interval of a - b over seeds, and whether a margin fixed in advance is met.",
    )
    parser.add_argument("a", help="JSON list of per-seed numbers of method A (or an object seed -> number)")
    parser.add_argument("b", help="JSON list of per-seed numbers of method B, same seed order when paired")
    parser.add_argument("--margin", type=float, default=0.0, help="A beats B if low(a - b) > margin (default 0)")
    parser.add_argument("--unpaired", action="store_true", help="Welch interval instead of pairing by seed")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--min-seeds", type=int, default=5)
    parser.add_argument("--names", nargs=2, metavar=("A", "B"), help="labels (default: the file names)")
    args = parser.parse_args(argv)
    names = tuple(args.names) if args.names else (Path(args.a).stem, Path(args.b).stem)
    paired = not args.unpaired
    a, b = _align(_load(args.a), _load(args.b), paired, names)
    try:
        result = compare(
            a, b, margin=args.margin, paired=paired, confidence=args.confidence, min_seeds=args.min_seeds,
            names=names,
        )
    except (TypeError, ValueError) as e:
        parser.exit(2, f"studies.seeds: {e}\n")
    print(result)
    print(format_table([
        {"method": names[0], "mean ± hw": mean_ci(a, args.confidence)},
        {"method": names[1], "mean ± hw": mean_ci(b, args.confidence)},
    ], confidence=args.confidence), end="")
    return result


if __name__ == "__main__":
    main()
