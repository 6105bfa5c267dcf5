"""studies/hardness_glyphs.yaml at a few steps per stage.

Default tier: the hybrid chain (teacher -> cloud, CE student -> edge; W&B off and no test step upstream, to keep
it to four main.py calls). The hybrid run routes between exactly the upstream runs' models: its cloud and (before
adaptation) its edge hold the weights of the teacher's and the CE student's last.ckpt; at each budget the router
keeps exactly ceil(c n) test inputs on the edge and sends the rest to the cloud. Slow tier: the hybrid's accuracy
recomputed from its three nets (the edge's on the kept inputs plus the cloud's on the sent ones), and every stage:
the KD and DiSK students distil from the teacher run's weights (frozen), the hybrid adapts the edge and not the
cloud, the OSP run carries its multipliers and slacks, and the report reads every metric the study names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.studies.tiny import REPO, metrics, studies

TEST_SIZE = 100
TINY = {"data.init_args.train_size": 64, "data.init_args.test_size": TEST_SIZE, "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 1}


pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def _tiny_study(tmp_path: Path, hybrid_epochs: int, fast: bool = False) -> Path:
    data = yaml.safe_load((REPO / "studies/hardness_glyphs.yaml").read_text())
    data["seeds"] = [0]
    for stage in data["stages"].values():
        stage["overrides"] = {**stage.get("overrides", {}), **TINY, **({"trainer.logger": False} if fast else {})}
    if fast:  # only the hybrid's test step: its metrics and claim alone
        data["metrics"] = {k: v for k, v in data["metrics"].items() if v["stage"] == "hybrid"}
        data["claims"] = {k: v for k, v in data["claims"].items() if k == "hybrid_beats_entropy"}
        data["plots"] = []
        data["stages"]["teacher"]["test"] = data["stages"]["ce"]["test"] = False
    # the DiSK stage: the warm-up guide epoch and one student epoch
    data["stages"]["disk"]["overrides"]["trainer.max_epochs"] = 2
    data["stages"]["hybrid"]["overrides"]["trainer.max_epochs"] = hybrid_epochs
    if hybrid_epochs > 1:  # router, edge adaptation, router
        data["stages"]["hybrid"]["overrides"].update({"model.init_args.router_warmup": 1,
                                                      "model.init_args.model_epochs": 1,
                                                      "model.init_args.router_epochs": 1})
    study = tmp_path / "hardness_glyphs.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    return study


def _net(run: Path, prefix: str) -> dict[str, torch.Tensor]:
    from main import load_checkpoint

    state = load_checkpoint(run / "checkpoints/last.ckpt")["state_dict"]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hybrid_routes_between_the_chained_teacher_and_ce_student(tmp_path: Path) -> None:
    # hybrid: one router warm-up epoch only (edge and cloud fixed), so both keep the upstream weights
    study, runs = _tiny_study(tmp_path, hybrid_epochs=1, fast=True), tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug", "--only", "hybrid") == 0
    root = runs / "hardness_glyphs"
    hybrid, teacher, ce = (root / s / "seed0" for s in ("hybrid", "teacher", "ce"))
    assert _same(_net(hybrid, "cloud."), _net(teacher, "net."))
    assert _same(_net(hybrid, "edge."), _net(ce, "net."))
    h = metrics(hybrid, "test")
    for c in (50, 70, 90):  # the stated budget holds exactly: ceil(c n) inputs stay on the edge, the rest go up
        assert h[f"test/coverage@cov{c}"] * TEST_SIZE == pytest.approx(math.ceil(c / 100 * TEST_SIZE), abs=1e-3)


def _check_routing(hybrid: Path) -> None:
    """The hybrid's test metrics recomputed from the three nets of its checkpoint on the same test batches: the
    ceil(c n) highest keep scores stay on the edge, the rest go to the cloud."""
    h = metrics(hybrid, "test")
    from datamodules.glyphs import GlyphsDataModule
    from modules.hybrid_router import HybridModel

    init = json.loads((hybrid / "run.json").read_text())["identity"]
    args = {k: v for k, v in init["model"]["init_args"].items()
            if k not in ("optimizer", "router_optimizer", "lr_scheduler", "edge_ckpt", "cloud_ckpt")}
    model = HybridModel(**args, num_classes=init["data"]["init_args"]["num_classes"],
                        input_shape=GlyphsDataModule.input_shape)
    model.load_state_dict(_net(hybrid, ""))
    model.eval()
    dm = GlyphsDataModule(**init["data"]["init_args"])
    dm.setup("test")
    edge_ok, cloud_ok, keep_score = [], [], []
    with torch.no_grad():
        for x, y in zip(dm.test_images.split(64), dm.test_labels.split(64), strict=True):
            edge_logits, keep = model(x)
            edge_ok.append(edge_logits.argmax(1) == y)
            cloud_ok.append(model.cloud(x).argmax(1) == y)
            keep_score.append(keep)
    edge_ok, cloud_ok, keep_score = torch.cat(edge_ok), torch.cat(cloud_ok), torch.cat(keep_score)
    assert h["test/edge_acc"] == pytest.approx(float(edge_ok.float().mean()), abs=1e-6)
    assert h["test/cloud_acc"] == pytest.approx(float(cloud_ok.float().mean()), abs=1e-6)
    order = keep_score.argsort(descending=True, stable=True)
    for c in (50, 70, 90):  # the stated budget holds exactly: the ceil(c n) highest keep scores stay on the edge
        kept = math.ceil(c / 100 * TEST_SIZE)
        assert h[f"test/coverage@cov{c}"] * TEST_SIZE == pytest.approx(kept, abs=1e-3)
        right = edge_ok[order[:kept]].sum() + cloud_ok[order[kept:]].sum()  # the rest go to the cloud
        assert h[f"test/hybrid_acc@cov{c}"] == pytest.approx(float(right) / TEST_SIZE, abs=1e-6)


@pytest.mark.slow
def test_every_stage_chains_and_reports(tmp_path: Path) -> None:
    study, runs = _tiny_study(tmp_path, hybrid_epochs=3), tmp_path / "runs"
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug") == 0
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb") == 0
    root = runs / "hardness_glyphs"
    teacher = _net(root / "teacher/seed0", "net.")
    for stage in ("kd", "disk"):  # distilled from the teacher run's weights, which stay frozen
        assert _same(_net(root / stage / "seed0", "teacher."), teacher), stage
    # hybrid with edge adaptation (epoch 1 of 3): the cloud stays the teacher's, the edge moves from the CE student
    assert _same(_net(root / "hybrid/seed0", "cloud."), teacher)
    _check_routing(root / "hybrid/seed0")
    assert not _same(_net(root / "hybrid/seed0", "edge."), _net(root / "ce/seed0", "net."))
    # the OSP run has the multipliers and slacks the softmax-response run lacks
    osp = _net(root / "osp/seed0", "")
    assert {"eps", "multiplier.lam"} <= set(osp) and "eps" not in _net(root / "teacher/seed0", "")
    report = json.loads((tmp_path / "results/hardness_glyphs.json").read_text())
    data = yaml.safe_load((REPO / "studies/hardness_glyphs.yaml").read_text())
    assert set(report["metrics"]) == set(data["metrics"])
    for name, metric in report["metrics"].items():
        assert set(metric["points"][""]["per_seed"]) == {"0"}, name
    assert all(c["points"][""]["status"] == "pending" for c in report["claims"].values())  # 1 seed
