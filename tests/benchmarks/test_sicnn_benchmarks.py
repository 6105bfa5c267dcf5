"""Smoke tests of benchmarks/sicnn_glyphs.py; the SI latency pairs are tested in test_deploy_latency.py."""

from __future__ import annotations

from benchmarks.sicnn_glyphs import main as sicnn_main


def test_sicnn_study_smoke(tmp_path) -> None:
    out = tmp_path / "si.json"
    data = sicnn_main(["--seeds", "0", "--epochs", "1", "--train-size", "128", "--test-size", "64", "--rounds", "0",
                       "--num-classes", "10", "--out", str(out)])
    models = data["models"]
    assert models["plain"]["width_mult"] == 1.0 and models["si"]["width_mult"] == 1.0
    assert models["si"]["macs_all"] < models["plain"]["macs_all"]
    assert models["si"]["elementwise_macs"] > 0 == models["plain"]["elementwise_macs"]
    # the same-MAC plain net is the closest of the searched widths
    assert abs(models["plain_same_macs"]["macs_all"] / models["si"]["macs_all"] - 1) < 0.05
    assert [r["model"] for r in data["runs"]] == ["plain", "si", "plain_same_macs"]
    assert "| si | 1.00 |" in out.with_suffix(".md").read_text()
