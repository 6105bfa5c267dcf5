"""studies/composed_glyphs.yaml at a few steps: the composed 8-bit student (pruned + 8-bit weights + KD in one
recipe) chained to its teacher, then reported and exported.

Defining properties: the pruning and quantization callbacks act on the student only (the teacher inside the
distillation module is bit-identical to the teacher run's checkpoint after the composed fit, at its full widths);
the student is pruned (narrower first convs, fewer MACs in report.json than the teacher's); its exported ONNX file
stores the student's quantized weights as int8 initializers (and none of the teacher's) and passed the export's
check against eager PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.studies.tiny import REPO, repo_study, studies

TINY = {"data.init_args.train_size": 64, "data.init_args.test_size": 64, "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 2, "trainer.logger": False}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def _tiny_study(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO / "studies/composed_glyphs.yaml").read_text())
    data["seeds"] = [0]
    for stage in data["stages"].values():
        stage["overrides"] = {**stage.get("overrides", {}), **TINY}
        stage["test"] = False  # the properties below need no test accuracy
    data["stages"]["teacher"]["export"] = False  # its MACs (report) are enough here
    for stage in data["stages"].values():
        if stage.get("export"):
            stage["export_latency"] = False  # the export and its check, without timing onnxruntime
    keep = {"teacher_macs", "composed_q8_macs", "composed_q8_bytes", "composed_q8_err", "mac_gain"}
    data["metrics"] = {k: v for k, v in data["metrics"].items() if k in keep}
    data["claims"], data["plots"] = {}, []
    study = tmp_path / "composed_glyphs.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    return study


def _state(run: Path) -> dict:
    from main import load_checkpoint

    return load_checkpoint(run / "checkpoints/last.ckpt")


def test_composed_student_is_pruned_quantized_and_exported_and_the_teacher_untouched(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    study, runs = _tiny_study(tmp_path), tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug", "--only", "composed_q8") == 0
    root = runs / "composed_glyphs"
    teacher_run, student_run = root / "teacher" / "seed0", root / "composed_q8" / "seed0"

    teacher = {k[len("net."):]: v for k, v in _state(teacher_run)["state_dict"].items() if k.startswith("net.")}
    ckpt = _state(student_run)
    inner = {k[len("teacher."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("teacher.")}
    student = {k[len("student."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("student.")}
    # the teacher inside the composed module: same keys, same shapes (widths), bit-identical values
    assert inner.keys() == teacher.keys()
    assert all(torch.equal(inner[k], teacher[k]) for k in teacher)
    # the student: pruned (layer1's first convs keep floor(16 * 0.4) = 6 filters, the residual width stays 16)
    assert student["layer1.0.conv1.weight"].shape[0] == 6 < teacher["layer1.0.conv1.weight"].shape[0] == 16
    assert student["layer1.0.conv2.weight"].shape == (16, 6, 3, 3)
    assert ckpt["l1_filter_pruning"]["target"] == "student"
    # the module alone (no pruning callback) loads the composed checkpoint: the student narrowed, the teacher whole
    from modules.disk import DiSK

    loaded = DiSK.load_from_checkpoint(student_run / "checkpoints/last.ckpt", weights_only=True)
    assert loaded.student.layer1[0].conv1.out_channels == 6 and loaded.teacher.layer1[0].conv1.out_channels == 16
    assert torch.equal(loaded.student.layer1[0].conv1.weight, student["layer1.0.conv1.weight"])
    report_s = json.loads((student_run / "metrics/report.json").read_text())
    report_t = json.loads((teacher_run / "metrics/report.json").read_text())
    assert report_s["macs"] < 0.7 * report_t["macs"]

    export = json.loads((student_run / "metrics/export.json").read_text())["metrics"]
    assert export["max_rel_error"] <= export["tolerance"]
    model = onnx.load(str(student_run / "export" / "model.onnx"))
    # the student's quantized weights as int8 codes (the export refuses weights off their grid); the 0-d int8
    # initializers are DequantizeLinear's zero points
    codes = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer
             if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 0]
    layers = [v for k, v in student.items() if k.endswith("weight") and v.dim() in (2, 4)]
    assert len(codes) == len(layers) == export["int8_weights"]
    assert sorted(c.size for c in codes) == sorted(v.numel() for v in layers)
    names = {i.name for i in model.graph.initializer}
    assert not any("teacher" in n for n in names)  # the frozen teacher is not in the deployed file


@pytest.mark.slow
def test_every_stage_runs_and_the_report_decides_the_claims(tmp_path: Path) -> None:
    """Every stage at a few steps, with test, report and export, then `studies report`: each metric read, the
    derived ratios computed, the claims decided on the one seed (pending: fewer than 5 seeds)."""
    data = repo_study("composed_glyphs", [0], TINY)
    study, runs, results = tmp_path / "composed_glyphs.yaml", tmp_path / "runs", tmp_path / "results"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", results, "--no-wandb") == 0
    report = json.loads((results / "composed_glyphs.json").read_text())
    assert len(report["runs_finished"]) == report["runs_total"] == len(data["stages"])
    root = runs / "composed_glyphs"
    widths = {s: _state(root / s / "seed0")["state_dict"] for s in ("pruned", "q8", "composed_bc")}
    assert widths["pruned"]["net.layer1.0.conv1.weight"].shape[0] == 6  # pruned alone: the ImageClassifier's net
    assert widths["q8"]["net.layer1.0.conv1.weight"].shape[0] == 16  # quantized alone: not pruned
    assert widths["composed_bc"]["student.layer1.0.conv1.weight"].shape[0] == 6
    bc = json.loads((root / "composed_bc" / "seed0" / "metrics/export.json").read_text())
    assert bc["metrics"]["int8_weights"] > 0 and (root / "composed_bc/seed0/export/model.onnx.packed.pt").is_file()
