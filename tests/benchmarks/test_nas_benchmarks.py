"""The task-specific transformer benchmarks: interpolation of the drop-top curve, round-robin timing, and tiny
end-to-end runs of every stage (tiny random BERT, a few examples) writing their results files."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import nas_latency, nas_synthetic
from tests.recipes.smoke_data_text import write_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=3, hidden=32, max_positions=64)


def test_interpolate():
    pts = [(10.0, 90.0), (2.0, 50.0), (6.0, 70.0)]
    assert nas_synthetic.interpolate(pts, 4.0) == pytest.approx(60.0)
    assert nas_synthetic.interpolate(pts, 8.0) == pytest.approx(80.0)
    assert nas_synthetic.interpolate(pts, 2.0) == pytest.approx(50.0)
    assert nas_synthetic.interpolate(pts, 1.0) is None and nas_synthetic.interpolate(pts, 11.0) is None


def test_round_robin_medians():
    calls = []
    out = nas_latency.time_round_robin([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and len(out) == 2 and all(t >= 0 for t in out)


def test_demo_stages_and_latency_end_to_end(tiny_bert, tmp_path):
    common = ["--model-path", tiny_bert, "--train-size", "16", "--val-size", "8", "--test-size", "8", "--epochs", "1",
              "--search-epochs", "1", "--max-length", "32", "--batch-size", "8", "--population", "2",
              "--generations", "1", "--search-batches", "1", "--latency-repeats", "1", "--latency-batches", "1,2",
              "--parts", str(tmp_path / "parts"), "--results", str(tmp_path / "results")]
    nas_synthetic.main(["bow", *common])
    for layers in ("0,1,2", "0", "0,1"):
        nas_synthetic.main(["finetune", "--layers", layers, *common])
    nas_synthetic.main(["search", *common])
    rechosen = nas_synthetic.main(["finetune", "--from-search", "--selection", "budget", "--latency-budget", "0.9",
                                   *common])
    assert rechosen["init"] == "supernet" and rechosen["search"]["rechosen_by"]["selection"] == "budget"
    assert rechosen["arch"] == rechosen["search"]["chosen"]["arch"]
    summary = nas_synthetic.main(["collect", *common])
    saved_path = tmp_path / "results" / "nas_synthetic.json"
    saved = json.loads(saved_path.read_text())
    assert saved["goals"] == json.loads(json.dumps(summary["goals"]))
    assert [r["name"] for r in summary["full"]] == ["finetune_L012_s0"]
    assert [len(r["arch"]["layers"]) for r in summary["drop_top"]] == [1, 2]
    assert len(summary["goals"]) == 2 * len(summary["searched"]) == 4
    assert {r["init"] for r in summary["searched"]} == {"supernet"}
    for name in ("nas_synthetic.md", "nas_synthetic.png", "nas_synthetic_pareto.png"):
        assert (tmp_path / "results" / name).stat().st_size > 100
    # nas_latency's fallback reads the demo's schema under the name the old demo's result now has
    (tmp_path / "results" / "nas_synthetic_demo.json").write_bytes(saved_path.read_bytes())
    result = nas_latency.main(["--model-path", tiny_bert, "--results", str(tmp_path / "results"),
                               "--batches", "1,2", "--lengths", "16,32", "--repeats", "1", "--repeats-large", "1"])
    assert result["arch"] == summary["searched"][0]["arch"]
    assert [(r["batch"], r["seq_len"]) for r in result["rows"]] == [(1, 16), (1, 32), (2, 16), (2, 32)]
    assert "speed-up" in (tmp_path / "results" / "nas_latency.md").read_text()
    assert (tmp_path / "parts" / "search_s0" / "supernet.pt").is_file()  # one search directory per seed
    table = nas_synthetic.main(["search_seeds", *common])
    assert [r["seed"] for r in table["rows"]] == [0] and not table["goals"]["decided"]
    assert set(table["rows"][0]["batches"]) == {"1", "2"} and 3 <= len(table["latency_ms"]) <= 4  # distinct archs
    assert nas_synthetic.arch_key(table["rows"][0]["arch"]) in table["latency_ms"]
    assert "UNDECIDED" in (tmp_path / "results" / "nas_synthetic_search_seeds.md").read_text()


def test_seeds_stage_summarises_drop_top_prefixes_per_depth(tmp_path):
    parts, results = tmp_path / "parts", tmp_path / "results"
    parts.mkdir()
    runs = [([0, 1, 2], 0, 90.0), ([0, 1, 2], 1, 94.0), ([0], 0, 48.8), ([1, 3, 5], 0, 70.0)]
    for layers, seed, acc in runs:
        name = f"finetune_L{''.join(map(str, layers))}_s{seed}"
        (parts / f"{name}.json").write_text(json.dumps({"name": name, "arch": {"layers": layers, "downsample": {}},
                                                        "test_acc": acc, "seed": seed, "init": "pretrained"}))
    out = nas_synthetic.main(["seeds", "--parts", str(parts), "--results", str(results)])
    assert [(r["layers"], r["seeds"], r["test_acc"]) for r in out["rows"]] == [(3, [0, 1], [90.0, 94.0]),
                                                                                 (1, [0], [48.8])]
    assert out["rows"][0]["mean"] == 92.0 and out["rows"][0]["ci"][0] < 92.0 < out["rows"][0]["ci"][1]
    assert "| 1 | 0 | 48.8 | 48.8 | 1 of 1 |" in (results / "nas_synthetic_seeds.md").read_text()


def _part(name, layers, seed, acc, downsample=None, **extra):
    return {"name": name, "arch": {"layers": layers, "downsample": downsample or {}}, "test_acc": acc, "seed": seed,
            "init": extra.pop("init", "pretrained"), **extra}


def _seed_parts(seed, full, drop3, searched):
    """Full (3 layers), prefixes of 1 and 2 layers, and a searched [0, 2] + top-k net for one seed."""
    return [_part(f"finetune_L012_s{seed}", [0, 1, 2], seed, full),
            _part(f"finetune_L01_s{seed}", [0, 1], seed, drop3),
            _part(f"finetune_L0_s{seed}", [0], seed, 50.0),
            _part(f"searched_s{seed}", [0, 2], seed, searched, {"1": ["topk", 0.5]}, init="supernet",
                  test_acc_supernet_weights=60.0, search={"chosen": {"acc": 70.0}})]


def test_search_seed_table_pairs_seeds_interpolates_and_decides_goals():
    lat = {nas_synthetic.arch_key({"layers": [0, 1, 2]}): {"1": 30.0, "32": 300.0},
           nas_synthetic.arch_key({"layers": [0, 1]}): {"1": 20.0, "32": 200.0},
           nas_synthetic.arch_key({"layers": [0]}): {"1": 10.0, "32": 100.0},
           nas_synthetic.arch_key({"layers": [0, 2], "downsample": {"1": ["topk", 0.5]}}): {"1": 15.0, "32": 50.0}}
    fulls, searched = [90.0, 92.0, 94.0, 96.0, 98.0], [89.8, 92.1, 93.7, 96.2, 97.9]
    runs = [p for s in range(5) for p in _seed_parts(s, fulls[s], 60.0, searched[s])]
    runs.append(_part("searched_budget0.7_supernet_s0", [1], 0, 10.0, init="supernet"))  # legacy name: ignored
    t = nas_synthetic.search_seed_table(runs, lat, [1, 32])
    assert [r["seed"] for r in t["rows"]] == [0, 1, 2, 3, 4] and t["full_depth"] == 3 and not t["skipped"]
    r0 = t["rows"][0]
    assert r0["acc_diff_vs_full"] == pytest.approx(-0.2) and r0["search_val_acc"] == 70.0
    b1, b32 = r0["batches"]["1"], r0["batches"]["32"]
    assert b1["speedup"] == pytest.approx(2.0) and b1["drop_top_acc_at_same_latency"] == pytest.approx(55.0)
    assert b1["drop_top_where"] == "interpolated"
    # faster than the 1-layer prefix at batch 32: compared with the 1-layer accuracy (flat extension)
    assert b32["drop_top_acc_at_same_latency"] == 50.0 and b32["drop_top_where"] == "below the fastest prefix"
    g = t["goals"]
    assert g["decided"] and g["goal1_accuracy"]["met"] and g["goal1_met"] and g["goal2_met"]
    assert g["goal1_accuracy"]["ci"][0] > -1.0 and g["goal1_speed_b32"]["mean"] == pytest.approx(6.0)
    md = nas_synthetic._search_seeds_markdown({**t, "command": "c", "machine": "m", "threads": 1,
                                               "latency_repeats": 3, "max_length": 64})
    assert "Goal 1 (faster and within 1 point): **met**" in md and "| 0 | [0, 2] + topk 0.5 after L1 |" in md
    # a searched net 5 points below full on one seed: the accuracy interval's low end falls below -1
    bad = [p for s in range(5) for p in _seed_parts(s, fulls[s], 60.0, searched[s] - (5.0 if s == 2 else 0.0))]
    assert not nas_synthetic.search_seed_table(bad, lat, [1])["goals"]["goal1_met"]
    # fewer than 5 seeds (and a seed without baselines): intervals shown, goals undecided
    few = [p for s in range(3) for p in _seed_parts(s, fulls[s], 60.0, searched[s])]
    few.append(_part("searched_s7", [0, 2], 7, 90.0, {"1": ["topk", 0.5]}, init="supernet"))
    g3 = nas_synthetic.search_seed_table(few, lat, [1])
    assert g3["goals"]["n_seeds"] == 3 and not g3["goals"]["decided"] and g3["goals"]["goal1_accuracy"]["interval_ok"]
    assert not g3["goals"]["goal1_met"] and [s["seed"] for s in g3["skipped"]] == [7]
    # a baseline trained on other data (800 instead of 2000 examples) is never paired with the searched net
    data = {"train_size": 2000, "val_size": 500, "test_size": 1000, "data_seed": 0, "max_length": 64}
    mixed = [{**p, **data} for p in _seed_parts(0, fulls[0], 60.0, searched[0])]
    mixed[0]["train_size"] = 800
    t0 = nas_synthetic.search_seed_table(mixed, lat, [1])
    assert not t0["rows"] and "different data" in t0["skipped"][0]["why"]
    same = [{**p, **data} for p in _seed_parts(0, fulls[0], 60.0, searched[0])]
    assert [r["seed"] for r in nas_synthetic.search_seed_table(same, lat, [1])["rows"]] == [0]
    # another choice rule's parts (finetune --from-search) are compared when named, and only then
    other = [{**p, "name": "searched_budget0.6_supernet_s0"} if p["name"] == "searched_s0" else p for p in same]
    assert not nas_synthetic.search_seed_table(other, lat, [1])["rows"]
    named = nas_synthetic.search_seed_table(other, lat, [1], searched_prefix="searched_budget0.6_supernet_s")
    assert len(named["rows"]) == 1


# ---- the rerank choice (configuration C): a tiny fake front of a real tiny supernet, no search run
def _front_entry(layers, acc, ms, downsample=None):
    arch = {"layers": layers, "downsample": downsample or {}}
    return {"arch": arch, "describe": nas_synthetic.arch_key(arch), "acc": acc, "latency_ms": ms}


FULL = _front_entry([0, 1, 2], 90.0, 10.0)
FRONT = [_front_entry([0], 40.0, 2.0), _front_entry([0, 2], 70.0, 5.0, {"0": ["pool", 0.5]}),
         _front_entry([0, 1], 80.0, 5.5), _front_entry([0, 2], 70.0, 4.0),  # tie at 70: the faster one first
         _front_entry([0, 1, 2], 85.0, 8.0, {"1": ["topk", 0.5]}),  # over a 0.6 budget (8 > 6)
         _front_entry([0, 1, 2], 88.0, 9.0, {"0": ["pool", 0.5]})]


def test_rerank_candidates_are_the_top_k_within_budget_by_supernet_acc():
    cands = nas_synthetic.rerank_candidates(FRONT, FULL, 0.6, 3)
    assert [(c["acc"], c["latency_ms"]) for c in cands] == [(80.0, 5.5), (70.0, 4.0), (70.0, 5.0)]
    assert all(c["latency_ms"] <= 6.0 for c in cands)
    assert len(nas_synthetic.rerank_candidates(FRONT, FULL, 0.6, 10)) == 4  # fewer when fewer fit
    assert [c["latency_ms"] for c in nas_synthetic.rerank_candidates(FRONT, FULL, 0.1, 3)] == [2.0]  # none: fastest
    scored = [{**c, "val_acc": v} for c, v in zip(cands, (75.0, 92.0, 92.0))]
    assert nas_synthetic.rerank_choice(scored)["latency_ms"] == 4.0  # argmax of val acc; tie -> lower latency
    assert nas_synthetic.rerank_choice(scored[:1] + scored[2:])["latency_ms"] == 5.0


def test_rerank_finetunes_candidates_on_val_only_and_records_them(tiny_bert, tmp_path):
    from modules.transformer_search import TransformerSearch

    parts = tmp_path / "parts"
    (parts / "search_s0").mkdir(parents=True)
    supernet = TransformerSearch(model_path=tiny_bert, num_classes=2, input_shape=(32,))
    torch.save(supernet.state_dict(), parts / "search_s0" / "supernet.pt")
    (parts / "search_s0" / "searched_arch.json").write_text(json.dumps(
        {"front": FRONT, "full": FULL, "candidates": FRONT, "chosen": FRONT[-1], "arch": FRONT[-1]["arch"]}))
    common = ["--model-path", tiny_bert, "--train-size", "16", "--val-size", "8", "--test-size", "8", "--epochs", "1",
              "--max-length", "32", "--batch-size", "8", "--parts", str(parts), "--results", str(tmp_path / "r")]
    args = ["finetune", "--from-search", "--selection", "rerank", "--latency-budget", "0.6", "--rerank-top", "2",
            "--rerank-epochs", "1", *common]

    # the scoring stage with the test split taken out of the data module: it cannot have used it
    parsed = nas_synthetic.parse_args(args)
    dm = nas_synthetic._data(parsed)
    dm.test_set = None
    cands = nas_synthetic.rerank_candidates(FRONT, FULL, 0.6, 2)
    scored = nas_synthetic.rerank(parsed, dm, cands)
    assert [s["arch"] for s in scored] == [c["arch"] for c in cands]
    assert all(0.0 <= s["val_acc"] <= 100.0 and s["init"] == "supernet" for s in scored)

    out = nas_synthetic.main(args)
    assert out["name"] == "searched_rerank0.6_supernet_s0" and out["init"] == "supernet"
    rr = out["search"]["rerank"]
    assert [c["latency_ms"] for c in rr["candidates"]] == [5.5, 4.0]  # top 2 within 0.6 x 10 ms by supernet acc
    assert [c["val_acc_supernet_weights"] for c in rr["candidates"]] == [80.0, 70.0]
    best = nas_synthetic.rerank_choice(rr["candidates"])
    assert out["arch"] == best["arch"] == rr["chosen"] and out["search"]["chosen"]["arch"] == best["arch"]
    saved = json.loads((parts / "searched_rerank0.6_supernet_s0.json").read_text())
    assert [c["val_acc"] for c in saved["search"]["rerank"]["candidates"]] == [c["val_acc"] for c in rr["candidates"]]
    assert (parts / "searched_rerank0.6_supernet_s0.pt").is_file()
    with pytest.raises(SystemExit):  # the rerank rule re-chooses from a finished search only
        nas_synthetic.main(["search", "--selection", "rerank", *common])


def test_search_seeds_report_lists_the_rerank_candidates():
    lat = {nas_synthetic.arch_key({"layers": [0, 1, 2]}): {"1": 30.0},
           nas_synthetic.arch_key({"layers": [0, 1]}): {"1": 20.0},
           nas_synthetic.arch_key({"layers": [0]}): {"1": 10.0},
           nas_synthetic.arch_key({"layers": [0, 2], "downsample": {"1": ["topk", 0.5]}}): {"1": 15.0}}
    runs = _seed_parts(0, 95.0, 60.0, 94.0)
    runs[-1]["search"]["rerank"] = {"candidates": [
        {"describe": "a", "latency_ms": 5.0, "val_acc_supernet_weights": 70.0, "val_acc": 80.0},
        {"describe": "b", "latency_ms": 4.0, "val_acc_supernet_weights": 60.0, "val_acc": 90.0}]}
    t = nas_synthetic.search_seed_table(runs, lat, [1])
    assert [c["val_acc"] for c in t["rows"][0]["rerank"]] == [80.0, 90.0]
    md = nas_synthetic._search_seeds_markdown({**t, "command": "c", "machine": "m", "threads": 1,
                                               "latency_repeats": 3, "max_length": 64})
    assert "* seed 0: a (5.0 ms, 70.0 -> 80.0); *b (4.0 ms, 60.0 -> 90.0)" in md


def test_tagged_search_goes_to_its_own_dir_and_is_read_back_by_finetune(tiny_bert, tmp_path):
    parts = tmp_path / "parts"
    common = ["--model-path", tiny_bert, "--train-size", "16", "--val-size", "8", "--test-size", "8", "--epochs", "1",
              "--max-length", "32", "--batch-size", "8", "--population", "2", "--generations", "1",
              "--search-batches", "1", "--latency-repeats", "1", "--parts", str(parts), "--results",
              str(tmp_path / "r")]
    with pytest.raises(SystemExit):  # a tagged search stops after the search
        nas_synthetic.main(["search", "--search-tag", "se2", "--search-epochs", "2", *common])
    nas_synthetic.main(["search", "--search-only", "--search-tag", "se2", "--search-epochs", "2", *common])
    assert sorted(p.name for p in parts.iterdir()) == ["search_se2_s0"]  # no untagged dir, no part
    saved = json.loads((parts / "search_se2_s0" / "searched_arch.json").read_text())
    assert saved["search_epochs"] == 2 and saved["settings"]["search_tag"] == "se2"
    assert (parts / "search_se2_s0" / "supernet.pt").is_file() and not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):  # never overwritten
        nas_synthetic.main(["search", "--search-only", "--search-tag", "se2", "--search-epochs", "2", *common])
    out = nas_synthetic.main(["finetune", "--from-search", "--search-tag", "se2", "--selection", "budget",
                              "--latency-budget", "0.9", *common])
    assert out["name"] == "searched_se2_budget0.9_supernet_s0" and out["init"] == "supernet"
    assert out["search_dir"] == str(parts / "search_se2_s0") and out["search_epochs"] == 2
    assert (parts / "searched_se2_budget0.9_supernet_s0.json").is_file()
    assert not (parts / "searched_budget0.9_supernet_s0.json").exists()
