"""benchmarks/throughput.py: ratio arithmetic, the goal, the Table 1 projection on known inputs, and the report of a
tiny run (1 timed step, 1 round, batch 4, tiny CIFAR files in the real format). No timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from benchmarks import throughput as tp
from tests import fakedata


def test_ratio_is_recipe_over_plain_per_round_then_summarised():
    rounds = [{"recipe_images_per_s": 90.0, "plain_images_per_s": 100.0},
              {"recipe_images_per_s": 150.0, "plain_images_per_s": 150.0},
              {"recipe_images_per_s": 240.0, "plain_images_per_s": 200.0}]
    s = tp.ratio_summary(rounds)
    assert s["ratio"] == {"median": pytest.approx(1.0), "min": pytest.approx(0.9), "max": pytest.approx(1.2)}
    assert s["recipe_images_per_s"] == 150.0 and s["plain_images_per_s"] == 150.0
    with pytest.raises(tp.ThroughputError, match="--rounds"):
        tp.ratio_summary([])


def _row(ratio, batch=128, device="cpu", case=tp.GOAL_CASE, mode="fp32"):
    return {"case": case, "mode": mode, "device": device, "batch": batch, "ratio": {"median": ratio},
            "recipe_images_per_s": 100.0 * ratio}


def test_goal_is_judged_only_on_its_own_case():
    assert tp.goal([_row(0.96)])["met"] is True
    assert tp.goal([_row(0.94)])["met"] is False
    assert tp.goal([_row(0.99, batch=4)]) is None  # another batch size is not the goal's setting
    assert tp.goal([_row(0.99, device="cuda")]) is None
    assert tp.goal([_row(0.99, mode="bf16")]) is None


def test_table1_projection_arithmetic():
    def epochs(recipe):
        return yaml.safe_load((tp.REPO / "recipes" / f"{recipe}.yaml").read_text())["trainer"]["max_epochs"]

    rows = [{"case": "baseline_resnet56_cifar10", "mode": "fp32", "recipe_images_per_s": 500.0},
            {"case": "baseline_resnet56_cifar10", "mode": "bf16", "recipe_images_per_s": 1000.0},  # the best counts
            {"case": "prune_resnet56_cifar10_b", "mode": "fp32", "recipe_images_per_s": 2000.0},
            {"case": "prune_resnet56_cifar10_a", "mode": "fp32", "error": "failed"}]
    out = {p["model"]: p for p in tp.project_table1(rows)}
    assert set(out) == set(tp.TABLE1)
    b = out["prune_resnet56_cifar10_b"]
    assert b["baseline_gpu_h"] == pytest.approx(epochs("baseline_resnet56_cifar10") * 50_000 / 1000 / 3600)
    assert b["retrain_gpu_h"] == pytest.approx(epochs("prune_resnet56_cifar10_b") * 50_000 / 2000 / 3600)
    assert b["total_gpu_h"] == pytest.approx(b["baseline_gpu_h"] + b["retrain_gpu_h"])
    a = out["prune_resnet56_cifar10_a"]
    assert a["retrain_gpu_h"] is None and a["total_gpu_h"] is None  # not measured: never a made-up number


def test_random_data_is_never_written_where_the_real_set_belongs(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(fakedata, "write_cifar10", lambda root, **kw: written.append((root, kw)))
    folder, kind = tp.ensure_data("CIFAR10DataModule", tmp_path / "data", tmp_path / "random", 1)
    assert kind == "random" and folder == tmp_path / "random" / "cifar10"
    assert written == [(folder, {"n_train": 50_000, "n_test": 10_000})]  # the real size
    assert not (tmp_path / "data").exists()
    assert tp.ensure_data("CIFAR10DataModule", tmp_path / "data", tmp_path / "random", 1) == (folder, "random")
    assert len(written) == 1  # written once


def test_bad_recipe_is_one_paragraph():
    with pytest.raises(tp.ThroughputError, match="--recipes: no recipe 'nope'"):
        tp.recipe_config("nope")


def test_tiny_run_writes_the_report(tmp_path):
    fakedata.write_cifar10(tmp_path / "data" / "cifar10", n_train=16, n_test=4)
    out = tmp_path / "out"
    report = tp.main(["--recipes", tp.GOAL_CASE, "--modes", "fp32", "--steps", "1", "--warmup", "1",
                      "--rounds", "1", "--batch-size", "4", "--workers", "0", "--data-root", str(tmp_path / "data"),
                      "--random-root", str(tmp_path / "random"),
                      "--out-dir", str(out), "--extra=--trainer.callbacks=[]"])
    (row,) = report["rows"]
    assert "error" not in row, row
    assert row["case"] == tp.GOAL_CASE and row["mode"] == "fp32" and row["device"] == "cpu" and row["batch"] == 4
    assert row["input_shape"] == [3, 32, 32] and row["datamodule"] == "CIFAR10DataModule" and row["data"] == "real"
    assert len(row["per_round"]) == 1 and row["per_round"][0]["first"] == "plain"
    r = row["per_round"][0]
    assert row["ratio"]["median"] == pytest.approx(r["recipe_images_per_s"] / r["plain_images_per_s"])
    assert report["goal"] is None  # batch 4 is not the goal's batch 128
    saved = json.loads((out / "throughput_cpu.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.throughput --recipes")
    machine = saved["machine"]
    assert machine["logical_cpus"] >= 1 and machine["cpu"] and machine["torch"]
    assert "loadavg_at_start" in machine and "loadavg_at_end" in machine
    md = (out / "throughput_cpu.md").read_text()
    assert f"| {tp.GOAL_CASE} | cpu | real | 4 | 3x32x32 | fp32 |" in md
    assert "not measured in this run" in md and "Table 1" in md and "Command:" in md and "load average" in md


def test_a_recipe_that_trains_channels_last_itself_is_skipped_in_the_nchw_modes(tmp_path):
    args = tp.parse(["--data-root", str(tmp_path / "data"), "--random-root", str(tmp_path / "random")])
    assert tp.uses_channels_last(tp.recipe_config("sicnn_imagenet"))
    with pytest.raises(tp.Skipped, match="sicnn_imagenet trains channels-last itself"):
        tp.measure("sicnn_imagenet", "fp32", args, tmp_path / "data", "cpu")
    assert not (tmp_path / "random").exists()  # skipped before any data is written
    rows = [{"case": "baseline_resnet56_cifar10", "mode": "fp32", "skipped": "why"}]
    assert tp.project_table1(rows)[1]["baseline_gpu_h"] is None


def test_the_plain_loop_builds_the_recipes_optimizer_even_where_its_defaults_hold_more_settings():
    from modules.schedules import TimmRMSpropTF

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))

    class Recipe:
        def configure_optimizers(self):
            return {"optimizer": TimmRMSpropTF(net.parameters(), lr=0.05, weight_decay=1e-4)}

    opt = tp._optimizer_like(Recipe(), net.parameters())
    assert type(opt) is TimmRMSpropTF and opt.defaults["lr"] == 0.05 and opt.defaults["weight_decay"] == 1e-4
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 1e-4]  # the same decay groups (no decay on 1-d)
