"""benchmarks/gpu_goals.py and the harness's timers: where the timers synchronise (a per-step synchronisation
would bias the recipe side against the plain loop on CUDA), the goal verdicts on known inputs, and the report of a
tiny CPU rehearsal (tiny CIFAR files in the real format). No timing is asserted."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import gpu_goals as gg
from benchmarks import harness
from tests import fakedata


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(callbacks, **trainer_kwargs) -> None:
    loader = DataLoader(TensorDataset(torch.randn(10, 2)), batch_size=2)  # 5 batches an epoch
    trainer = harness.quiet_trainer(callbacks=callbacks, accelerator="cpu", devices=1, **trainer_kwargs)
    trainer.fit(_Tiny(), train_dataloaders=loader)


@pytest.fixture
def syncs(monkeypatch):
    calls: list[object] = []
    monkeypatch.setattr(harness, "synchronize", lambda device: calls.append(device))
    return calls


@pytest.mark.parametrize("limits", [{"max_steps": 8, "max_epochs": -1}, {"max_epochs": 2}], ids=["steps", "epochs"])
def test_step_timer_synchronises_at_the_first_timed_step_and_the_last_only(syncs, limits):
    timer = harness.step_timer(3)
    _fit([timer], **limits)
    assert timer.steps == (8 if "max_steps" in limits else 10) - 3
    assert len(syncs) == 2 and timer.synced_end and timer.seconds >= 0


def test_step_timer_synchronises_when_a_fit_stops_early(syncs):
    timer = harness.step_timer(1)
    _fit([timer, _StopAt(4)], max_epochs=10)
    assert timer.steps == 3 and timer.synced_end and len(syncs) == 2


def test_epoch_timer_times_every_epoch_between_synchronisations(syncs):
    timer = harness.epoch_timer()
    _fit([timer], max_epochs=3, limit_train_batches=4)
    assert [e["batches"] for e in timer.epochs] == [4, 4, 4]
    assert len(syncs) == 6 and all(e["seconds"] >= 0 for e in timer.epochs)


def _report(device="cuda", loop=0.95, pipe=3.5, steady=4.0, full=True, prec=1.6, batch=128):
    return {"device": device,
            "loop": [{"mode": "bf16_cl", "batch": batch, "ratio": {"median": 2.0}},
                     {"mode": "fp32", "batch": batch, "ratio": {"median": loop}}],
            "pipeline": {"batch": batch, "ratio": {"median": pipe}},
            "epoch": [{"mode": "fp32", "batch": batch, "full": full, "steady_s": steady + 3},
                      {"mode": "bf16_cl", "batch": batch, "full": full, "steady_s": steady},
                      {"mode": "bf16_cl_compile", "error": "failed"}],
            "precision": {"batch": 1024, "ratio": {"median": prec}}}


def test_goals_on_known_inputs():
    g = gg.judge(_report())
    assert {k: v["met"] for k, v in g.items()} == {"loop": True, "pipeline": True, "epoch": True, "precision": True}
    assert g["loop"]["value"] == 0.95 and g["epoch"]["mode"] == "bf16_cl" and g["epoch"]["value"] == 4.0
    g = gg.judge(_report(loop=0.85, pipe=2.9, steady=5.0, prec=1.4))
    assert {k: v["met"] for k, v in g.items()} == {"loop": False, "pipeline": False, "epoch": False,
                                                   "precision": False}
    assert gg.judge(_report(full=False))["epoch"]["met"] is False  # a part of an epoch is not the goal's epoch
    assert gg.judge(_report(batch=8))["loop"]["met"] is False  # nor another batch size
    cpu = gg.judge(_report(device="cpu"))
    assert all(v["met"] is None and "rehearsal" in v["why"] for v in cpu.values())
    empty = gg.judge({"device": "cuda", "loop": [], "pipeline": None, "epoch": [], "precision": None})
    assert all(v["met"] is False and v["value"] is None for v in empty.values())


def test_bad_arguments_are_one_paragraph():
    with pytest.raises(gg.GoalsError, match="--epoch-batches must be >= 1"):
        gg.parse(["--epoch-batches", "0"])
    with pytest.raises(gg.GoalsError, match="--rounds must be >= 1"):
        gg.parse(["--rounds", "0"])


def test_tiny_rehearsal_writes_every_part_of_the_report(tmp_path):
    fakedata.write_cifar10(tmp_path / "data" / "cifar10", n_train=16, n_test=4)
    out = tmp_path / "out"
    report = gg.main(["--only", "pipeline", "epoch", "precision", "--batch-size", "4", "--epoch-batches", "2", "--steps", "1", "--warmup", "1", "--rounds", "1",
                      "--workers", "0", "--data-root", str(tmp_path / "data"), "--random-root",
                      str(tmp_path / "random"), "--out-dir", str(out), "--extra=--trainer.callbacks=[]"])
    assert report["data"] == "real" and report["loop"] == []  # the loop rows are throughput.measure's (tested there)
    pipe = report["pipeline"]
    assert "error" not in pipe, pipe
    assert pipe["sides"] == ["device_resident", "workers"] and len(pipe["per_round"]) == 1
    r = pipe["per_round"][0]
    assert pipe["ratio"]["median"] == pytest.approx(r["device_resident"] / r["workers"])
    (epoch,) = report["epoch"]
    assert "error" not in epoch, epoch
    assert epoch["mode"] == "fp32" and [e["batches"] for e in epoch["epochs"]] == [2, 2]
    assert epoch["train_images"] == 16 and epoch["full"] is False and epoch["device_resident"] is False
    prec = report["precision"]
    assert "error" not in prec, prec
    assert prec["sides"] == list(gg.PRECISION_MODES) and prec["batch"] == 4
    assert all(g["met"] is None for g in report["goals"].values())
    saved = json.loads((out / "gpu_goals_cpu.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.gpu_goals --only pipeline epoch precision")
    md = (out / "gpu_goals_cpu.md").read_text()
    assert "A CPU rehearsal" in md and "| pipeline |" in md and "| fp32 | 4 | no | " in md and "Machine:" in md
