"""TransformerSearch: Pareto front and choice rules on hand-set points, the manual-optimisation sandwich step, the
latency lookup table, and the recipe chain (search run -> searched_arch.json + pareto.png + W&B summary ->
init_from fine-tune of the chosen subnet) through main.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from main import cli_main
from modules.transformer_search import LatencyTable, TransformerSearch, pareto_front
from nets.searchable_encoder import Arch
from tests.recipes.smoke_data_text import write_glue, write_tiny_bert

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    return {"model": write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=4, hidden=32),
            "glue": write_glue(tmp_path_factory.mktemp("glue"), rows=40)}


def test_pareto_front_on_hand_set_points():
    pts = [(90.0, 10.0), (85.0, 5.0), (80.0, 6.0), (90.0, 12.0), (70.0, 2.0), (85.0, 5.0), (95.0, 20.0)]
    assert pareto_front(pts) == [4, 1, 0, 6]  # sorted by latency; dominated and duplicate points dropped


def test_choice_rules(tiny):
    search = TransformerSearch(model_path=tiny["model"], num_classes=2, input_shape=(16,), max_acc_drop=1.0)
    full = {"acc": 90.0, "latency_ms": 10.0}
    front = [{"acc": 80.0, "latency_ms": 2.0}, {"acc": 89.5, "latency_ms": 4.0}, {"acc": 89.0, "latency_ms": 3.0},
             full]
    assert search._choose(front, full)["latency_ms"] == 3.0  # fastest within 1 point
    search.hparams.selection, search.hparams.latency_budget = "budget", 0.45
    assert search._choose(front, full)["latency_ms"] == 4.0  # most accurate within 45% of the latency
    search.hparams.latency_budget = 0.1
    assert search._choose(front, full)["latency_ms"] == 2.0  # nothing fits: the fastest


def test_sandwich_step_trains_full_and_sampled_subnets(tiny):
    torch.manual_seed(0)
    search = TransformerSearch(model_path=tiny["model"], num_classes=2, input_shape=(16,), subnets_per_step=2,
                               rates=[0.5], kinds=["topk"], min_layers=3, search_seed=1)
    assert [a.key() for a in search.sample_archs(5)] == [a.key() for a in search.sample_archs(5)]
    assert [a.key() for a in search.sample_archs(5)] != [a.key() for a in search.sample_archs(6)]
    archs = search.sample_archs(0)
    ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": torch.tensor([0, 1, 0, 1])}
    # gradients of one sandwich step, computed the way training_step accumulates them
    search.zero_grad()
    logits = search._logits(batch, Arch.full(4))
    torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
    assert all(p.grad is None for p in search.net.downsamplers.parameters())  # the full path has no downsampling
    for arch in archs:
        search._logits(batch, arch).sum().backward()
    used = {str(i) for a in archs for i in a.downsample}
    assert used
    for slot in used:
        assert search.net.downsamplers[slot].ops["topk"].scorer.proj.weight.grad.abs().sum() > 0


def test_search_seed_defaults_to_the_runs_seed(tiny, monkeypatch):
    """The script the study replaced seeded the architecture sampling and the evolution with the run's seed; a recipe
    run with ``seed_everything: S`` and no search_seed does the same (it used to search with seed 0 on every seed)."""
    import lightning.pytorch as pl

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    kw = {"model_path": tiny["model"], "num_classes": 2, "input_shape": (16,), "subnets_per_step": 3}
    pl.seed_everything(3, verbose=False)
    by_run_seed = TransformerSearch(**kw)
    assert by_run_seed.hparams.search_seed == 3
    explicit = [TransformerSearch(**kw, search_seed=s) for s in (3, 4)]
    assert [a.key() for a in by_run_seed.sample_archs(0)] == [a.key() for a in explicit[0].sample_archs(0)]
    assert [a.key() for a in explicit[0].sample_archs(0)] != [a.key() for a in explicit[1].sample_archs(0)]
    pl.seed_everything(4, verbose=False)
    assert TransformerSearch(**kw).hparams.search_seed == 4
    assert TransformerSearch(**kw, search_seed=0).hparams.search_seed == 0  # an explicit seed wins


def test_latency_table_sums_its_operators(tiny):
    search = TransformerSearch(model_path=tiny["model"], num_classes=2, input_shape=(16,)).eval()
    table = LatencyTable(search.net, batch_size=1, seq_len=16, repeats=1)
    arch = Arch.from_any({"layers": [0, 1, 3], "downsample": {"0": ["topk", 0.5], "1": ["pool", 0.25]}}, 4)
    predicted = table.predict(arch)
    t = table.table
    expected = (t["embeddings"] + t["head"] + t["layer/16"] + t["layer/9"] + t["layer/3"] + t["ds/topk/0.5/16"]
                + t["ds/pool/0.25/9"])
    assert predicted == pytest.approx(expected)
    assert table.measure(arch) > 0


def test_search_recipe_chain_through_main(tiny, tmp_path):
    runs = tmp_path / "runs"
    common = [f"--runs_root={runs}", "--trainer.accelerator=cpu", "--trainer.devices=1",
              "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=2",
              f"--model.init_args.model_path={tiny['model']}", f"--data.init_args.tokenizer={tiny['model']}",
              f"--data.init_args.data_dir={tiny['glue']}", "--data.init_args.batch_size=4",
              "--data.init_args.num_workers=0", "--data.init_args.max_length=16"]
    cli = cli_main(["fit", "--config", str(REPO / "recipes" / "nas_minilm_sst2.yaml"), *common,
                    "--trainer.max_steps=2", "--trainer.limit_train_batches=2", "--trainer.max_epochs=1",
                    "--model.init_args.population=3", "--model.init_args.generations=1",
                    "--model.init_args.latency_repeats=1", "--model.init_args.search_batches=1"])
    run_dir = runs / "nas_minilm_sst2"
    saved = json.loads((run_dir / "searched_arch.json").read_text())
    assert (run_dir / "pareto.png").stat().st_size > 1000
    chosen = saved["arch"]
    assert saved["full"]["arch"]["layers"] == [0, 1, 2, 3] and saved["drop_top"] and saved["front"]
    summary = cli.trainer.logger.experiment.summary
    assert summary["search/chosen_arch"] == json.dumps(chosen) and summary["search/full_latency_ms"] > 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["searched_arch"] == chosen
    import wandb

    wandb.finish()
    cli2 = cli_main(["fit", "--config", str(REPO / "recipes" / "finetune_minilm_sst2_searched.yaml"), *common,
                     "--trainer.max_steps=1", "--trainer.limit_train_batches=1", "--trainer.max_epochs=1",
                     f"--init_from={run_dir}"])
    assert cli2.model.arch.to_dict() == Arch.from_any(chosen, 4).to_dict()
    assert cli2.trainer.global_step == 1
