"""The study-format features that ported studies need beyond fit -> test chains: evaluation-only stages
(``fit: false``), ``validate`` steps, metrics on a subset of a stage's seeds, derived metrics (``expr``) and a
report hook; with their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.spec import StudyError, load_study
from tests.studies.tiny import metrics, studies, tiny_study

pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def _features(d: dict) -> None:
    d["seeds"] = [0]
    d["stages"]["first"]["seeds"] = [0, 1]
    d["stages"]["first"]["validate"] = True
    # evaluate the first stage's weights in batches of 16 (the same 64 images): no training, only validate, test
    d["stages"]["second"] = {"recipe": "tests/studies/tiny_digits.yaml", "init_from": "first", "fit": False,
                             "validate": True, "test": True, "report": True, "export": True, "budget_min": 5,
                             "overrides": {"data.init_args.batch_size": 16, "trainer.limit_val_batches": 4,
                                           "trainer.limit_test_batches": 4}}
    d["metrics"] = {
        "first_val": {"stage": "first", "file": "validate", "key": "val/acc1", "scale": 100},
        "first_acc": {"stage": "first", "key": "test/acc1", "scale": 100, "seeds": [0]},
        "second_acc": {"stage": "second", "key": "test/acc1", "scale": 100},
        "second_val": {"stage": "second", "file": "validate", "key": "val/acc1", "scale": 100},
        "twice": {"expr": "2 * same + 1"},  # reads a derived metric listed after it
        "same": {"expr": "second_acc - first_acc", "label": "evaluation stage minus the fit's own test"},
        "ratio": {"expr": "(second_acc + 1) / (first_acc + 1)"},
    }
    d["claims"] = {"eval_equal": {"a": "second_acc", "b": "first_acc", "test": "non_inferior", "margin": 0.001,
                                  "descriptive": True}}
    d["report_hook"] = "tests.studies.test_study_features:hook"


def hook(study, report: dict, study_dir: Path, results_dir: Path) -> str:
    """A report hook for the test: reads a run directory, adds an entry and a markdown section."""
    run = study_dir / "second" / "seed0" / "metrics" / "test.json"
    report["extra"]["hook_saw"] = json.loads(run.read_text())["metrics"]["test/acc1"]
    return "## From the hook\n\nhello"


def test_eval_stage_seed_subset_derived_metric_and_hook(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study = tiny_study(tmp_path / "features.yaml", _features)
    s = load_study(study)
    assert s.steps("first") == ["fit", "validate", "test"]
    assert s.steps("second") == ["validate", "test", "report", "export"]
    runs = tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    first, second = runs / "tiny/first/seed0", runs / "tiny/second/seed0"
    assert (runs / "tiny/first/seed1/metrics/test.json").is_file()
    # the evaluation stage trained nothing: no checkpoint of its own, and it evaluates the first stage's weights,
    # so its accuracy on the same 64 images equals the first stage's
    assert not (second / "checkpoints").exists() and not (second / "metrics/fit.json").exists()
    assert metrics(second, "test")["test/acc1"] == pytest.approx(metrics(first, "test")["test/acc1"], abs=1e-6)
    assert metrics(second, "validate")["val/acc1"] == pytest.approx(metrics(first, "validate")["val/acc1"], abs=1e-6)
    assert "identity" in json.loads((second / "study_run.json").read_text())
    # report counts the checkpoint's net; export writes a checked ONNX file, its size and onnxruntime latency
    exported = metrics(second, "export")
    assert (second / "export/model.onnx").stat().st_size == exported["stored_bytes"] > 0
    assert exported["max_rel_error"] <= exported["tolerance"] and exported["latency_b1_s"] > 0
    assert json.loads((second / "metrics/report.json").read_text())["macs"] > 0

    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "res", "--no-wandb") == 0
    r = json.loads((tmp_path / "res/tiny.json").read_text())
    assert set(r["metrics"]["first_val"]["points"][""]["per_seed"]) == {"0", "1"}
    assert set(r["metrics"]["first_acc"]["points"][""]["per_seed"]) == {"0"}  # the metric's seed subset
    assert r["metrics"]["same"]["points"][""]["per_seed"]["0"] == pytest.approx(0.0, abs=1e-4)
    assert r["metrics"]["twice"]["points"][""]["per_seed"]["0"] == pytest.approx(1.0, abs=1e-3)
    acc = r["metrics"]["first_acc"]["points"][""]["per_seed"]["0"]
    assert r["metrics"]["ratio"]["points"][""]["per_seed"]["0"] == pytest.approx(1.0, abs=1e-6) and acc > 0
    assert r["extra"]["hook_saw"] == pytest.approx(acc / 100, abs=1e-6)
    assert "## From the hook" in (tmp_path / "res/tiny.md").read_text()
    assert r["claims"]["eval_equal"]["points"][""]["status"] == "descriptive"  # 1 seed: numbers, no verdict

    # a second run does nothing; a changed override of the evaluation stage is refused, naming the key
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0

    def changed(d: dict) -> None:
        _features(d)
        d["stages"]["second"]["overrides"]["trainer.limit_test_batches"] = 3

    capsys.readouterr()
    assert studies("run", tiny_study(tmp_path / "features.yaml", changed), "--runs-root", runs,
                   "--launcher", "debug") == 1
    err = capsys.readouterr().err
    assert "second/seed0" in err and "limit_test_batches" in err and "started" not in err


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["stages"]["second"].update(fit=False, test=False), "validate: true nor test: true"),
    (lambda d: d["stages"]["first"].update(fit=False, test=True), "name that stage with init_from"),
    (lambda d: d["metrics"].update(x={"expr": "first_acc - secnd_acc"}), "Did you mean 'second_acc'"),
    (lambda d: d["metrics"].update(x={"expr": "__import__('os')"}), "not allowed|calls a function"),
    (lambda d: d["metrics"].update(x={"expr": "y + 1"}, y={"expr": "x - 1"}), "cycle"),
    (lambda d: d["metrics"]["first_acc"].update(seeds=[0, 7]), "does not run"),
    (lambda d: d.update(report_hook="tests.studies.test_study_features:nope"), "report_hook"),
    (lambda d: d.update(report_hook="no_such_module_x:f"), "cannot be imported"),
    (lambda d: d["claims"]["second_not_much_worse"].update(min_seeds=1), "min_seeds"),
])
def test_feature_errors_name_the_key(tmp_path: Path, edit, match: str) -> None:
    with pytest.raises(StudyError, match=match) as e:
        load_study(tiny_study(tmp_path / "bad.yaml", edit))
    assert str(tmp_path / "bad.yaml") in str(e.value)


def test_paired_claim_on_a_seed_subset(tmp_path: Path) -> None:
    """A paired claim between stages with different seed lists is refused, unless the metric picks the common
    seeds."""
    def differ(d: dict) -> None:
        d["stages"]["first"]["seeds"] = [0, 1, 2]

    with pytest.raises(StudyError, match="seeds"):
        load_study(tiny_study(tmp_path / "a.yaml", differ))

    def subset(d: dict) -> None:
        differ(d)
        d["metrics"]["first_acc"]["seeds"] = [0, 1]

    s = load_study(tiny_study(tmp_path / "b.yaml", subset))
    assert s.metric_seeds("first_acc") == (0, 1)


def test_export_latency_false_exports_and_checks_without_timing(tmp_path: Path) -> None:
    from studies.runner import plan
    from studies.spec import StudyError

    def no_timing(d: dict) -> None:
        d["stages"]["first"]["export"] = True
        d["stages"]["first"]["export_latency"] = False
        d["stages"]["second"]["export"] = True

    study = load_study(tiny_study(tmp_path / "s.yaml", no_timing))
    args = {p.run.key: p.args["export"] for p in plan(study, tmp_path / "runs")}
    first = args["first/seed0"]
    assert first[first.index("--latency") + 1] == "false" and "--out" in first
    second = args["second/seed0"]
    assert second[second.index("--latency") + 1] == "true"  # the default: exports are timed

    def orphan(d: dict) -> None:
        d["stages"]["first"]["export_latency"] = False

    with pytest.raises(StudyError, match=r"first.export_latency is set but .*export is not true"):
        load_study(tiny_study(tmp_path / "bad.yaml", orphan))


def test_metrics_table_keeps_three_significant_digits_of_small_values() -> None:
    """A row whose values are all below 1 (an MSE, a training loss at a minimum) is printed with enough decimals
    for 3 significant digits of its largest value; rows with values of 1 or more keep 2 decimals."""
    from studies.report import _digits, _fmt

    small = [0.0025, 0.00394, 0.0031]
    d = _digits(small)
    assert [_fmt(x, d) for x in small] == ["0.00250", "0.00394", "0.00310"]
    mse = [0.1676, 0.0108, None]
    assert [_fmt(x, _digits(mse)) for x in mse] == ["0.168", "0.011", "-"]
    assert _digits([92.18, 0.5]) == 2 and _digits([0.0, None]) == 2
