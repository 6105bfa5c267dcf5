"""benchmarks/hardness_glyphs.py: a tiny end-to-end run writes every quantity the claims need; the claims are
decided by benchmarks.seeds.compare with the margin fixed in the script; partial runs merge."""

from __future__ import annotations

import json

import pytest

from benchmarks import hardness_glyphs as hg
from benchmarks.seeds import compare


# one seed, 5 classes, 1-2 epochs: a DiSK-only run in seconds
TINY_DISK = ["--seeds", "0", "--classes", "5", "--train_size", "120", "--test_size", "100", "--epochs", "2",
             "--teacher_epochs", "1", "--teacher", "resnet10_xxxs", "--disk_warmup", "1", "--topk", "2",
             "--disk_student_epochs", "1"]


def _earlier_run(tmp_path):
    """An earlier study's JSON (configuration B's shape) for ``--pair_with``."""
    earlier = tmp_path / "b.json"
    earlier.write_text(json.dumps({"runs": [{"seed": 0, "ce_acc": 40.0, "kd_acc": 41.0, "teacher_acc": 60.0,
                                             "disk_acc": 30.0}]}))
    return earlier


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
    tiny, earlier = TINY_DISK, _earlier_run(tmp_path)
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


@pytest.mark.parametrize("ft_epochs", [None, 3])
def test_disk_init_ce_starts_the_ft_students_from_the_ce_student(tmp_path, monkeypatch, ft_epochs):
    """``--disk_init scratch ce``: the ``*_ft`` DiSK students and the equal-compute controls start from the seed's
    trained CE student (the released runner's --model_ckpt); the scratch DiSK students from the shared init.
    ``--ft_epochs`` sets the epochs of every student started from the CE student, and of no other."""
    import torch

    trained, starts, epochs = [], {}, []
    real_ce, real_disk = hg.train_ce, hg.train_disk

    def spy_ce(net, *a, **k):
        epochs.append(("ce", k.get("epochs")))
        out = real_ce(net, *a, **k)
        trained.append({n: v.clone() for n, v in out.state_dict().items()})
        return out

    def spy_disk(seed, args, mode, key, student, *a, **k):
        starts[key] = student().state_dict()
        epochs.append((key, k.get("epochs")))
        return real_disk(seed, args, mode, key, student, *a, **k)

    monkeypatch.setattr(hg, "train_ce", spy_ce)
    monkeypatch.setattr(hg, "train_disk", spy_disk)
    tiny, earlier = TINY_DISK, _earlier_run(tmp_path)
    data = hg.main(["--out", str(tmp_path / "d.json"), *tiny, "--arms", "disk", "--disk_init", "scratch", "ce",
                    "--disk_budget", "scheduled", "dual_ascent", "--disk_dual_lr", "20", "--pair_with", str(earlier),
                    *(["--ft_epochs", str(ft_epochs)] if ft_epochs else [])])
    run = data["runs"][0]
    base = int(TINY_DISK[TINY_DISK.index("--epochs") + 1])
    ft = ft_epochs or base
    # train_ce calls: teacher (its own epochs), CE student (default), CE continued and KD from CE (ft); DiSK
    assert [e for _, e in epochs[2:4]] == [ft, ft]
    assert dict(epochs[4:]) == {"disk": base, "disk_da": base, "disk_ft": ft, "disk_da_ft": ft}
    student_epochs = {k: sum(e["phase"] == "student" for e in run[f"{k}_trace"]) for k in ("disk", "disk_ft")}
    assert student_epochs == {"disk": base, "disk_ft": ft}
    for k in ("ce_acc", "ce_ft_acc", "kd_ft_acc", "disk_acc", "disk_da_acc", "disk_ft_acc", "disk_da_ft_acc"):
        assert 0.0 <= run[k] <= 100.0
    assert run["ce_acc_b"] == 40.0 and run["kd_acc"] == 41.0 and run["disk_acc_b"] == 30.0
    ce = trained[1]  # train_ce calls: teacher, CE student, CE continued, KD from the CE student
    assert len(trained) == 4
    for key in ("disk_ft", "disk_da_ft"):
        assert all(torch.equal(starts[key][n], ce[n]) for n in ce)
    assert not all(torch.equal(starts["disk"][n], ce[n]) for n in ce if starts["disk"][n].is_floating_point())
    claims = {(c["a"], c["b"]) for c in data["summary"]["claims"]}
    assert {(a, b) for a, b, _ in hg.CLAIMS_DISK_FT} <= claims


def test_kd_arms_train_teacher_ce_and_kd_only(tmp_path):
    """``--arms kd`` (pilots that pick a setting where KD > CE without seeing DiSK): no DiSK, OSP or hybrid key,
    and the KD > CE claim is still evaluated once 5 seeds exist (here 1 seed: listed without a verdict)."""
    data = hg.main(["--out", str(tmp_path / "k.json"), *TINY_DISK, "--arms", "kd"])
    run = data["runs"][0]
    assert {"teacher_acc", "ce_acc", "kd_acc"} <= set(run)
    assert not [k for k in run if k.startswith(("disk", "osp", "hybrid", "sr_"))]
    assert [(c["a"], c["b"]) for c in data["summary"]["claims"]] == [("kd_acc", "ce_acc")]


@pytest.mark.parametrize("arms", ["sr", "osp"])
def test_sr_and_osp_arms_train_the_teacher_and_only_what_they_name(tmp_path, arms):
    """``--arms sr`` (pilots that pick an OSP setting from softmax response alone) never trains OSP; ``--arms osp``
    adds OSP and evaluates only the OSP > softmax-response claim. Neither trains a student or a router."""
    data = hg.main(["--out", str(tmp_path / f"{arms}.json"), *TINY_DISK, "--arms", arms])
    run = data["runs"][0]
    assert {"teacher_acc", "sr_cov@err2"} <= set(run)
    assert not [k for k in run if k.startswith(("disk", "kd", "ce", "hybrid", "entropy"))]
    osp_keys = {k for k in run if k.startswith("osp")}
    assert osp_keys == (set() if arms == "sr" else {"osp_acc", "osp_cov@err2", "osp_lambda_mean", "osp_eps_mean"})
    claims = [(c["a"], c["b"]) for c in data["summary"]["claims"]]
    assert claims == ([] if arms == "sr" else [("osp_cov@err2", "sr_cov@err2")])


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_osp_forms_train_one_net_each_and_the_multiplier_steps_at_its_own_rate(tmp_path, scale):
    """``--osp_lagrangian code paper`` trains one OSP net per form (keys ``osp_code_*`` and ``osp_*``) and evaluates
    each against softmax response; ``--osp_multiplier_lr_scale 0`` freezes the multipliers at their init mu - 0.5
    (the slacks still move), scale 1 moves them."""
    data = hg.main(["--out", str(tmp_path / "g.json"), *TINY_DISK, "--arms", "osp", "--mu", "1.67",
                    "--osp_lagrangian", "code", "paper", "--osp_multiplier_lr_scale", str(scale)])
    run = data["runs"][0]
    for key in ("osp", "osp_code"):
        assert {f"{key}_acc", f"{key}_cov@err2"} <= set(run)
        assert run[f"{key}_eps_mean"] < 0.5  # the slack's gradient is mu - relu(lambda) = 0.5 > 0 at init
        if scale == 0.0:
            assert run[f"{key}_lambda_mean"] == pytest.approx(1.17, abs=1e-6)
        else:
            assert abs(run[f"{key}_lambda_mean"] - 1.17) > 1e-4
    claims = {(c["a"], c["b"]) for c in data["summary"]["claims"]}
    assert claims == {("osp_cov@err2", "sr_cov@err2"), ("osp_code_cov@err2", "sr_cov@err2")}


def test_rerun_with_every_seed_done_trains_nothing_and_refreshes_the_notes(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("before the runs")
    args = ["--out", str(tmp_path / "r.json"), *TINY_DISK, "--arms", "sr", "--notes", str(notes)]
    first = hg.main(args)
    notes.write_text("after the runs")
    second = hg.main(args)
    assert second["runs"] == first["runs"]  # the finished seed is kept, not retrained
    assert "after the runs" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == "after the runs"
