"""studies/nas_synthetic.yaml at a few steps per stage on a tiny random BERT (MiniLM's tokenizer, 4 layers): the
search run trains the supernet and searches through main.py, the searched run fine-tunes the architecture the
search chose (read back from the runs' metrics: same layers and tokens), and that subnet processes fewer tokens and
costs fewer MACs than the full encoder, as the budget rule requires. The default tier runs the search -> searched
chain; the slow tier runs every stage (the drop-top axis at one depth) and checks the report's metrics and claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.recipes.smoke_data_text import write_tiny_bert
from tests.studies.tiny import REPO, studies

pytestmark = pytest.mark.usefixtures("repo_cwd")  # tests/studies/conftest.py


def _tiny_study(tmp_path: Path) -> tuple[Path, dict]:
    model = write_tiny_bert(tmp_path / "tiny_bert", num_layers=4, hidden=32)
    data = yaml.safe_load((REPO / "studies/nas_synthetic.yaml").read_text())
    data["seeds"] = [0]
    tiny = {"model.init_args.model_path": model, "data.init_args.train_size": 64, "data.init_args.val_size": 32,
            "data.init_args.test_size": 32, "trainer.max_epochs": 1, "trainer.limit_train_batches": 2,
            "trainer.logger": False}
    data["axes"]["depth"]["values"] = {"L1": data["axes"]["depth"]["values"]["L1"]}
    cost = {"class_path": "studies.probes_nas.ArchCost", "init_args": {"repeats": 1}}
    for name, stage in data["stages"].items():
        stage["overrides"] = {**stage.get("overrides", {}), **tiny}
        if name in ("full", "droptop"):
            stage["overrides"]["trainer.callbacks"] = [cost]
        if name == "searched":
            stage["overrides"]["trainer.callbacks"] = [
                {"class_path": "studies.probes_nas.TextTestAccuracyAtStart"}, cost]
        if name == "search":
            stage["overrides"].update({"model.init_args.population": 4, "model.init_args.generations": 1,
                                       "model.init_args.search_batches": 1, "model.init_args.latency_repeats": 1})
    study = tmp_path / "nas_synthetic.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    return study, data


@pytest.mark.parametrize("slow", [pytest.param(False, id="chain"),
                                  pytest.param(True, id="all", marks=pytest.mark.slow)])
def test_nas_synthetic_tiny(tmp_path: Path, slow: bool) -> None:
    study, _data = _tiny_study(tmp_path)
    runs = tmp_path / "runs"
    only = [] if slow else ["--only", "searched"]
    assert studies("run", study, "--runs-root", runs, "--launcher", "debug", *only) == 0

    def metrics(stage: str, step: str) -> dict[str, float]:
        return json.loads((runs / f"nas_synthetic/{stage}/seed0/metrics/{step}.json").read_text())["metrics"]

    search, searched = metrics("search", "fit"), metrics("searched", "test")
    # the searched run tested the architecture the search chose
    assert searched["arch/layers"] == search["search/chosen_layers"]
    assert searched["arch/tokens"] == search["search/chosen_tokens"]
    assert searched["arch/downsamplers"] == search["search/chosen_downsamplers"]
    # the defining property: the budget rule never keeps the full encoder, so the searched subnet processes fewer
    # tokens and costs fewer MACs than the full one (4 layers x 64 tokens)
    assert search["search/full_layers"] == 4 and search["search/full_tokens"] == 4 * 64
    assert searched["arch/tokens"] < search["search/full_tokens"]
    assert search["search/chosen_latency_ms"] < search["search/full_latency_ms"]
    from callbacks.efficiency_report import count_macs
    from modules.text_classifier import TextClassifier

    full_net = TextClassifier(model_path=str(tmp_path / "tiny_bert"), num_classes=2, input_shape=(64,))
    full_macs = count_macs(full_net, full_net.example_input_array, "li2017")
    assert searched["arch/macs"] < full_macs
    assert all(searched[f"arch/latency_ms_b{b}"] > 0 for b in (1, 32))
    assert 0 <= metrics("searched", "fit")["start/test_acc1"] <= 100
    # the fine-tune started from the search run's checkpoint (the supernet's weights)
    config = yaml.safe_load((runs / "nas_synthetic/searched/seed0/config.yaml").read_text())
    assert str(config["init_from"]).endswith("search/seed0/checkpoints/last.ckpt")
    if not slow:
        return
    full = metrics("full", "test")
    assert full["arch/macs"] == full_macs and full["arch/tokens"] == 4 * 64
    assert metrics("droptop/depth=L1", "test")["arch/layers"] == 1
    assert studies("report", study, "--runs-root", runs, "--results-dir", tmp_path / "results", "--no-wandb") == 0
    report = json.loads((tmp_path / "results/nas_synthetic.json").read_text())
    assert all(p["per_seed"] for m in report["metrics"].values() for p in m["points"].values())
    assert report["metrics"]["speedup_b1"]["points"][""]["per_seed"]["0"] == pytest.approx(
        full["arch/latency_ms_b1"] / searched["arch/latency_ms_b1"])
    assert report["claims"]["fewer_macs"]["points"][""]["status"] == "met"
    assert report["claims"]["searched_within_1pt_of_full"]["points"][""]["status"] == "pending"  # 1 seed
