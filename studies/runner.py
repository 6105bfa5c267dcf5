"""Plans, checks and launches the runs of a study; every run is a real ``main.py fit`` (then ``test`` / ``report``).

The job that a launcher submits is :func:`run_job`: it calls ``main.cli_main`` once per subcommand, in the process
the executor gives it (a subprocess for submitit's LocalExecutor and SLURM executors, this process for its
DebugExecutor). The runner decides what to submit from the files the runs leave:

* ``<run_dir>/run.json`` (written by main.py): the run's identity, compared with the planned one
  (``main.planned_run`` + ``main.identity_diff``); a difference is refused, never mixed;
* ``<run_dir>/metrics/<fit|test|report>.json``: present when that step finished; a run is finished when the
  files of all its steps are;
* ``<run_dir>/study_run.json`` (written here): which study, stage, axis values and seed own the directory, and
  the wall and CPU seconds of every step that ran.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from studies.spec import Run, Study, StudyError, as_cli_value

STUDY_MARK = "study.json"  # at <runs_root>/<study>/: which study file owns the folder
RUN_MARK = "study_run.json"  # in every run directory
REQUEUING = False  # set by studies.slurm.StudyJob.checkpoint when submitit requeues the job (its exit passes through)


# ------------------------------------------------------------------------------------------------ planning
@dataclass
class PlannedRun:
    run: Run
    run_dir: Path
    steps: list[str]  # subcommands, e.g. ["fit", "test"]
    args: dict[str, list[str]]  # subcommand -> main.py arguments
    upstream: list[str]  # run keys this run starts from
    budget_min: float
    state: str = "pending"  # finished | partial | pending
    todo: list[str] = field(default_factory=list)  # the steps still to run


def study_root(study: Study, runs_root: str | Path) -> Path:
    return Path(runs_root) / study.name


def _upstream_ckpt(study: Study, run: Run, stage: str, runs_root: Path) -> Path:
    return study_root(study, runs_root) / study.upstream_run(run, stage).key / "checkpoints" / "last.ckpt"


def _base_args(study: Study, run: Run, runs_root: Path) -> list[str]:
    stage = study.stages[run.stage]
    args = ["--config", stage.recipe, "--runs_root", str(study_root(study, runs_root)), "--run_name", run.key]
    for key, value in study.overrides(run).items():
        args.append(f"--{key}={as_cli_value(value)}")
    links = ([("init_from", stage.init_from)] if stage.init_from and stage.fit else []) + list(stage.checkpoints.items())
    for key, up in links:
        args.append(f"--{key}={_upstream_ckpt(study, run, up, runs_root)}")
    return args


def _wandb_args(study: Study, run: Run) -> list[str]:
    tags = [study.name, run.stage, f"seed={run.seed}"] + [f"{a}={v}" for a, v in run.axes]
    return ["--wandb_group", study.name, "--wandb_job_type", run.stage, "--wandb_tags", json.dumps(tags)]


def plan(study: Study, runs_root: str | Path, only: list[str] | None = None) -> list[PlannedRun]:
    """Every run's directory, arguments and steps, upstream stages first (nothing is read or written)."""
    runs_root = Path(runs_root)
    out = []
    for run in study.runs(only):
        base = _base_args(study, run, runs_root)
        steps = study.steps(run.stage)
        stage = study.stages[run.stage]
        # what validate/test evaluate: the run's own last.ckpt, or (fit: false) the init_from stage's
        weights = "last" if stage.fit else str(_upstream_ckpt(study, run, stage.init_from, runs_root))
        args = {}
        if stage.fit:
            args["fit"] = ["fit", *base, *_wandb_args(study, run), "--ckpt_path", "auto"]
        for step in ("validate", "test"):
            if step in steps:
                args[step] = [step, *base, *_wandb_args(study, run), "--ckpt_path", weights]
        run_dir = study_root(study, runs_root) / run.key
        if "report" in steps:  # the net as trained (pruned widths, a searched sub-network): from the checkpoint
            args["report"] = ["report", *base, "--json", str(run_dir / "metrics" / "report.json"),
                              "--ckpt_path", weights]
        if "export" in steps:  # ONNX, checked against eager PyTorch, its stored size and onnxruntime latency
            args["export"] = ["export", *base, "--ckpt_path", weights, "--format", "onnx",
                              "--latency", "true" if stage.export_latency else "false",
                              "--out", str(run_dir / "export" / "model.onnx"), "--overwrite", "true"]
        out.append(PlannedRun(run=run, run_dir=run_dir, steps=steps, args=args,
                              upstream=[study.upstream_run(run, up).key for up in stage.upstream],
                              budget_min=stage.budget_min))
    return out


