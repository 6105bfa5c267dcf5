"""benchmarks/nas_latency.py's choice of the architecture to time: --arch, --arch-file, the old demo's result under
its new name (results/nas_synthetic_demo.json), and the error when none is there. The timing itself is tested
end to end in test_nas_benchmarks.py."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.nas_latency import _searched_arch

ARCH = {"layers": [0, 1, 3], "downsample": {"1": ["topk", 0.5]}}


def _args(tmp_path, **kw) -> argparse.Namespace:
    return argparse.Namespace(arch=kw.get("arch"), arch_file=kw.get("arch_file"), results=str(tmp_path))


def test_the_demo_fallback_reads_nas_synthetic_demo_json_and_its_matched_baseline(tmp_path):
    demo = {"searched": [{"arch": ARCH}], "drop_top": [{"name": "L01", "arch": {"layers": [0, 1]}},
                                                       {"name": "L0123", "arch": {"layers": [0, 1, 2, 3]}}],
            "goals": [{"batch": 32, "drop_top_nearest_slower": ["L01", 1.0, 1.0]},
                      {"batch": 1, "drop_top_nearest_slower": ["L0123", 1.0, 1.0]}]}
    # the study report now at results/nas_synthetic.json is not read
    (tmp_path / "nas_synthetic.json").write_text(json.dumps(demo))
    with pytest.raises(SystemExit, match="--arch-file"):
        _searched_arch(_args(tmp_path))
    (tmp_path / "nas_synthetic_demo.json").write_text(json.dumps(demo))
    arch, depth, source = _searched_arch(_args(tmp_path))
    assert arch == ARCH and depth == 4 and source.endswith("nas_synthetic_demo.json")


def test_explicit_arch_wins_and_a_file_without_arch_is_refused_by_name(tmp_path):
    assert _searched_arch(_args(tmp_path, arch=json.dumps(ARCH)))[0] == ARCH
    good, bad = tmp_path / "searched_arch.json", tmp_path / "other.json"
    good.write_text(json.dumps({"arch": ARCH, "front": []}))
    bad.write_text(json.dumps({"front": []}))
    assert _searched_arch(_args(tmp_path, arch_file=str(good)))[0] == ARCH
    with pytest.raises(SystemExit) as err:
        _searched_arch(_args(tmp_path, arch_file=str(bad)))
    assert str(bad) in str(err.value) and "'arch'" in str(err.value) and "nas_synthetic.py" not in str(err.value)


def test_no_architecture_error_names_the_flags_not_the_removed_script(tmp_path):
    with pytest.raises(SystemExit) as err:
        _searched_arch(_args(tmp_path))
    msg = str(err.value)
    assert "--arch-file" in msg and "--arch " in msg and "nas_synthetic_demo.json" in msg
    assert "benchmarks/nas_synthetic.py" not in msg and "\n" not in msg
