"""CPU-scale reproduction on the adding task: FPTT vs BPTT (Kag & Saligrama, ICML 2021) and iRNN/TARNN vs LSTM.

Study 1 (FPTT, docs/fptt.md): an LSTM (hidden ``--hidden``, default 64) on the adding task at
each T of ``--seq-lens``, trained by full BPTT and by FPTT (P = 10 windows, alpha = beta = 0.5, c = 1, W <- W_bar and
lambda <- 0 every ``--epoch-batches`` batches) for the **same number of batches** (``--steps``; one step = one
batch; FPTT takes one Adam step per window inside a batch), Adam lr 1e-3, gradient-norm clip 1.0, batch 32.

Study 2 (``--study cells``): LSTM, iRNN (K = 1, eta per step and time, init 0.01) and TARNN (b-variant, K = 1,
step table per time) at the same hidden size, T = ``--cell-seq-len``, same batches and optimizer, by BPTT.

Everything runs through ``lightning.Trainer`` with ``modules.sequence_model.SequenceModel`` /
``modules.fptt.FPTTSequenceModel`` and ``datamodules.sequence_tasks.AddingTaskDataModule`` (fresh training
sequences for every batch; 1000 val and 1000 test sequences). The reported number is the test MSE after the
last batch. Chance (predicting 1) is 1/6 = 0.167.

Goals fixed in advance (the issue's): at T = 500, FPTT mean test MSE <= 0.05 and BPTT >= 0.15; iRNN and TARNN
beat the LSTM at equal hidden size: ``benchmarks.seeds.compare`` on -MSE with margin 0, paired by seed, 3 seeds
(``min_seeds=3``, the issue's number).

The committed results (each run writes ``results/rnn_adding_runs/<name>.json`` when it finishes; existing ones
are skipped, ``--only`` picks runs, so runs can be spread over processes) came from, on cpu2 under heavy load::

    python -m benchmarks.rnn_adding run --study fptt --seq-lens 500 --steps 3500   # ~50 min/run under load
    python -m benchmarks.rnn_adding run --study fptt --seq-lens 200 --steps 2000
    python -m benchmarks.rnn_adding run --study cells --cell-seq-len 100 --steps 1500
    python -m benchmarks.rnn_adding summary                                        # results/rnn_adding.md, .json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "results" / "rnn_adding_runs"
CHANCE = 1.0 / 6.0


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs of ``--study`` (``fptt``: LSTM by FPTT and BPTT at each of ``--seq-lens``; ``cells``: each of
    ``--cells`` by BPTT at ``--cell-seq-len``), ``--seeds`` seeds each, ``--steps`` batches each."""
    runs = []
    if args.study == "fptt":
        for seq_len in args.seq_lens:
            for seed in range(args.seeds):
                for method in ("fptt", "bptt"):
                    runs.append({"study": "fptt", "cell": "lstm", "method": method, "seq_len": seq_len, "seed": seed})
    else:
        for seed in range(args.seeds):
            for cell in args.cells:
                runs.append({"study": "cells", "cell": cell, "method": "bptt", "seq_len": args.cell_seq_len,
                             "seed": seed})
    for r in runs:
        r.update(hidden=args.hidden, steps=args.steps, batch=args.batch, epoch_batches=args.epoch_batches, lr=args.lr,
                 alpha=args.alpha, reset=not args.no_reset)
        r["name"] = (f"{r['cell']}_{r['method']}_T{r['seq_len']}_h{r['hidden']}_n{r['steps']}"
                     f"{variant(r, hidden=False)}_s{r['seed']}")
    return runs


DEFAULTS = {"hidden": 64, "batch": 32, "epoch_batches": 500, "lr": 1e-3, "alpha": 0.5, "reset": True}

# Configurations pre-registered after the first study (each in a committed file written before its runs): the
# variant suffix of their run names, the batches, the seeds that enter the goal (a pilot seed that led to the
# settings, ``pilot_seeds``, is shown but never counted) and the file.
PREREGISTERED = [
    {"label": "b128", "variant": "_h128_b128_e2400_lr0.003_a1e-06_noreset", "steps": 2400, "seeds": (1, 2, 3),
     "pilot_seeds": (0,), "file": "results/rnn_adding_t500_b128.prereg.md"},
]


