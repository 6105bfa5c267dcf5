"""Training memory and time per sequence of FPTT (P = 10 windows) vs full BPTT at T = 1000 (docs/fptt.md).

Model and data: ``modules.fptt.FPTTSequenceModel`` / ``modules.sequence_model.SequenceModel`` with an LSTM
(hidden ``--hidden``, default 128), the adding task (``datamodules.sequence_tasks.AddingTaskDataModule``) at
T = ``--seq-len`` (1000), batch ``--batch`` (32), Adam, clip 1.0, run by ``lightning.Trainer`` on CPU, one thread.

Measures, per method, each in a fresh subprocess (so process-memory peaks do not mix):

* **saved-tensor bytes**: the peak over the training step of the bytes of tensors *alive* in autograd graphs,
  counted with ``torch.autograd.graph.saved_tensors_hooks``: every saved tensor is wrapped in a holder whose
  deletion (when the window's graph is freed by its backward) releases its bytes; storages are de-duplicated and
  parameter storages excluded (they exist anyway). Also the total packed over the step;
* **process memory growth**: peak RSS (``ru_maxrss``) after the first training step minus the peak before it;
* **time per sequence**: median over ``--steps`` batches (after one warm-up batch) of the batch time / batch size.
  BPTT and FPTT subprocesses alternate ``--repeats`` times and the medians of all their batches are reported,
  so load changes on a shared machine hit both alike.

Goal fixed in advance (issue 6, item 7): FPTT saved-tensor peak <= 0.2x BPTT's, time per sequence <= 1.2x.

Usage::

    python -m benchmarks.rnn_memory            # writes results/rnn_memory.json and .md (about 5 min under load)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    REPO,
    command_line,
    machine_info,
    quiet_trainer,
    write_report,
)


class SavedTensorMeter:
    """Peak bytes of live tensors saved for backward (de-duplicated by storage, ``exclude`` storages skipped)."""

    def __init__(self, exclude: list[torch.Tensor]) -> None:
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.refs: dict[int, list[int]] = {}  # storage ptr -> [bytes, holders alive]
        self.live = 0
        self.peak = 0
        self.packed = 0

    def _release(self, key: int) -> None:
        entry = self.refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.refs[key]

    def pack(self, t: torch.Tensor) -> Any:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude or t.device.type == "meta":
            return t
        holder = _Holder(t)
        entry = self.refs.setdefault(key, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.live += entry[0]
            self.packed += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(holder, self._release, key)
        return holder

    @staticmethod
    def unpack(obj: Any) -> torch.Tensor:
        return obj.t if isinstance(obj, _Holder) else obj

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Holder:
    __slots__ = ("t", "__weakref__")

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One subprocess' worth: memory of the first training batch, then times of ``args.steps`` batches."""
    import warnings

    import lightning.pytorch as pl

    from datamodules.sequence_tasks import AddingTaskDataModule
    from modules.fptt import FPTTSequenceModel
    from modules.sequence_model import SequenceModel

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    T = args.seq_len
    common = dict(cell="lstm", hidden_size=args.hidden, task="regression", num_classes=1, input_shape=(T, 2))
    model = (FPTTSequenceModel(parts=args.parts, alpha=0.5, beta=0.5, **common) if method == "fptt"
             else SequenceModel(**common))
    dm = AddingTaskDataModule(seq_len=T, train_size=(args.steps + 1) * args.batch, batch_size=args.batch)
    out: dict[str, Any] = {"method": method, "times": []}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.meter = SavedTensorMeter(list(pl_module.parameters()))
                self.ctx = self.meter.hooks()
                self.ctx.__enter__()
                out["rss_before"] = _maxrss()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            dt = time.perf_counter() - self.t0
            if batch_idx == 0:
                self.ctx.__exit__(None, None, None)
                out["rss_growth_bytes"] = _maxrss() - out["rss_before"]
                out["saved_peak_bytes"] = self.meter.peak
                out["saved_total_bytes"] = self.meter.packed
            else:
                out["times"].append(dt / args.batch)

    trainer = quiet_trainer(max_steps=args.steps + 1, accelerator="cpu", devices=1, limit_val_batches=0,
                            callbacks=[Probe()])
    trainer.fit(model, dm)
    return out