# ------------------------------------------------------------------------------------------------ checking
def _mark(study: Study) -> dict[str, Any]:
    return {"study": study.name, "file": str(study.path)}


def check_study_root(study: Study, runs_root: str | Path) -> None:
    """Refuses a study folder that another study file made (same name, other file)."""
    mark = study_root(study, runs_root) / STUDY_MARK
    if not mark.is_file():
        return
    owner = json.loads(mark.read_text())
    if Path(owner.get("file", "")).resolve() != study.path.resolve():
        raise StudyError(
            f"The run folder {mark.parent} belongs to the study file {owner.get('file')} (see {mark}), not to "
            f"{study.path}, although both are named {study.name!r}. Nothing was run and nothing there was changed. "
            f"Give {study.path} another 'name', or run it with another --runs-root."
        )


def check_run(study: Study, p: PlannedRun) -> None:
    """Sets ``p.state`` and ``p.todo`` from the run directory; refuses a directory that another study or another
    configuration wrote."""
    import main

    owner_file = p.run_dir / RUN_MARK
    run_json = main.read_run_json(p.run_dir) if p.run_dir.exists() else None
    if owner_file.is_file():
        owner = json.loads(owner_file.read_text())
        mine = {"study": study.name, "stage": p.run.stage, "seed": p.run.seed, "axes": dict(p.run.axes)}
        theirs = {k: owner.get(k) for k in mine}
        if theirs != mine:
            raise StudyError(
                f"The run directory {p.run_dir} was written for {theirs} (see {owner_file}), not for {mine} of "
                f"{study.path}. Nothing was run and the directory was not changed. Move it aside or run the study "
                "with another --runs-root."
            )
    elif run_json is not None or (p.run_dir / "checkpoints").exists():
        raise StudyError(
            f"The run directory {p.run_dir} holds a run that this study runner did not start (it has no "
            f"{RUN_MARK}), e.g. a `main.py fit` with the same --runs_root/--run_name or another tool. Nothing was "
            f"run and the directory was not changed. Move it aside, or run {study.path} with another --runs-root."
        )
    planned = _planned_identity(study, p)
    recorded = run_json.get("identity", {}) if run_json is not None else None
    if recorded is None and owner_file.is_file():  # a fit: false run has no run.json: the runner recorded it
        recorded = json.loads(owner_file.read_text()).get("identity")
    if recorded is not None:
        diff = main.identity_diff(planned.identity, recorded)
        if diff:
            values = _leaf_values(planned.identity, recorded)
            shown = ", ".join(f"{k} (finished run: {_short(values.get(k, ('?', '?'))[1])}, now: "
                              f"{_short(values.get(k, ('?', '?'))[0])})" for k in diff[:6])
            shown += f" and {len(diff) - 6} more" if len(diff) > 6 else ""
            if any(values.get(k, ("", ""))[1] == "<absent>" for k in diff):
                shown += ("; a key absent from the finished run usually means the code gained an argument since "
                          "that run, whose default may or may not keep the old behaviour")
            raise StudyError(
                f"The run directory {p.run_dir} holds a run of stage {p.run.stage!r} made with another configuration "
                f"than {study.path} now asks for (differing keys: {shown}). The study runner never mixes the two: "
                "nothing was run and the finished run was kept. To keep both, put the change under a new stage name "
                "or axis value; to redo the run, move its directory aside and run the study again."
            )
    p.todo = [s for s in p.steps if not (p.run_dir / "metrics" / f"{s}.json").is_file()]
    if not p.todo:
        p.state = "finished"
    elif (p.run_dir / "checkpoints" / "last.ckpt").is_file() or len(p.todo) < len(p.steps):
        p.state = "partial"
    else:
        p.state = "pending"


def check_all(study: Study, runs_root: str | Path, only: list[str] | None = None) -> list[PlannedRun]:
    check_study_root(study, runs_root)
    planned = plan(study, runs_root, only)
    for p in planned:
        check_run(study, p)
    return planned