def prereg_goal(groups: dict[str, list[dict[str, Any]]], cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The T = 500 goal (FPTT mean test MSE <= 0.05 and BPTT mean >= 0.15) on a pre-registered configuration,
    over its registered seeds only; ``met`` needs every registered seed of both methods."""
    out: dict[str, Any] = {"label": cfg["label"], "seeds": list(cfg["seeds"])}
    for method in ("fptt", "bptt"):
        rows = groups.get(f"lstm_{method}_T500_n{cfg['steps']}{cfg['variant']}", [])
        out[method] = {r["seed"]: r["test_mse"] for r in rows if r["seed"] in cfg["seeds"]}
    if not out["fptt"] and not out["bptt"]:
        return None
    complete = all(len(out[m]) == len(cfg["seeds"]) for m in ("fptt", "bptt"))
    out["fptt_mean"] = sum(out["fptt"].values()) / len(out["fptt"]) if out["fptt"] else None
    out["bptt_mean"] = sum(out["bptt"].values()) / len(out["bptt"]) if out["bptt"] else None
    out["complete"] = complete
    out["met"] = bool(complete and out["fptt_mean"] <= 0.05 and out["bptt_mean"] >= 0.15)
    return out


def variant(r: dict[str, Any], hidden: bool = True) -> str:
    """'' for the study's settings (hidden 64, batch 32, 500-batch epochs, Adam 1e-3, FPTT alpha 0.5 with the
    epoch-end W <- W_bar), else a suffix naming the settings that differ (pilots: kept apart from the study's
    groups and out of its goals). Runs written before a setting was recorded had its default."""
    cfg = {k: r.get(k, v) for k, v in DEFAULTS.items()}
    if cfg == DEFAULTS:
        return ""
    tags = {"hidden": "h", "batch": "b", "epoch_batches": "e", "lr": "lr"}
    out = [f"{tags[k]}{cfg[k]:g}" for k in tags if hidden or k != "hidden"]
    if cfg["alpha"] != DEFAULTS["alpha"]:
        out.append(f"a{cfg['alpha']:g}")
    if not cfg["reset"]:
        out.append("noreset")
    return "_" + "_".join(out)


def settings_label(r: dict[str, Any]) -> str:
    """The table's settings column: 'study', 'prereg <label> (seed 0 = pilot)' or 'pilot: <settings>'."""
    v = variant(r)
    if not v:
        return "study"
    for cfg in PREREGISTERED:
        if v == cfg["variant"] and r["steps"] == cfg["steps"]:
            return (f"prereg {cfg['label']} ({v[1:].replace('_', ' ')}); goal seeds {', '.join(map(str, cfg['seeds']))}"
                    + "".join(f", seed {s} = pilot" for s in cfg["pilot_seeds"]))
    return "pilot: " + v[1:].replace("_", " ")


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    import lightning.pytorch as pl

    from datamodules.sequence_tasks import AddingTaskDataModule
    from modules.fptt import FPTTSequenceModel
    from modules.sequence_model import SequenceModel

    pl.seed_everything(cfg["seed"], verbose=False)
    T = cfg["seq_len"]
    dm = AddingTaskDataModule(seq_len=T, train_size=cfg["epoch_batches"] * cfg["batch"], val_size=1000,
                              test_size=1000, batch_size=cfg["batch"], seed=cfg["seed"])
    common = dict(cell=cfg["cell"], hidden_size=cfg["hidden"], task="regression", num_classes=1, input_shape=(T, 2),
                  gradient_clip_val=1.0)
    if cfg["cell"] == "irnn":
        common["cell_kwargs"] = {"num_steps": 1, "eta_mode": "step_time", "eta_init": 0.01}
    if cfg["cell"] == "tarnn":
        common["cell_kwargs"] = {"num_steps": 1, "variant": "b", "step_mode": "time"}
    lr = cfg.get("lr", DEFAULTS["lr"])
    common["optimizer"] = lambda params: torch.optim.Adam(params, lr=lr)
    if cfg["method"] == "fptt":
        model = FPTTSequenceModel(parts=10, alpha=cfg.get("alpha", DEFAULTS["alpha"]), beta=0.5, reg_scale=1.0,
                                  reset_to_average=cfg.get("reset", DEFAULTS["reset"]), **common)
    else:
        model = SequenceModel(**common)
    curve: list[tuple[int, float]] = []

    class Curve(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                curve.append((trainer.global_step, float(trainer.callback_metrics["val/mse"])))

    trainer = pl.Trainer(max_steps=cfg["steps"], accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[Curve()])
    start = time.perf_counter()
    trainer.fit(model, dm)
    train_s = time.perf_counter() - start
    test = trainer.test(model, dm, verbose=False)[0]
    return {**cfg, "test_mse": float(test["test/mse"]), "val_curve": curve, "train_seconds": round(train_s, 1),
            "global_step": trainer.global_step, "machine": "cpu2 (2 shared cores)",
            "torch": torch.__version__, "python": platform.python_version()}


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    RUNS.mkdir(parents=True, exist_ok=True)
    runs = plan(args)
    mine = [r for i, r in enumerate(runs) if i % args.queues == args.queue]
    if args.only:
        mine = [r for r in mine if args.only in r["name"]]
    for cfg in mine:
        path = RUNS / f"{cfg['name']}.json"
        if path.exists():
            continue
        print(time.strftime("%H:%M:%S"), "start", cfg["name"], flush=True)
        result = run_one(cfg)
        path.write_text(json.dumps(result, indent=1))
        print(time.strftime("%H:%M:%S"), "done", cfg["name"], result["test_mse"], result["train_seconds"], flush=True)


def _collect() -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        groups.setdefault(f"{r['cell']}_{r['method']}_T{r['seq_len']}_n{r['steps']}{variant(r)}", []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r["seed"])
    return groups


def cmd_summary(args: argparse.Namespace) -> None:
    from benchmarks.seeds import compare, mean_ci

    groups = _collect()
    lines = ["# Adding task on CPU: FPTT vs BPTT (LSTM) and iRNN / TARNN vs LSTM", "",
             "Produced by `python -m benchmarks.rnn_adding run` (two queues) then `python -m benchmarks.rnn_adding "
             "summary`; machine cpu2 (2 shared cores), one thread per run. Test MSE on 1000 fresh sequences after "
             "the last batch (chance 0.167). Same number of batches for every method (one batch = one step), "
             "batch 32, Adam 1e-3, clip 1.0; FPTT: P = 10, alpha = beta = 0.5, c = 1, W <- W_bar every epoch of "
             f"{args.epoch_batches} batches. 95% Student-t intervals over seeds.", "",
             "| model | method | T | hidden | batches | seeds | test MSE per seed | mean [95% CI] | train s/run | "
             "settings |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {"groups": {}, "goals": {}}
    for key, rows in sorted(groups.items()):
        mses = [r["test_mse"] for r in rows]
        ci = mean_ci(mses) if len(mses) > 1 else None
        r0 = rows[0]
        summary["groups"][key] = {"test_mse": mses, "seeds": [r["seed"] for r in rows],
                                  "mean": sum(mses) / len(mses), "ci": None if ci is None else [ci.low, ci.high],
                                  "steps": r0["steps"], "hidden": r0["hidden"]}
        ci_text = f"{sum(mses) / len(mses):.4f}" + ("" if ci is None else f" [{ci.low:.4f}, {ci.high:.4f}]")
        lines.append(f"| {r0['cell']} | {r0['method']} | {r0['seq_len']} | {r0['hidden']} | {r0['steps']} | "
                     f"{len(rows)} | {', '.join(f'{m:.4f}' for m in mses)} | {ci_text} | "
                     f"{sum(r['train_seconds'] for r in rows) / len(rows):.0f} | "
                     f"{settings_label(r0)} |")
    lines += ["", "## Goals (fixed in advance)", ""]

    def find(cell: str, method: str, seq_len: int, steps: int | None = None) -> list[dict[str, Any]]:
        keys = [k for k in groups if k.startswith(f"{cell}_{method}_T{seq_len}_n")
                and (steps is None or k.endswith(f"_n{steps}")) and not variant(groups[k][0])]
        return groups[keys[0]] if len(keys) == 1 else []

    def budgets(method: str, seq_len: int) -> set[int]:
        return {r["steps"] for k, rows in groups.items() if k.startswith(f"lstm_{method}_T{seq_len}_n")
                for r in rows if not variant(r)}

    # the goal compares FPTT and BPTT at the same number of batches: the largest budget both were run at
    common = budgets("fptt", 500) & budgets("bptt", 500)
    n500 = max(common) if common else None
    f500, b500 = (find("lstm", "fptt", 500, n500), find("lstm", "bptt", 500, n500)) if n500 else ([], [])
    if f500 and b500:
        fm = sum(r["test_mse"] for r in f500) / len(f500)
        bm = sum(r["test_mse"] for r in b500) / len(b500)
        ok = fm <= 0.05 and bm >= 0.15
        summary["goals"]["T500_fptt_le_0.05_bptt_ge_0.15"] = {"fptt_mean": fm, "bptt_mean": bm, "met": ok,
                                                              "seeds": [len(f500), len(b500)]}
        lines.append(f"* T = 500, {n500} batches: FPTT mean test MSE {fm:.4f} over {len(f500)} seeds (goal <= 0.05), BPTT {bm:.4f} "
                     f"over {len(b500)} seeds (goal >= 0.15): **{'met' if ok else 'not met'}**.")
    for cfg in PREREGISTERED:
        g = prereg_goal(groups, cfg)
        if g is None:
            continue
        summary["goals"][f"T500_{cfg['label']}_fptt_le_0.05_bptt_ge_0.15"] = {
            k: ({str(s): v for s, v in val.items()} if isinstance(val, dict) else val) for k, val in g.items()}
        per = "; ".join(f"{m.upper()} " + ", ".join(f"s{s} {v:.4f}" for s, v in sorted(g[m].items()))
                        for m in ("fptt", "bptt") if g[m])
        means = ", ".join(f"{m.upper()} mean {g[m + '_mean']:.4f}" for m in ("fptt", "bptt") if g[m])
        verdict = ("met" if g["met"] else "not met") if g["complete"] else "incomplete, not decided"
        lines.append(f"* T = 500, configuration {cfg['label']} (pre-registered in `{cfg['file']}`; {cfg['steps']} "
                     f"batches; seeds {', '.join(map(str, cfg['seeds']))} only): {per}; {means} (goal FPTT <= 0.05, "
                     f"BPTT >= 0.15): **{verdict}**.")
    lstm = find("lstm", "bptt", args.cell_seq_len)
    for cell in ("irnn", "tarnn"):
        rows = find(cell, "bptt", args.cell_seq_len)
        seeds = sorted({r["seed"] for r in rows} & {r["seed"] for r in lstm})
        if len(seeds) < 2:
            continue
        a = [-next(r["test_mse"] for r in rows if r["seed"] == s) for s in seeds]
        b = [-next(r["test_mse"] for r in lstm if r["seed"] == s) for s in seeds]
        try:
            c = compare(a, b, margin=0.0, min_seeds=min(3, len(seeds)), names=(f"-MSE {cell}", "-MSE lstm"))
            met = c.beats(0.0)
            text = str(c)
        except ValueError as err:
            met, text = False, f"not decided ({err})"
        summary["goals"][f"{cell}_beats_lstm_T{args.cell_seq_len}"] = {"met": met, "comparison": text}
        lines.append(f"* {cell} beats the LSTM at T = {args.cell_seq_len}, hidden {rows[0]['hidden']} (paired, "
                     f"margin 0, {len(seeds)} seeds): {text} -> **{'met' if met else 'not met'}**.")
    lines += ["", "## Notes", "",
              "* Budget: a run sees batches x 32 training sequences (e.g. 3500 x 32 = 112,000 at T = 500); the "
              "release's runner trains 10,000 batches of 128 (1.28 M sequences), so a method that needs longer to "
              "leave the 0.167 plateau shows chance-level MSE here.",
              "* `train s/run` is wall time on cpu2 shared by five agents (load average 6 to 24 during the study): "
              "not a speed comparison (see results/rnn_memory.md for FPTT vs BPTT time).",
              "* A group with fewer than 3 seeds lost its other runs to the session's deadline, not to a selection.",
              "* Longer pilot (session 3, idle core, `python -m benchmarks.rnn_adding run --study fptt --seq-lens 500 "
              "--steps 10000 --seeds 1 --only fptt`): one FPTT run at T = 500 with 10,000 batches of 32 (seed 0) "
              "ended at test MSE 0.1616; its validation MSE stayed between 0.167 and 0.178 at every one of its 20 "
              "checks, so the budget alone (2.9x the study's) does not move FPTT off the plateau here. No BPTT run at "
              "that budget, so it enters no goal; the release's runner still sees 4x more sequences (batch 128).",
              "* Sanity check at T = 50 (session 3, `python -m benchmarks.rnn_adding run --study fptt --seq-lens 50 "
              "--steps 3000 --seeds 3`): both methods leave the plateau within 3000 batches (rows T = 50 above), so "
              "the FPTT training loop learns the task where the budget suffices; FPTT's validation MSE is less "
              "steady (seed 0: 0.046 at 2000 batches, 0.116 at 2500, 0.062 at 3000; whether the epoch-end "
              "W <- W_bar reset causes the rises was not isolated) and BPTT ends lower at this short T.",
              "* Pilots (session 4, rows marked `pilot`, seed 0, one core shared with two other jobs, so `train s/run` "
              "is not a speed figure): three FPTT settings at T = 500 chosen to remove suspected obstacles, each "
              "with no W <- W_bar reset during the run (one epoch): batch 32 / hidden 64 for 2000 batches; batch 128 / "
              "hidden 128 (the release runner's batch and width) for 1000 batches, at Adam 1e-3 and at 3e-3 (the "
              "default of the third-party sFPTT adding-task script). All three ended at 0.163-0.164, i.e. on the "
              "plateau. For scale: the sFPTT log `lstm_500_fptt.txt` (LSTM-128, batch 128, "
              "docs/fptt.md#published-numbers) leaves the plateau after roughly 580 of its 10,000 steps, well inside 1000 batches; whether "
              "that log comes from an FPTT with the regulariser (the release's adding-task path has none, section "
              "6.6) is not known. Command for the third, e.g.: `python -m benchmarks.rnn_adding run --study fptt "
              "--seq-lens 500 --steps 1000 --batch 128 --hidden 128 --epoch-batches 1000 --lr 3e-3 --seeds 1 "
              "--only fptt` (the pilots ran the same `run_one` from a script before `--lr` existed).",
              "* Two more pilots (session 4, batch 128 / hidden 128, 1000 batches, lr 1e-3, no W <- W_bar reset at all): "
              "alpha = 1e-6, i.e. the regulariser off (plain truncated training with window losses, what the "
              "release's adding-task path does, docs/fptt.md#differences-from-the-released-code), ended at 0.1647; alpha = 0.1 (the "
              "MNIST setting) at 0.1624. Neither the regulariser nor the reset is what keeps our LSTM on the "
              "plateau at this budget: even the release-equivalent path does not leave it within 1000 batches, "
              "unlike the sFPTT log. Command, e.g.: `python -m benchmarks.rnn_adding run --study fptt --seq-lens 500 "
              "--steps 1000 --batch 128 --hidden 128 --epoch-batches 1000 --alpha 0.1 --no-reset --seeds 1 --only "
              "fptt`.",
              "* Last pair of pilots (session 4, the two side by side, one per core): FPTT (alpha 0.5, no reset) and "
              "BPTT at batch 128 / hidden 128 for 1800 batches (230,400 sequences, 3x the sFPTT log's escape point): "
              "0.1616 and 0.1616, both on the plateau (`python -m benchmarks.rnn_adding run --study fptt --seq-lens "
              "500 --steps 1800 --batch 128 --hidden 128 --epoch-batches 1800 --no-reset --seeds 1`; `noreset` in "
              "the BPTT run's name has no effect on BPTT).",
              "* Configuration b128 (sessions 5-6): the session-5 pilot (seed 0: FPTT 0.0067, BPTT 0.1619) led to a "
              "pre-registered study on fresh seeds 1-3 (`results/rnn_adding_t500_b128.prereg.md`, committed before "
              "its runs): LSTM-128, batch 128, Adam 3e-3, clip 1, 2400 batches, FPTT with alpha 1e-6 (the "
              "regulariser off, as the release's adding path runs) and no W <- W_bar reset. Its goal line above "
              "uses seeds 1-3 only; the table row also shows the pilot seed. With alpha ~0 this is windowed "
              "training (one Adam step per window, state carried across windows, gradient cut at window edges) "
              "against full BPTT through 500 steps: the gain comes from the windows and lr 3e-3, not from the FPTT "
              "regulariser, which was not tested at lr 3e-3. Commands: `python -m benchmarks.rnn_adding run "
              "--study fptt --seq-lens 500 --steps 2400 --batch 128 --hidden 128 --epoch-batches 2400 --lr 3e-3 "
              "--alpha 1e-6 --no-reset --seeds 4 --only fptt_` and the same with `--only bptt_` (one process per "
              "core; about 45 min per run with two other jobs on the 2 cores)."]
    (REPO / "results" / "rnn_adding.md").write_text("\n".join(lines) + "\n")
    (REPO / "results" / "rnn_adding.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "summary", "plan"))
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--queues", type=int, default=1)
    parser.add_argument("--only", default="", help="run only runs whose name contains this")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3500, help="batches per run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epoch-batches", type=int, default=500, help="batches per epoch (FPTT resets W <- W_bar)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--alpha", type=float, default=0.5, help="FPTT alpha (regulariser strength)")
    parser.add_argument("--no-reset", action="store_true", help="FPTT without the epoch-end W <- W_bar")
    parser.add_argument("--study", choices=("fptt", "cells"), default="fptt")
    parser.add_argument("--seq-lens", type=lambda v: [int(t) for t in v.split(",")], default=[500, 200])
    parser.add_argument("--cells", type=lambda v: v.split(","), default=["lstm", "irnn", "tarnn"])
    parser.add_argument("--cell-seq-len", type=int, default=100)
    args = parser.parse_args(argv)
    if args.command == "plan":
        for r in plan(args):
            print(r["name"])
    elif args.command == "run":
        cmd_run(args)
    else:
        cmd_summary(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
