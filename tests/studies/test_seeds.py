"""Tests of studies/seeds.py: t quantiles, hand-computed intervals, pairing, margin decisions, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from studies.seeds import (
    Comparison,
    Interval,
    compare,
    format_table,
    main,
    mean_ci,
    t_quantile,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452), (10_000, 1.9602)],
)
def test_t_quantile_matches_printed_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_one_sided_and_symmetric():
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))


def test_mean_ci_of_a_hand_computed_sample():
    # 1..5: mean 3, s^2 = 10/4 = 2.5, se = sqrt(2.5/5) = sqrt(0.5), half = 2.776445 * 0.707107 = 1.963243
    ci = mean_ci([1, 2, 3, 4, 5])
    assert isinstance(ci, Interval)
    assert ci.n == 5
    assert ci.mean == pytest.approx(3.0)
    assert ci.std == pytest.approx(math.sqrt(2.5))
    assert ci.low == pytest.approx(1.036757, abs=1e-5)
    assert ci.high == pytest.approx(4.963243, abs=1e-5)
    assert ci.half_width == pytest.approx(1.963243, abs=1e-5)


def test_mean_ci_confidence_changes_width():
    # 90%: t(0.95, 4) = 2.131847 -> half = 1.507443
    assert mean_ci([1, 2, 3, 4, 5], confidence=0.90).half_width == pytest.approx(1.507443, abs=1e-5)


@pytest.mark.parametrize("values", [[], [1.0]])
def test_mean_ci_needs_two_values(values):
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci(values)


def test_non_finite_values_are_rejected():
    with pytest.raises(ValueError, match="not finite"):
        mean_ci([1.0, float("nan"), 2.0])
    with pytest.raises(TypeError):
        mean_ci("12345")


# Correlated per-seed results: seed difficulty moves both methods together, A is ~1 point better on every seed.
B = [80.0, 85.0, 90.0, 75.0, 88.0]
D = [1.0, 1.2, 0.8, 1.1, 0.9]
A = [b + d for b, d in zip(B, D)]


def test_paired_interval_by_hand():
    # differences: mean 1.0, s^2 = 0.1 / 4 = 0.025, se = 0.0707107, half = 2.776445 * se = 0.196323
    c = compare(A, B, margin=0.5)
    assert isinstance(c, Comparison)
    assert c.paired and c.df == 4
    assert c.diff == pytest.approx(1.0)
    assert c.low == pytest.approx(0.803677, abs=1e-5)
    assert c.high == pytest.approx(1.196323, abs=1e-5)
    assert c.margin_met and c.non_inferior


def test_paired_and_welch_differ_on_correlated_data():
    paired = compare(A, B, margin=0.5)
    welch = compare(A, B, margin=0.5, paired=False)
    assert paired.diff == pytest.approx(welch.diff)
    assert welch.half_width > 20 * paired.half_width
    assert paired.margin_met
    assert not welch.margin_met  # seed-to-seed spread (~6 points) swamps the 1-point gain without pairing
    assert welch.low < 0 < welch.high


def test_against_scipy_reference_tests():
    stats = pytest.importorskip("scipy.stats")
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    welch = compare(a, b, paired=False)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == pytest.approx((ref.low, ref.high))
    # Welch-Satterthwaite by hand: (0.5 + 14/6)^2 / (0.5^2/4 + (14/6)^2/5) = 6.9723
    assert welch.df == pytest.approx(6.9723, abs=1e-4)
    paired = compare(A, B)
    ref = stats.ttest_rel(A, B).confidence_interval(0.95)
    assert (paired.low, paired.high) == pytest.approx((ref.low, ref.high))


def test_margin_logic_both_ways():
    # low end 0.80: beats B by 0.5 and by 0.8, not by 0.9
    assert compare(A, B, margin=0.5).margin_met
    assert compare(A, B, margin=0.8).margin_met
    assert not compare(A, B, margin=0.9).margin_met
    c = compare(A, B)
    assert c.beats(0.8) and not c.beats(0.81)
    # B against A: B is worse by 1.0 [0.80, 1.20]; within 1.5 points, not within 1 point
    rev = compare(B, A, margin=1.5)
    assert not rev.margin_met
    assert rev.non_inferior
    assert not compare(B, A, margin=1.0).non_inferior
    assert rev.within(1.5) and rev.within(1.25) and not rev.within(1.0) and not rev.within(0.0)
    with pytest.raises(ValueError):
        rev.within(-1.0)


def test_margin_zero_makes_both_claims_the_same():
    c = compare(B, A)
    assert c.margin_met == c.non_inferior is False


def test_four_seeds_are_refused():
    with pytest.raises(ValueError, match="4 seeds.*min_seeds=5"):
        compare(A[:4], B[:4])
    with pytest.raises(ValueError, match="min_seeds"):
        compare(A, B[:4], paired=False)
    assert compare(A[:4], B[:4], min_seeds=4).n_a == 4


def test_paired_needs_equal_lengths():
    with pytest.raises(ValueError, match="paired"):
        compare(A + [1.0], B)


def test_str():
    assert str(compare(A, B, margin=0.5)) == "A - B = 1.00 [0.80, 1.20] (95% CI, n=5, paired); margin 0.50: met"
    s = str(compare(A, B + [83.0], margin=0.5, paired=False, names=("ours", "base")))
    assert s.startswith("ours - base = ") and "n=5+6, Welch" in s and s.endswith("margin 0.50: not met")


def test_format_table():
    table = format_table([
        {"method": "A", "acc": mean_ci([1, 2, 3, 4, 5]), "params": "0.27M"},
        {"method": "B", "acc": [1, 2, 3, 4, 5], "params": 0.5},
    ])
    lines = table.splitlines()
    assert lines[0] == "| method | acc | params |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| A | 3.00 ± 1.96 | 0.27M |"
    assert lines[3] == "| B | 3.00 ± 1.96 | 0.50 |"
    assert "95% Student-t" in lines[-1]


def test_cli(tmp_path, capsys):
    fa, fb = tmp_path / "ours.json", tmp_path / "base.json"
    fa.write_text(json.dumps(A))
    fb.write_text(json.dumps(B))
    result = main([str(fa), str(fb), "--margin", "0.5"])
    out = capsys.readouterr().out
    assert result.margin_met
    assert out.splitlines()[0] == "ours - base = 1.00 [0.80, 1.20] (95% CI, n=5, paired); margin 0.50: met"


def test_cli_pairs_seed_objects_by_key(tmp_path, capsys):
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    fa.write_text(json.dumps({str(i): v for i, v in enumerate(A)}))
    fb.write_text(json.dumps({str(i): v for i, v in reversed(list(enumerate(B)))}))  # other order on disk
    assert main([str(fa), str(fb)]).high == pytest.approx(1.196323, abs=1e-5)
    fb.write_text(json.dumps({str(i + 1): v for i, v in enumerate(B)}))
    with pytest.raises(SystemExit, match="same seeds"):
        main([str(fa), str(fb)])


def test_cli_too_few_seeds_exits_nonzero(tmp_path):
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    fa.write_text(json.dumps(A[:4]))
    fb.write_text(json.dumps(B[:4]))
    proc = subprocess.run(
        [sys.executable, "-m", "studies.seeds", str(fa), str(fb), "--margin", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert "min_seeds=5" in proc.stderr