def _fmt_mb(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4, help="timed batches per subprocess")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("bptt", "fptt"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(REPO / "results" / "rnn_memory.json"))
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args)))
        return
    machine = machine_info(1)  # the subprocesses run one thread each
    runs: dict[str, list[dict[str, Any]]] = {"bptt": [], "fptt": []}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for r in range(args.repeats):
        for method in ("bptt", "fptt") if r % 2 == 0 else ("fptt", "bptt"):
            cmd = [sys.executable, "-m", "benchmarks.rnn_memory", "--child", method, "--seq-len", str(args.seq_len),
                   "--hidden", str(args.hidden), "--batch", str(args.batch), "--parts", str(args.parts),
                   "--steps", str(args.steps)]
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
            runs[method].append(json.loads(line[len("RESULT "):]))
            print(method, runs[method][-1]["saved_peak_bytes"], statistics.median(runs[method][-1]["times"]),
                  flush=True)
    summary: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
                               "command": command_line("benchmarks.rnn_memory", argv), "machine": machine,
                               "methods": {}}
    for method, rs in runs.items():
        times = [t for r in rs for t in r["times"]]
        summary["methods"][method] = {
            "saved_peak_bytes": statistics.median(r["saved_peak_bytes"] for r in rs),
            "saved_total_bytes": statistics.median(r["saved_total_bytes"] for r in rs),
            "rss_growth_bytes": statistics.median(r["rss_growth_bytes"] for r in rs),
            "seconds_per_sequence_median": statistics.median(times),
            "seconds_per_sequence_all": times,
        }
    b, f = summary["methods"]["bptt"], summary["methods"]["fptt"]
    mem_ratio = f["saved_peak_bytes"] / b["saved_peak_bytes"]
    rss_ratio = f["rss_growth_bytes"] / b["rss_growth_bytes"] if b["rss_growth_bytes"] else float("nan")
    time_ratio = f["seconds_per_sequence_median"] / b["seconds_per_sequence_median"]
    summary["ratios"] = {"saved_peak": mem_ratio, "rss_growth": rss_ratio, "time": time_ratio}
    summary["goals"] = {"memory_le_0.2x": mem_ratio <= 0.2, "time_le_1.2x": time_ratio <= 1.2}
    c = summary["config"]
    lines = [
        f"# FPTT ({c['parts']} windows) vs BPTT: training memory and time at T = {c['seq_len']}", "",
        f"LSTM hidden {c['hidden']}, adding task, batch {c['batch']}, Adam, clip 1.0; Lightning manual optimisation "
        "(`modules.fptt.FPTTSequenceModel` vs `modules.sequence_model.SequenceModel`), 1 thread; "
        f"{c['repeats']} alternating subprocesses per method, {c['steps']} timed batches each (the machine and its "
        "load average at the start and the end are given below).", "",
        "| measure | BPTT | FPTT | FPTT / BPTT | goal |", "|---|---|---|---|---|",
        f"| peak bytes saved for backward (live, parameters excluded) | {_fmt_mb(b['saved_peak_bytes'])} | "
        f"{_fmt_mb(f['saved_peak_bytes'])} | {mem_ratio:.3f} | <= 0.2: **{'met' if mem_ratio <= 0.2 else 'not met'}** |",
        f"| total bytes packed over the step | {_fmt_mb(b['saved_total_bytes'])} | {_fmt_mb(f['saved_total_bytes'])} "
        f"| {f['saved_total_bytes'] / b['saved_total_bytes']:.3f} | |",
        f"| process peak-RSS growth over the pre-step peak | {_fmt_mb(b['rss_growth_bytes'])} | "
        f"{_fmt_mb(f['rss_growth_bytes'])} | {rss_ratio:.3f} | |",
        f"| time per sequence (median) | {b['seconds_per_sequence_median'] * 1e3:.2f} ms | "
        f"{f['seconds_per_sequence_median'] * 1e3:.2f} ms | {time_ratio:.3f} | <= 1.2: "
        f"**{'met' if time_ratio <= 1.2 else 'not met'}** |", "",
        "Peak saved bytes: storages alive in autograd graphs, released when a window's backward frees its graph "
        "(FPTT keeps one window's graph at a time). RSS growth includes allocator effects (glibc keeps freed "
        "memory), so it is an upper-bound style measure; the saved-tensor measure is the goal's.",
    ]
    out = Path(args.out)
    write_report(out.stem, summary, "\n".join(lines), out.parent)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
