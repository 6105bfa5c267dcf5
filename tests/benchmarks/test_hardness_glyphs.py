"""benchmarks/hardness_glyphs.py: a tiny end-to-end run writes every quantity the claims need; the claims are
decided by benchmarks.seeds.compare with the margin fixed in the script; partial runs merge."""

from __future__ import annotations

import json

import pytest

from benchmarks import hardness_glyphs as hg
from benchmarks.seeds import compare


def test_tiny_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "h.json"
    data = hg.main(["--out", str(out), "--seeds", "0", "--classes", "5", "--train_size", "120", "--test_size", "100",
                    "--epochs", "1", "--teacher_epochs", "1", "--router_epochs", "1", "--adapt_epochs", "1",
                    "--teacher", "resnet10_xxxs", "--disk_warmup", "1", "--topk", "2"])
    run = data["runs"][0]
    for a, b, _ in hg.CLAIMS:
        assert 0.0 <= run[a] <= 100.0 and 0.0 <= run[b] <= 100.0
    assert "hybrid_acc@cov90" in run and "entropy_acc@cov50" in run
    assert json.loads(out.read_text())["runs"][0]["seed"] == 0
    assert "Claims" in out.with_suffix(".md").read_text()


def test_claims_use_the_fixed_margin_and_merge(tmp_path):
    keys = {k for a, b, _ in hg.CLAIMS for k in (a, b)}
    runs = [{"seed": s, **{k: 50.0 + (s % 3) for k in keys}} for s in range(5)]
    for r in runs:
        r["osp_cov@err2"] += 2.0 + 0.1 * r["seed"]  # OSP clearly above SR
    summary = hg.summarise(runs)
    by_a = {c["a"]: c for c in summary["claims"]}
    ref = compare([r["osp_cov@err2"] for r in runs], [r["sr_cov@err2"] for r in runs], margin=hg.MARGIN)
    assert by_a["osp_cov@err2"]["met"] is True and by_a["osp_cov@err2"]["low"] == pytest.approx(ref.low)
    assert by_a["disk_acc"]["met"] is False  # equal values: not met
    parts = []
    for i, chunk in enumerate((runs[:2], runs[2:])):
        p = tmp_path / f"part{i}.json"
        p.write_text(json.dumps({"command": "python -m benchmarks.hardness_glyphs --out x", "machine": "m",
                                 "settings": {}, "runs": chunk, "summary": hg.summarise(chunk)}))
        parts.append(str(p))
    merged = hg.main(["--out", str(tmp_path / "all.json"), "--merge", *parts])
    assert [r["seed"] for r in merged["runs"]] == list(range(5))
    assert merged["summary"]["claims"][0]["met"] is True


def test_disk_only_run_with_both_budget_modes_pairs_with_an_earlier_run(tmp_path):
    tiny = ["--seeds", "0", "--classes", "5", "--train_size", "120", "--test_size", "100", "--epochs", "2",
            "--teacher_epochs", "1", "--teacher", "resnet10_xxxs", "--disk_warmup", "1", "--topk", "2",
            "--disk_student_epochs", "1"]
    earlier = tmp_path / "b.json"
    earlier.write_text(json.dumps({"runs": [{"seed": 0, "ce_acc": 40.0, "kd_acc": 41.0, "teacher_acc": 60.0,
                                             "disk_acc": 30.0}]}))
    data = hg.main(["--out", str(tmp_path / "c.json"), *tiny, "--arms", "disk",
                    "--disk_budget", "scheduled", "dual_ascent", "--pair_with", str(earlier)])
    run = data["runs"][0]
    assert "osp_acc" not in run and "hybrid_acc@cov70" not in run  # only the teacher and the DiSK students
    assert run["ce_acc"] == 40.0 and run["kd_acc"] == 41.0 and run["disk_acc_b"] == 30.0
    assert run["teacher_acc_b"] == 60.0 and 0.0 <= run["teacher_acc"] <= 100.0
    sched, dual = run["disk_trace"], run["disk_da_trace"]
    assert [e["phase"] for e in sched] == ["guide", "student", "guide", "student"]
    # scheduled: lambda follows the cosine; dual ascent: lambda moves only in guide epochs, by lr (B - delta)
    assert all(e["lambda_end"] == e["lambda"] for e in sched)
    assert all(e["lambda_end"] == e["lambda"] for e in dual if e["phase"] == "student")
    assert dual[0]["lambda"] == 1.0 and dual[0]["lambda_end"] != 1.0
    assert run["disk_da_lambda_last"] == dual[-2]["lambda_end"]
