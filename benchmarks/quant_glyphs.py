"""CPU-scale reproduction of the non-convex claim of Li et al., "Training Quantized Nets: A Deeper Understanding",
NeurIPS 2017 (REFERENCE.md 2.4-2.5): with binary weights, final accuracy is ordered FP >= BC > SR >= R.

A small CIFAR-style VGG (the VGG-9 layout at a quarter of its widths: 16,16,M,32,32,M,64,64,M convs with BN, FC
64-BN, FC 10) is trained on the procedural glyphs dataset (1x32x32, 10 classes) by full precision (FP) and with
binary weights {-1, +1} (``QuantizedTraining(grid="binary", delta=1, scale="constant")``, every conv and linear
layer) by BC, SR and R. All methods use Adam (the paper's "-ADAM" variants) with the same learning-rate schedule
(lr /10 at 50% and 75% of the epochs) and, per seed, the same initial weights and the same data order (the
comparisons are paired by seed). Training runs through ``lightning.Trainer`` + ``modules.ImageClassifier`` without
logger or checkpoints; the reported number is the test accuracy after the last epoch.

Claims and margins, fixed before running (percentage points of test accuracy, ``benchmarks.seeds.compare``):

* ``A > B`` (BC > SR): the low end of the paired 95% interval of (A - B) is above 0.
* ``A >= B`` (FP >= BC, SR >= R): non-inferiority with a 1-point margin: low(A - B) > -1.

Usage (about 30-40 minutes on 2 shared CPU cores for the defaults)::

    nohup python -m benchmarks.quant_glyphs --out results/quant_glyphs.json > /tmp/quant_glyphs.log 2>&1 &

Results are written after every run (``results/quant_glyphs.json`` and ``.md``, plus ``.png`` at the end), so an
interrupted study keeps what finished; rerunning with the same ``--out`` skips the runs already in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

METHODS = ("fp", "bc", "sr", "r")
NET_KWARGS = {"cfg": [16, 16, "M", 32, 32, "M", 64, 64, "M"], "hidden": 64}
# (A, B, kind): kind "gt" = A beats B (low(A-B) > 0), "ge" = A non-inferior to B (low(A-B) > -GE_MARGIN)
CLAIMS = [("fp", "bc", "ge"), ("bc", "sr", "gt"), ("sr", "r", "ge")]
GE_MARGIN = 1.0


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import lightning.pytorch as pl
    from callbacks.quantized_training import QuantizedTraining
    from datamodules.glyphs import GlyphsDataModule
    from modules.image_classifier import ImageClassifier

    pl.seed_everything(seed, verbose=False)
    dm = GlyphsDataModule(batch_size=args.batch_size, seed=seed, data_seed=args.data_seed, num_classes=10,
                          difficulty=args.difficulty, train_size=args.train_size, test_size=args.test_size,
                          cache_dir=args.cache_dir)
    lr, epochs = args.lr, args.epochs
    milestones = [epochs // 2, (3 * epochs) // 4]
    model = ImageClassifier(
        net="vgg9", num_classes=10, input_shape=(1, 32, 32), net_kwargs=NET_KWARGS,
        optimizer=lambda p: torch.optim.Adam(p, lr=lr),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=milestones, gamma=0.1),
        log_images=False,
    )
    callbacks: list[pl.Callback] = []
    if method != "fp":
        callbacks.append(QuantizedTraining(method=method, grid="binary", delta=1.0, scale="constant", seed=seed))
    losses: list[float] = []

    class EpochLoss(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            value = trainer.callback_metrics.get("train/loss_epoch")
            losses.append(float(value) if value is not None else float("nan"))

    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[*callbacks, EpochLoss()], deterministic=False,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
        train_s = time.perf_counter() - t0
        test = trainer.test(model, datamodule=dm, verbose=False)[0]
        train_eval = _accuracy(model, dm.train_dataloader())
    out = {"method": method, "seed": seed, "test_acc": 100.0 * float(test["test/acc1"]),
           "test_loss": float(test["test/loss"]), "train_acc": 100.0 * train_eval, "epoch_train_loss": losses,
           "train_seconds": train_s, "steps": trainer.global_step}
    if method != "fp":
        q = callbacks[0]
        values = sorted({v for w in q.quantized_weights().values() for v in w.unique().tolist()})
        out["weight_values"] = values
    return out


@torch.no_grad()
def _accuracy(model: torch.nn.Module, loader: Any) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def summarise(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    from benchmarks.seeds import compare, mean_ci

    by = {m: {r["seed"]: r for r in runs if r["method"] == m} for m in METHODS}
    summary: dict[str, Any] = {"methods": {}, "claims": []}
    for m in METHODS:
        acc = [by[m][s]["test_acc"] for s in seeds if s in by[m]]
        if len(acc) >= 2:
            ci = mean_ci(acc)
            train = [by[m][s]["train_acc"] for s in seeds if s in by[m]]
            summary["methods"][m] = {"n": len(acc), "mean": ci.mean, "low": ci.low, "high": ci.high,
                                     "per_seed": acc, "train_acc_mean": sum(train) / len(train)}
    for a, b, kind in CLAIMS:
        common = [s for s in seeds if s in by[a] and s in by[b]]
        if len(common) < 5:
            summary["claims"].append({"a": a, "b": b, "kind": kind, "n": len(common), "status": "not enough seeds"})
            continue
        margin = 0.0 if kind == "gt" else GE_MARGIN
        c = compare([by[a][s]["test_acc"] for s in common], [by[b][s]["test_acc"] for s in common], margin=margin,
                    names=(a.upper(), b.upper()))
        held = c.margin_met if kind == "gt" else c.non_inferior
        summary["claims"].append({"a": a, "b": b, "kind": kind, "n": len(common), "diff": c.diff, "low": c.low,
                                  "high": c.high, "margin": margin, "held": held, "text": str(c)})
    return summary


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    s = data["summary"]
    a = data["args"]
    names = {"fp": "FP (full precision, Adam)", "bc": "BC-ADAM", "sr": "SR-ADAM", "r": "R-ADAM"}
    lines = [
        "# Quantized training on glyphs: FP >= BC > SR >= R with binary weights (Li et al., NeurIPS 2017)",
        "",
        f"Net: VGG-9 layout at quarter width (convs {NET_KWARGS['cfg']}, FC {NET_KWARGS['hidden']}-BN, FC 10), "
        f"binary weights {{-1, +1}} in every conv and linear layer for BC/SR/R (`scale: constant`, delta 1). "
        f"Glyphs: 10 classes, difficulty {a['difficulty']}, {a['train_size']} training / {a['test_size']} test "
        f"images (data_seed {a['data_seed']}). Adam lr {a['lr']}, batch {a['batch_size']}, {a['epochs']} epochs, lr "
        f"/10 at epochs {a['epochs'] // 2} and {(3 * a['epochs']) // 4}. Seeds {a['seeds']}: per seed the same "
        "initial weights and data order for every method (paired comparisons).",
        "",
        "| method | test accuracy % (mean [95% CI]) | per seed | train accuracy % (mean) |",
        "|---|---|---|---|",
    ]
    for m in METHODS:
        if m in s["methods"]:
            r = s["methods"][m]
            per = ", ".join(f"{v:.1f}" for v in r["per_seed"])
            lines.append(f"| {names[m]} | {r['mean']:.2f} [{r['low']:.2f}, {r['high']:.2f}] (n={r['n']}) | {per} "
                         f"| {r['train_acc_mean']:.1f} |")
    lines += ["", "Gaps (paired by seed, Student-t 95% interval; margins fixed before the run: `>` means low(A-B) > 0, "
              f"`>=` means low(A-B) > -{GE_MARGIN:g} point):", "",
              "| claim | A - B (points) [95% CI] | n | held |", "|---|---|---|---|"]
    for c in s["claims"]:
        op = ">" if c["kind"] == "gt" else ">="
        if "diff" in c:
            lines.append(f"| {c['a'].upper()} {op} {c['b'].upper()} | {c['diff']:.2f} [{c['low']:.2f}, "
                         f"{c['high']:.2f}] | {c['n']} | {'yes' if c['held'] else 'no'} |")
        else:
            lines.append(f"| {c['a'].upper()} {op} {c['b'].upper()} | - | {c['n']} | {c['status']} |")
    done = len(data["runs"])
    planned = len(a["seeds"]) * len(a["methods"])
    lines += ["", f"Runs finished: {done} of {planned}." + ("" if done == planned else " **Incomplete.**"),
              "", "Commands (in order; `--merge` adds the runs of a parallel process):", "", "```",
              *data.get("commands", [data["command"]]), "```", "",
              f"Date: {data['date']}", "", "Machine:", "", f"- {data['machine']}",
              f"- sum of the runs' training wall times {sum(r['train_seconds'] for r in data['runs']) / 60:.1f} min "
              "(several processes may have run in parallel; see the commands)", ""]
    if Path(path.with_suffix(".png")).exists():
        lines += [f"![accuracy by method]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = data["summary"]["methods"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ms = [m for m in METHODS if m in s]
    means = [s[m]["mean"] for m in ms]
    err = [[s[m]["mean"] - s[m]["low"] for m in ms], [s[m]["high"] - s[m]["mean"] for m in ms]]
    ax1.bar([m.upper() for m in ms], means, yerr=err, capsize=5, color=["0.4", "C0", "C1", "C3"][: len(ms)])
    for i, m in enumerate(ms):
        ax1.scatter([i] * len(s[m]["per_seed"]), s[m]["per_seed"], color="k", s=8, zorder=3)
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("final test accuracy, mean and 95% CI")
    for m, color in zip(METHODS, ["0.4", "C0", "C1", "C3"]):
        curves = [r["epoch_train_loss"] for r in data["runs"] if r["method"] == m]
        if curves:
            n = min(len(c) for c in curves)
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
            ax2.plot(range(1, n + 1), mean, color=color, label=m.upper())
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (mean over seeds)")
    ax2.set_title("lr /10 at 50% and 75% of the epochs")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _settings(args: dict[str, Any]) -> dict[str, Any]:
    """The study's settings without the seeds and methods (runs with equal settings can be merged)."""
    return {k: v for k, v in args.items() if k not in ("seeds", "methods", "threads")}


def machine() -> str:
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    import lightning

    return (f"{platform.platform()}, {os.cpu_count()} logical CPUs (shared; load average at start {load}), python "
            f"{platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, torch threads "
            f"{torch.get_num_threads()}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quant_glyphs", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--difficulty", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None, help="glyph tensor cache (default: none)")
    parser.add_argument("--out", default="results/quant_glyphs.json")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--merge", nargs="*", default=[], metavar="JSON",
                        help="add the runs of these JSON files of the same study (other seeds run in parallel)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.quant_glyphs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    keys = ["seeds", "methods", "epochs", "train_size", "test_size", "difficulty", "batch_size", "lr", "data_seed",
            "threads"]
    data: dict[str, Any] = {"args": {k: getattr(args, k) for k in keys}, "command": cmd,
                            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                            "runs": []}
    if out.exists():  # resume an interrupted study with the same settings
        old = json.loads(out.read_text())
        if old.get("args") == data["args"]:
            data["runs"] = old["runs"]
            data["commands"] = old.get("commands", [old["command"]])
    for path in args.merge:  # runs of the same study made by other processes (e.g. other seeds in parallel)
        part = json.loads(Path(path).read_text())
        if _settings(part["args"]) != _settings(data["args"]):
            raise SystemExit(f"--merge {path}: its settings differ from this study's: {part['args']}")
        have = {(r["method"], r["seed"]) for r in data["runs"]}
        data["runs"] += [r for r in part["runs"] if (r["method"], r["seed"]) not in have]
        data["commands"] = data.get("commands", []) + part.get("commands", [part["command"]])
    data["commands"] = data.get("commands", []) + [cmd]
    done = {(r["method"], r["seed"]) for r in data["runs"]}
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            r = run_one(method, seed, args)
            data["runs"].append(r)
            print(f"{method:>2} seed {seed}: test {r['test_acc']:.2f}%  train {r['train_acc']:.1f}%  "
                  f"({r['train_seconds']:.0f} s, {r['steps']} steps)", flush=True)
            data["summary"] = summarise(data["runs"], args.seeds)
            out.write_text(json.dumps(data, indent=1))
            write_markdown(out.with_suffix(".md"), data)
    data["summary"] = summarise(data["runs"], args.seeds)
    if not args.no_plot and data["summary"]["methods"]:
        plot(out.with_suffix(".png"), data)
    out.write_text(json.dumps(data, indent=1))
    write_markdown(out.with_suffix(".md"), data)
    for c in data["summary"]["claims"]:
        print(c.get("text", c))
    return data


if __name__ == "__main__":
    main()
