"""The SLURM launcher of the study runner: every stage a job array through submitit's SLURM executor.

``SlurmLauncher.launch(study, planned, root)`` takes the same plan as ``runner.LocalLauncher`` (run directories,
main.py arguments, upstream runs, budgets; the identity and ownership checks already ran on this login node) and
submits, stage by stage in the study's order, one ``submitit.AutoExecutor(cluster="slurm")`` batch per stage (one
job array; a single run is one plain job). A stage's array depends (``afterok``) on the jobs of the runs it starts
from that are submitted or still queued; finished upstream runs need no dependency. It then returns: the cluster
runs the jobs. ``python -m studies status`` reads the run directories, ``<study>/slurm_jobs.json`` (run key -> job
id, written here) and submitit's job folder; ``python -m studies run`` again submits only what is not done and not
already queued.

Requeue: submitit owns it. Its sbatch script asks SLURM for ``--signal=USR2@<signal_delay_s>``; on USR2 submitit
calls :meth:`StudyJob.checkpoint` (the job resubmits itself unchanged), runs ``scontrol requeue`` and exits. The
requeued job runs the same ``main.py fit --ckpt_path auto``, which resumes from the run's ``last.ckpt`` under the
W&B id stored in ``run.json``. Lightning's SLURMEnvironment listens for USR1, which nothing sends here, so it never
requeues on its own (two owners would requeue twice).

Multi-GPU stages (``gpus: N`` in the study) get ``--ntasks-per-node=N --gpus-per-node=N``: srun starts one task per
GPU and Lightning's SLURMEnvironment reads the ranks from SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID /
SLURM_NODEID (the runner passes ``--trainer.devices=N --trainer.num_nodes=1 --trainer.strategy=ddp``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from studies.spec import Study, StudyError

JOBS_FILE = "slurm_jobs.json"  # at <runs_root>/<study>/: run key -> SLURM job id of its latest submission
PROFILE_REQUIRED = ("partition", "gpus_per_node")
PROFILE_KEYS = {
    "partition": "SLURM partition (sbatch --partition)",
    "gpus_per_node": "GPUs on one node of that partition; a stage's `gpus` may not exceed it",
    "account": "account to charge (sbatch --account)",
    "qos": "quality of service (sbatch --qos)",
    "constraint": "node features (sbatch --constraint), e.g. a100|h100",
    "max_time_min": "the partition's time limit in minutes; a stage's budget_min above it is cut to it",
    "cpus_per_gpu": "CPU cores per GPU task (sbatch --cpus-per-task; default 8)",
    "mem_gb_per_gpu": "memory per GPU in GB (sbatch --mem = this x GPUs; default: not set)",
    "signal_delay_s": "seconds before the time limit at which SLURM sends USR2 (requeue; default 120)",
    "max_requeues": "requeues after a time-out before submitit gives up (default 10)",
    "array_parallelism": "at most this many runs of one stage at once (default 64)",
    "setup": "shell lines run before the job (e.g. module load, source venv/bin/activate)",
    "sbatch": "extra sbatch options, a mapping option -> value (e.g. {mail-type: FAIL, exclude: node12})",
    "data_dirs": "datamodule class -> data directory on the cluster (e.g. {ImageNetDataModule: /datasets/imagenet})",
    "accelerator": "Lightning accelerator of the jobs (default gpu; cpu only for tests of this launcher)",
    "python": "python executable of the jobs (default: the one running the runner)",
}
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


@dataclass
class Profile:
    path: str
    partition: str
    gpus_per_node: int
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_time_min: float | None = None
    cpus_per_gpu: int = 8
    mem_gb_per_gpu: float | None = None
    signal_delay_s: int = 120
    max_requeues: int = 10
    array_parallelism: int = 64
    setup: list[str] = field(default_factory=list)
    sbatch: dict[str, Any] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)
    accelerator: str = "gpu"
    python: str | None = None


def load_profile(path: str | None, flags: dict[str, Any] | None = None) -> Profile:
    """A cluster profile (YAML mapping, see slurm/profiles/example.yaml), then ``flags`` (non-None values win).

    Refuses, naming the file and key: an unreadable file, an unknown key (with the closest known one), a missing
    required key, a value of the wrong type.
    """
    where = path or "the command line"
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise StudyError(f"Cannot read the cluster profile {path}: {e.strerror or e}. Give the path of a YAML "
                             "file like slurm/profiles/example.yaml with --profile.") from None
        except yaml.YAMLError as e:
            raise StudyError(f"The cluster profile {path} is not valid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(loaded, dict):
            raise StudyError(f"The cluster profile {path} must be a mapping (partition, gpus_per_node, ...; see "
                             "slurm/profiles/example.yaml).")
        data = loaded
    for key in data:
        if key not in PROFILE_KEYS:
            close = difflib.get_close_matches(str(key), list(PROFILE_KEYS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise StudyError(f"{where}: unknown cluster profile key {key!r}.{hint} Known keys: "
                             f"{', '.join(PROFILE_KEYS)} (documented in studies/README.md, 'Running on SLURM').")
    data.update({k: v for k, v in (flags or {}).items() if v is not None})
    missing = [k for k in PROFILE_REQUIRED if data.get(k) in (None, "")]
    if missing:
        raise StudyError(f"{where}: the cluster profile lacks the required key {missing[0]!r} "
                         f"({PROFILE_KEYS[missing[0]]}). Add `{missing[0]}: ...` to the profile file or pass "
                         f"--{missing[0].replace('_', '-')}.")
    types = {"gpus_per_node": int, "cpus_per_gpu": int, "signal_delay_s": int, "max_requeues": int,
             "array_parallelism": int, "max_time_min": (int, float), "mem_gb_per_gpu": (int, float),
             "setup": list, "sbatch": dict, "data_dirs": dict}
    for key, typ in types.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            raise StudyError(f"{where}: cluster profile key {key!r} must be {_type_name(typ)}, got {value!r}.")
    if data["gpus_per_node"] < 1:
        raise StudyError(f"{where}: cluster profile key 'gpus_per_node' must be >= 1, got {data['gpus_per_node']}.")
    for key in ("partition", "account", "qos", "constraint", "accelerator", "python"):
        if data.get(key) is not None:
            data[key] = str(data[key])
    return Profile(path=where, **data)


def _type_name(typ: Any) -> str:
    names = {int: "an integer", list: "a list of shell lines", dict: "a mapping", (int, float): "a number"}
    return names.get(typ, str(typ))


def check_gpus(study: Study, profile: Profile) -> None:
    for stage in study.stages.values():
        if stage.gpus > profile.gpus_per_node:
            raise StudyError(
                f"{study.path}: stages.{stage.name}.gpus asks for {stage.gpus} GPUs per run, but the cluster profile "
                f"{profile.path} says its nodes have gpus_per_node: {profile.gpus_per_node}. One run uses one node: "
                f"lower stages.{stage.name}.gpus (the recipe's global batch is kept by its GlobalBatchSize callback "
                "where it has one), or use a profile of a partition with bigger nodes.")


def need_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise StudyError("--launcher slurm needs SLURM's `sbatch` on PATH, and there is none on this machine "
                         f"(PATH={os.environ.get('PATH', '')}). Run the study from a login node of the cluster, or "
                         "run it here with --launcher local (one process per run on this machine).")


# ------------------------------------------------------------------------------------------------ the job
class StudyJob:
    """The submitted callable: :func:`studies.runner.run_job` of one run, checkpointable for submitit.

    On SLURM's USR2 (time limit near, or preemption) submitit calls :meth:`checkpoint`, which resubmits the same
    call; the requeued job's ``fit --ckpt_path auto`` resumes from the run's last.ckpt. In a multi-task job every
    task runs fit and test (DDP ranks); only rank 0 runs ``report``.
    """

    def __init__(self, run_dir: str, steps: list[list[str]], threads: int) -> None:
        self.run_dir, self.steps, self.threads = run_dir, steps, threads

    def __call__(self) -> dict[str, Any]:
        from studies import runner

        rank = int(os.environ.get("SLURM_PROCID", "0"))
        steps = [s for s in self.steps if rank == 0 or s[0] not in ("report", "export")]
        return runner.run_job(self.run_dir, steps, self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        from studies import runner

        runner.REQUEUING = True  # run_job lets submitit's exit through instead of reporting a failed step
        return submitit.helpers.DelayedSubmission(StudyJob(self.run_dir, self.steps, self.threads))


# ------------------------------------------------------------------------------------------------ job records
def read_jobs(root: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((root / JOBS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_jobs(root: Path, jobs: dict[str, dict[str, Any]]) -> None:
    tmp = root / (JOBS_FILE + ".tmp")
    tmp.write_text(json.dumps(jobs, indent=1))
    tmp.replace(root / JOBS_FILE)


def query_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id -> (state, reason): squeue for queued jobs (with the pending reason), sacct for the others.

    Missing tools or failing calls give no entry (the state is then unknown)."""
    out: dict[str, tuple[str, str]] = {}
    if not job_ids:
        return out
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if shutil.which("sacct"):
        cmd = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"] + [x for a in arrays for x in ("-j", a)]
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        import submitit.slurm.slurm as ss

        info = ss.SlurmInfoWatcher().read_info(text) if text else {}
        for j in job_ids:
            if j in info:
                out[j] = (info[j].get("State", "UNKNOWN").split()[0], "")
    if shutil.which("squeue"):
        try:
            text = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(arrays)], capture_output=True,
                                  text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in job_ids:
                out[parts[0]] = (parts[1], parts[2])
    return out


def log_tail(folder: Path, job_id: str, lines: int = 8) -> str:
    """The last lines of the job's stderr (then stdout) log in submitit's folder ('' when there is none)."""
    for suffix in ("err", "out"):
        path = folder / f"{job_id}_0_log.{suffix}"
        try:
            text = path.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            continue
        text = [ln for ln in text if ln.strip()]
        if text:
            return "\n".join(text[-lines:]) + f"\n    (log: {path})"
    return ""


# ------------------------------------------------------------------------------------------------ launching
class SlurmLauncher:
    """Submits the planned runs as one SLURM job array per stage (see the module docstring)."""

    def __init__(self, profile: Profile, threads: int = 0) -> None:
        self.profile = profile
        self.threads = threads  # torch threads per task (0: cpus_per_gpu)

    def machine_args(self, study: Study, stage: str) -> list[str]:
        """main.py arguments that place a run on its job's GPUs (identity-free keys)."""
        gpus = study.stages[stage].gpus
        args = [f"--trainer.accelerator={self.profile.accelerator}", f"--trainer.devices={gpus}",
                "--trainer.num_nodes=1"]
        if gpus > 1:
            args.append("--trainer.strategy=ddp")
        return args

    def data_args(self, study: Study, stage: str) -> list[str]:
        from studies import datacheck

        cls = datacheck.data_class(study, stage)
        if cls in self.profile.data_dirs:
            return [f"--data.init_args.data_dir={self.profile.data_dirs[cls]}"]
        return []

    def executor(self, study: Study, stage: str, folder: Path, dependency: list[str]) -> Any:
        import submitit

        p, s = self.profile, study.stages[stage]
        budget = s.budget_min if p.max_time_min is None else min(s.budget_min, p.max_time_min)
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=p.max_requeues,
                                   slurm_python=p.python or sys.executable)
        extra = {str(k): v for k, v in p.sbatch.items()}
        if dependency:
            extra["dependency"] = "afterok:" + ":".join(dependency)
        params: dict[str, Any] = {
            "name": f"{study.name}.{stage}", "timeout_min": int(max(1, round(budget))), "nodes": 1,
            "tasks_per_node": s.gpus, "gpus_per_node": s.gpus, "cpus_per_task": p.cpus_per_gpu,
            "slurm_partition": p.partition, "slurm_signal_delay_s": p.signal_delay_s,
            "slurm_array_parallelism": p.array_parallelism, "slurm_additional_parameters": extra,
            "slurm_setup": list(p.setup)}
        if p.account:
            params["slurm_account"] = p.account
        if p.qos:
            params["slurm_qos"] = p.qos
        if p.constraint:
            params["slurm_constraint"] = p.constraint
        if p.mem_gb_per_gpu:
            params["mem_gb"] = p.mem_gb_per_gpu * s.gpus
        ex.update_parameters(**params)
        return ex

    def launch(self, study: Study, planned: list, root: Path) -> dict[str, str]:
        """Submits every planned run with steps to do that is not already queued; returns run key -> "ok" (done),
        "queued: job ..." (already in the queue), or "submitted: job ..."."""
        from studies import runner

        need_sbatch()
        check_gpus(study, self.profile)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / runner.STUDY_MARK).is_file():
            (root / runner.STUDY_MARK).write_text(json.dumps(runner._mark(study), indent=1))
        folder = root / "submitit"
        jobs = read_jobs(root)
        states = query_states([jobs[p.run.key]["job_id"] for p in planned if p.todo and p.run.key in jobs])
        status: dict[str, str] = {p.run.key: "ok" for p in planned if not p.todo}
        live: dict[str, str] = {}  # run key -> job id of a job queued or running now (a dependency target)
        stale = []
        for p in planned:
            rec = jobs.get(p.run.key)
            if not p.todo or rec is None:
                continue
            state, reason = states.get(rec["job_id"], ("", ""))
            if state in ACTIVE and "DependencyNeverSatisfied" not in reason:
                live[p.run.key] = rec["job_id"]
                status[p.run.key] = f"queued: job {rec['job_id']} is {state}"
            elif state in ACTIVE:
                stale.append(rec["job_id"])
        if stale and shutil.which("scancel"):
            subprocess.run(["scancel", *stale], capture_output=True, timeout=60, check=False)  # their dependency failed
        threads = self.threads or self.profile.cpus_per_gpu
        with runner.StudyLock(root, study):
            for stage in study.order():
                batch = [p for p in planned if p.run.stage == stage and p.todo and p.run.key not in status]
                if not batch:
                    continue
                deps = sorted({live[u] for p in batch for u in p.upstream if u in live})
                ex = self.executor(study, stage, folder, deps)
                extra = self.machine_args(study, stage) + self.data_args(study, stage)
                with ex.batch():
                    submitted = []
                    for p in batch:
                        runner._write_mark(study, p)
                        steps = [p.args[s] + (extra if s in ("fit", "validate", "test") else []) for s in p.todo]
                        submitted.append((p, ex.submit(StudyJob(str(p.run_dir), steps, threads))))
                now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                for p, job in submitted:
                    live[p.run.key] = job.job_id
                    jobs[p.run.key] = {"job_id": job.job_id, "stage": stage, "submitted": now, "steps": p.todo,
                                       "gpus": study.stages[stage].gpus, "depends_on": deps}
                    status[p.run.key] = f"submitted: job {job.job_id}"
                _write_jobs(root, jobs)
                print(f"[studies] stage {stage}: {len(submitted)} run(s) submitted as job array "
                      f"{submitted[0][1].job_id.split('_')[0]} ({study.stages[stage].gpus} GPU(s) each)"
                      + (f", after {', '.join(deps)}" if deps else ""), flush=True)
        return status


def run_states(study: Study, planned: list, root: Path) -> dict[str, str]:
    """Run key -> one line: done, running, pending (queued), failed (with the log's last lines), preempted,
    partial or not started, from the run directories, ``slurm_jobs.json`` and submitit's job folder."""
    jobs = read_jobs(root)
    states = query_states([jobs[p.run.key]["job_id"] for p in planned if p.todo and p.run.key in jobs])
    out = {}
    for p in planned:
        if not p.todo:
            out[p.run.key] = "done"
            continue
        rec = jobs.get(p.run.key)
        state, reason = states.get(rec["job_id"], ("", "")) if rec else ("", "")
        todo = f" (to do: {', '.join(p.todo)})"
        if not rec:
            out[p.run.key] = ("partial" if p.state == "partial" else "not submitted") + todo
        elif state == "RUNNING":
            out[p.run.key] = f"running (job {rec['job_id']})"
        elif state in ACTIVE:
            why = f", {reason}" if reason and reason != "None" else ""
            out[p.run.key] = f"pending (job {rec['job_id']} {state}{why})"
        elif state in ("PREEMPTED", "TIMEOUT", "NODE_FAIL", "CANCELLED"):
            out[p.run.key] = f"{state.lower()} (job {rec['job_id']}){todo}; `studies run` resubmits it"
        elif not state and shutil.which("sacct") is None:
            out[p.run.key] = f"submitted as job {rec['job_id']} (state unknown: no sacct on this machine){todo}"
        else:
            tail = log_tail(root / "submitit", rec["job_id"])
            what = state.lower() if state else "failed or unknown to SLURM"
            out[p.run.key] = f"failed (job {rec['job_id']}: {what}){todo}" + (
                "\n    " + tail.replace("\n", "\n    ") if tail else "")
    return out