def _leaf_values(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (value in a, value in b) of two identities, walked as main.identity_diff walks them (for
    showing the values of the keys it reports)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in set(a) | set(b):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out.update(_leaf_values(va, vb, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = (va, vb)
    return out


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _planned_identity(study: Study, p: PlannedRun) -> Any:
    """``main.planned_run`` of the run's fit (parsing only): a bad override fails here, before anything runs."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import main

    buf = io.StringIO()
    try:
        with redirect_stdout(buf), redirect_stderr(buf):
            return main.planned_run(p.args[p.steps[0]])
    except (SystemExit, Exception) as e:  # noqa: BLE001 - jsonargparse reports bad keys by exiting
        lines = [ln.strip() for ln in (buf.getvalue() + "\n" + str(e)).splitlines() if ln.strip()]
        detail = " | ".join(ln for ln in lines if not ln.startswith("usage:"))[-600:]
        raise StudyError(
            f"{study.path}: stage {p.run.stage!r} ({p.run.key}) does not give a valid main.py configuration with "
            f"recipe {study.stages[p.run.stage].recipe} and the study's overrides; fix the key or value in "
            f"stages.{p.run.stage}.overrides (or the axis values). main.py said: {detail}"
        ) from None


# ------------------------------------------------------------------------------------------------ the job
def run_job(run_dir: str, steps: list[list[str]], threads: int) -> dict[str, Any]:
    """One run: ``main.cli_main(args)`` for each step (fit, test, report) in this process.

    Never raises for a failing step (submitit's DebugExecutor would open a debugger): returns
    ``{"ok": False, "step": ..., "error": ...}`` instead. Wall and CPU seconds of each step are appended to
    ``<run_dir>/study_run.json``.
    """
    os.environ["RECIPES_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from main import cli_main

    for args in steps:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            cli_main(list(args))
            error = None
        except SystemExit as e:  # a user-facing error, already printed as one paragraph
            if REQUEUING:  # submitit checkpointed and requeued this job (SLURM's USR2): let its exit through
                raise
            if isinstance(e, SIGTERMException):  # Lightning's exit after a SIGTERM (kill, preemption)
                error = (f"main.py {args[0]} was stopped by SIGTERM (killed or preempted) before it finished; "
                         "running the study again resumes this run from its last checkpoint (or starts it "
                         "afresh if it wrote none)")
            else:
                error = f"main.py {args[0]} exited with status {e.code} (its error is printed above in this log)"
        except Exception:  # noqa: BLE001 - reported to the runner, which prints it
            error = traceback.format_exc()
        _finish_wandb()
        _record_timing(Path(run_dir), args[0], time.perf_counter() - t0, time.process_time() - c0, error is None)
        if error is not None:
            print(error, file=sys.stderr, flush=True)
            return {"ok": False, "step": args[0], "error": error}
    return {"ok": True}


def _finish_wandb() -> None:
    """Closes the step's W&B run, so that the next step or run in this process (DebugExecutor) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _record_timing(run_dir: Path, step: str, wall: float, cpu: float, ok: bool) -> None:
    path = run_dir / RUN_MARK
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    data.setdefault("steps", []).append({"step": step, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "ok": ok,
                                         "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    path.write_text(json.dumps(data, indent=1))


# ------------------------------------------------------------------------------------------------ launching
class LocalLauncher:
    """Runs the planned runs with a submitit executor on this machine, at most ``jobs`` at a time, each run
    after the runs it starts from. ``executor``: ``"local"`` (submitit.LocalExecutor: one subprocess per run)
    or ``"debug"`` (submitit.DebugExecutor: in this process, one at a time; for tests).

    A cluster launcher (SLURM) implements the same ``launch(study, planned, root)`` with submitit's
    AutoExecutor: one job array per stage, each array depending (``afterok``) on its upstream stages' arrays.
    """

    def __init__(self, executor: str = "local", jobs: int = 1, threads: int = 1, poll_s: float = 1.0) -> None:
        if executor not in ("local", "debug"):
            raise StudyError(f"--launcher must be 'local' or 'debug', got {executor!r}.")
        if jobs < 1 or threads < 1:
            raise StudyError(f"--jobs and --threads must be >= 1, got {jobs} and {threads}.")
        self.executor_kind, self.jobs, self.threads, self.poll_s = executor, jobs, threads, poll_s

    def _executor(self, folder: Path, budget_min: float) -> Any:
        import submitit

        if self.executor_kind == "debug":
            ex = submitit.DebugExecutor(folder=str(folder))
        else:
            ex = submitit.LocalExecutor(folder=str(folder))
            # the local executor kills a job after timeout_min (default 2 minutes): give it the stage's budget
            ex.update_parameters(timeout_min=budget_min)
        return ex

    def launch(self, study: Study, planned: list[PlannedRun], root: Path) -> dict[str, str]:
        """Runs every planned run with steps to do; returns run key -> "ok" | "failed: ..." | "blocked: ..."."""
        todo = [p for p in planned if p.todo]
        status = {p.run.key: "ok" for p in planned if not p.todo}
        folder = root / "submitit"
        root.mkdir(parents=True, exist_ok=True)
        if not (root / STUDY_MARK).is_file():
            (root / STUDY_MARK).write_text(json.dumps(_mark(study), indent=1))
        with StudyLock(root, study):
            return self._launch(study, planned, folder, todo, status)

    def _launch(self, study: Study, planned: list[PlannedRun], folder: Path, todo: list[PlannedRun],
                status: dict[str, str]) -> dict[str, str]:
        live: dict[str, tuple[Any, PlannedRun]] = {}
        while todo or live:
            for p in list(todo):
                failed_up = [u for u in p.upstream if status.get(u, "ok") != "ok"]
                if failed_up:
                    status[p.run.key] = f"blocked: upstream run {failed_up[0]} did not finish"
                    todo.remove(p)
                    continue
                if len(live) >= self.jobs or any(u not in status for u in p.upstream):
                    continue
                todo.remove(p)
                _write_mark(study, p)
                ex = self._executor(folder, p.budget_min)
                job = ex.submit(run_job, str(p.run_dir), [p.args[s] for s in p.todo], self.threads)
                print(f"[studies] started {p.run.key} ({', '.join(p.todo)}) as job {job.job_id}", flush=True)
                live[p.run.key] = (job, p)
                if self.executor_kind == "debug":
                    break  # run it now (below), before submitting the next
            for key, (job, p) in list(live.items()):
                if self.executor_kind == "debug" or job.done():
                    status[key] = _outcome(job, p)
                    print(f"[studies] {key}: {status[key].splitlines()[0]}", flush=True)
                    del live[key]
            if live:
                time.sleep(self.poll_s)
        return status


class StudyLock:
    """``<study folder>/run.lock`` holds the pid of the ``run`` that launches the study's runs: a second ``run`` of
    the same study while it lives is refused (both would start the same runs); a lock whose process is gone is
    taken over."""

    def __init__(self, root: Path, study: Study) -> None:
        self.path, self.study = root / "run.lock", study

    @staticmethod
    def holder(root: Path) -> int | None:
        try:
            fields = (root / "run.lock").read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        # a stale lock whose pid now belongs to another process (pids are reused): the start times differ
        started = _process_start(pid)
        if len(fields) > 1 and started is not None and fields[1] != started:
            return None
        return pid

    def __enter__(self) -> Self:
        pid = self.holder(self.path.parent)
        if pid is not None and pid != os.getpid():
            raise StudyError(
                f"Another `python -m studies run` (pid {pid}) is running the study {self.study.name!r} in "
                f"{self.path.parent} (see {self.path}); two runners would start the same runs. Wait for it to end "
                "(`python -m studies status` shows the progress), or stop that process first."
            )
        self.path.write_text(f"{os.getpid()} {_process_start(os.getpid()) or ''}".rstrip() + "\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.holder(self.path.parent) == os.getpid():
            self.path.unlink(missing_ok=True)


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), None where /proc has
    no such entry (another OS, or the process is gone). Together with the pid it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces: fields 3, 4, ...
    return rest[19] if len(rest) > 19 else None


def _outcome(job: Any, p: PlannedRun) -> str:
    try:
        result = job.result()
    except Exception as e:  # noqa: BLE001 - the subprocess died (killed, timed out, out of memory)
        logs = getattr(job, "paths", None)
        where = f" Logs: {logs.stdout} and {logs.stderr}." if logs is not None else ""
        return (f"failed: the job stopped before finishing ({type(e).__name__}: {str(e).splitlines()[0][:300]})."
                f"{where} A rerun of `studies run` resumes it from its last checkpoint.")
    if isinstance(result, dict) and result.get("ok"):
        missing = [s for s in p.todo if not (p.run_dir / "metrics" / f"{s}.json").is_file()]
        if missing:
            return f"failed: main.py finished but wrote no metrics/{missing[0]}.json in {p.run_dir}."
        return "ok"
    logs = getattr(job, "paths", None)
    where = f" Log: {logs.stderr}." if logs is not None and p and not str(job.job_id).startswith("DEBUG") else ""
    return f"failed: {result.get('error', '?').strip().splitlines()[-1][:500]}{where}"


def _write_mark(study: Study, p: PlannedRun) -> None:
    p.run_dir.mkdir(parents=True, exist_ok=True)
    path = p.run_dir / RUN_MARK
    if not path.is_file():
        mark = {"study": study.name, "file": str(study.path), "stage": p.run.stage, "seed": p.run.seed,
                "axes": dict(p.run.axes), "steps": []}
        if "fit" not in p.steps:  # no main.py fit, so no run.json: keep the identity the runner compares with
            mark["identity"] = _planned_identity(study, p).identity
        path.write_text(json.dumps(mark, indent=1))
