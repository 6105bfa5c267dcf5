"""Shared pieces of the benchmarks: a quiet Lightning ``Trainer``, a synchronised step timer, the machine detected
at run time (CPU model, logical CPUs, GPU, library versions, load average) and a report writer that puts
``results/<name>.json`` and ``results/<name>.md`` side by side with the command, the machine and the load.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's INFO banners and the warnings that are expected in benchmarks (no val loader, ...)."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*validation_step.*val_dataloader.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*litlogger.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def quiet_trainer(**kwargs: Any) -> Any:
    """A ``lightning.Trainer`` without logger, checkpoints, progress bar, model summary or sanity check (each can
    be turned back on through ``kwargs``)."""
    import lightning.pytorch as pl

    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
               "enable_model_summary": False, "num_sanity_val_steps": 0, **kwargs}
    with quiet_lightning():
        return pl.Trainer(**options)


def prepare_torch(threads: int | None, device: str) -> None:
    """A benchmark's torch settings: ``threads`` CPU threads where given; cuDNN's autotuner on CUDA (as a
    training run there would have it)."""
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True


def synchronize(device: torch.device | str | None) -> None:
    """Waits for queued GPU work (a no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _is_last_step(trainer: Any) -> bool:
    """Whether the batch that just ended is the fit's last one (``max_steps`` reached, or the last batch of the
    last epoch)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    return bool(trainer.is_last_batch and max_epochs is not None and max_epochs > 0
                and trainer.current_epoch >= max_epochs - 1)


def step_timer(warmup: int) -> Any:
    """A Lightning callback timing from the start of training batch ``warmup`` (after its batch was fetched and
    moved to the device) to the end of the last batch. On CUDA it synchronises at those two points only: a
    synchronisation after every step would keep the host from queueing the next step while the GPU runs this one,
    a cost the plain loop it is compared with does not pay. A fit stopped before its last step (early stopping)
    is synchronised when training ends."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.warmup = warmup
            self.start: float | None = None
            self.end: float | None = None
            self.synced_end = False
            self.steps = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == self.warmup and self.start is None:
                synchronize(pl_module.device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.start is not None:
                self.steps += 1
                self.synced_end = _is_last_step(trainer)
                if self.synced_end:
                    synchronize(pl_module.device)
                self.end = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            if self.start is not None and not self.synced_end:
                synchronize(pl_module.device)
                self.end, self.synced_end = time.perf_counter(), True

        @property
        def seconds(self) -> float:
            if self.start is None or self.end is None:
                raise RuntimeError(f"the run ended before step {self.warmup}: nothing was timed")
            return self.end - self.start

    return StepTimer()


def epoch_timer() -> Any:
    """A Lightning callback recording the wall time and the batch count of every training epoch, synchronised on
    CUDA at the epoch's start and end only (the epoch's data loading, augmentation and every callback included)."""
    import lightning.pytorch as pl

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            self._start = 0.0
            self._batches = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            synchronize(pl_module.device)
            self._start, self._batches = time.perf_counter(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._batches += 1

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            synchronize(pl_module.device)
            self.epochs.append({"seconds": time.perf_counter() - self._start, "batches": self._batches})

    return EpochTimer()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(threads: int | None = None, device: str | None = None) -> dict[str, Any]:
    """What the numbers were measured on, detected now: never written by hand."""
    import lightning

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "loadavg_at_start": load_average(),
        "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))},
    }
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """``python -m <module> <args>`` as it was given (``argv`` None: this process's own arguments)."""
    given = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, shlex.join(given)]).strip()


def machine_lines(machine: dict[str, Any]) -> list[str]:
    """The machine block of a markdown report."""
    load = machine.get("loadavg_at_start")
    lines = [
        f"- platform: {machine['platform']}",
        f"- CPU: {machine['cpu']} ({machine['logical_cpus']} logical CPUs"
        + (f"; load average at start {', '.join(f'{x:.2f}' for x in load)}" if load else "") + ")",
    ]
    if machine.get("gpu"):
        lines.append(f"- GPU: {machine['gpu']} ({machine['gpu_memory_gib']} GiB), CUDA {machine['cuda']}")
    lines.append(f"- python {machine['python']}, torch {machine['torch']}, lightning {machine['lightning']}, "
                 f"torch threads {machine['torch_threads']}")
    return lines


def write_report(name: str, report: dict[str, Any], markdown: str, out_dir: str | os.PathLike | None = None,
                 ) -> tuple[Path, Path]:
    """Writes ``<out_dir>/<name>.json`` (``report``) and ``<name>.md`` (``markdown`` followed by the command, the
    date, the machine and the load average at the end); returns both paths. ``report`` must hold ``command`` and
    ``machine`` (:func:`machine_info`); the load average at the end is added to it."""
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    report.setdefault("date", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    report["machine"]["loadavg_at_end"] = load_average()
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    end = report["machine"]["loadavg_at_end"]
    tail = ["", "Command:", "", "```", report["command"], "```", "", f"Date: {report['date']}", "", "Machine:", "",
            *machine_lines(report["machine"])]
    if end:
        tail.append(f"- load average at end {', '.join(f'{x:.2f}' for x in end)}")
    md_path.write_text(markdown.rstrip("\n") + "\n" + "\n".join(tail) + "\n")
    return json_path, md_path
