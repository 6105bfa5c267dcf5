"""Shared harness: run main.py under real DDP on 2 CPU processes (gloo backend, one thread each).

Lightning's own launcher starts the second rank as a subprocess of main.py, so pytest is not re-run per rank.
Technique tests reuse ``run_ddp``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_ddp(args: list[str], runs_root: str | os.PathLike, devices: int = 2, timeout: int = 240,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs ``python main.py <args>`` with ``--trainer.strategy=ddp`` on ``devices`` CPU processes.

    Raises AssertionError with the run's output when it fails.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "PYTHONPATH": str(REPO), **(extra_env or {})}
    env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "main.py", *args, "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
           f"--trainer.devices={devices}", f"--runs_root={runs_root}", "--trainer.enable_progress_bar=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"DDP run failed ({proc.returncode}): {' '.join(cmd)}\n"
                             f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc
