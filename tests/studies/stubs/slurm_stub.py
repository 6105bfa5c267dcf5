#!/usr/bin/env python3
"""A stand-in for SLURM's client commands, for the study runner's SLURM tests (tests/studies/test_slurm.py).

Installed as ``sbatch``, ``squeue``, ``sacct``, ``scontrol``, ``scancel`` and ``srun`` (small shell wrappers in
this folder that exec this file). State lives in ``$STUB_SLURM_DIR``:

* ``sbatch SCRIPT`` reads the script's ``#SBATCH`` lines (and its own ``--key=value`` arguments), records the
  submission in ``jobs/<id>.json`` and answers ``Submitted batch job <id>`` as sbatch does. A detached scheduler
  process then runs the script with ``bash`` for each array index, one after the other, once the job's
  ``afterok`` dependencies have completed (a failed dependency leaves the job PENDING with the reason
  DependencyNeverSatisfied, as SLURM does). It waits for submitit's pickle of each task, which submitit writes just
  after sbatch answers (scheduling latency on a real cluster).
* The script's ``srun`` starts ``--ntasks-per-node x --nodes`` tasks with the variables SLURM gives each task
  (SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_NTASKS, ...), records them in ``srun.jsonl``, and kills the
  other tasks when one fails.
* ``scontrol requeue ID`` makes the scheduler run that task again (SLURM_RESTART_COUNT + 1) after it exits.
* ``sacct -o JobID,State,NodeList --parsable2 -j ID ...`` and ``squeue -h -o %i|%T|%r -j ID`` answer from the
  recorded states. ``STUB_SLURM_FAIL_STATE=PREEMPTED`` in the submitter's environment reports a task whose script
  failed as PREEMPTED (a preempted job that was not requeued) instead of FAILED; ``STUB_SLURM_HOLD=1`` keeps every
  job PENDING (reason Priority) and runs nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

DIR = Path(os.environ.get("STUB_SLURM_DIR", "/nonexistent"))
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "PREEMPTED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


class Locked:
    def __enter__(self):
        DIR.mkdir(parents=True, exist_ok=True)
        self.f = open(DIR / "lock", "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *a):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def job_path(jid: str) -> Path:
    return DIR / "jobs" / f"{jid}.json"


def load(jid: str) -> dict:
    return json.loads(job_path(jid).read_text())


def save(job: dict) -> None:
    p = job_path(job["id"])
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(job, indent=1))
    tmp.replace(p)


def update_task(jid: str, idx: str, **fields) -> dict:
    with Locked():
        job = load(jid)
        job["tasks"][idx].update(fields)
        save(job)
        return job


def split_id(text: str) -> tuple[str, str | None]:
    jid, _, idx = text.partition("_")
    return jid, (idx or None)


# -------------------------------------------------------------------------------------------------- sbatch
def parse_options(tokens: list[str]) -> dict[str, str]:
    out = {}
    for tok in tokens:
        if not tok.startswith("--"):
            continue
        key, _, value = tok[2:].partition("=")
        out[key] = value if _ else "true"
    return out


def sbatch(argv: list[str]) -> int:
    if not argv or not Path(argv[-1]).is_file():
        print("sbatch: error: no batch script given", file=sys.stderr)
        return 1
    script = Path(argv[-1]).resolve()
    lines = script.read_text().splitlines()
    options = parse_options([ln.split(None, 1)[1] for ln in lines if ln.startswith("#SBATCH ")])
    options.update(parse_options(argv[:-1]))
    array = options.get("array")
    if array:
        first, last = re.match(r"(\d+)-(\d+)", array).groups()
        indices = [str(i) for i in range(int(first), int(last) + 1)]
    else:
        indices = ["-"]
    with Locked():
        counter = DIR / "counter"
        jid = str(int(counter.read_text()) + 1 if counter.is_file() else 1000)
        counter.write_text(jid)
        (DIR / "jobs").mkdir(exist_ok=True)
        job = {"id": jid, "script": str(script), "options": options, "array": bool(array),
               "tasks": {i: {"state": "PENDING", "reason": "None", "restarts": 0, "requeue": False} for i in indices},
               "env": {k: v for k, v in os.environ.items() if k.startswith(("STUB_", "STUDIES_TEST_"))}}
        save(job)
        with open(DIR / "sbatch.jsonl", "a") as f:
            f.write(json.dumps({"id": jid, "options": options, "script": script.read_text()}) + "\n")
    with open(DIR / f"scheduler_{jid}.log", "w") as log:
        subprocess.Popen([sys.executable, __file__, "_schedule", jid], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    print(f"Submitted batch job {jid}")
    return 0


def dependencies_ok(job: dict) -> bool | None:
    """True when every afterok dependency completed, False when one cannot complete any more, None to wait."""
    dep = job["options"].get("dependency", "")
    if not dep:
        return True
    ok = True
    for part in dep.split(","):
        kind, *ids = part.split(":")
        assert kind == "afterok", f"stub sbatch knows only afterok dependencies, got {dep}"
        for i in ids:
            djid, didx = split_id(i)
            tasks = load(djid)["tasks"]
            states = [t["state"] for k, t in tasks.items() if didx is None or k == didx]
            if any(s in TERMINAL and s != "COMPLETED" for s in states):
                return False
            if not all(s == "COMPLETED" for s in states):
                ok = None
    return ok


def schedule(jid: str) -> int:
    job = load(jid)
    if job["env"].get("STUB_SLURM_HOLD"):  # a busy cluster: everything stays queued
        for idx in job["tasks"]:
            update_task(jid, idx, reason="Priority")
        return 0
    folder = None
    m = re.search(r"submitit\.core\._submit\s+(\S+)", Path(job["script"]).read_text())
    if m:
        folder = Path(m.group(1).strip("'\""))
    while True:
        verdict = dependencies_ok(load(jid))
        if verdict is False:
            for idx in job["tasks"]:
                update_task(jid, idx, reason="DependencyNeverSatisfied")
            return 0
        if verdict:
            break
        time.sleep(0.2)
    options = job["options"]
    nodes = int(options.get("nodes", 1))
    per_node = int(options.get("ntasks-per-node", 1))
    for idx in job["tasks"]:
        task_id = jid if idx == "-" else f"{jid}_{idx}"
        if folder is not None:  # submitit writes the task's pickle right after sbatch answered
            deadline = time.time() + 120
            while not (folder / f"{task_id}_submitted.pkl").exists() and time.time() < deadline:
                time.sleep(0.1)
        while True:
            state = load(jid)["tasks"][idx]
            if state["state"] == "CANCELLED":
                break
            env = dict(os.environ)
            env.update(job["env"])
            env.update({
                "SLURM_JOB_ID": str(int(jid) * 100 + int(idx) + 1) if idx != "-" else jid,
                "SLURM_JOB_NAME": options.get("job-name", "stub"),
                "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NNODES": str(nodes),
                "SLURM_JOB_NODELIST": "localhost", "SLURM_NODELIST": "localhost",
                "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_NTASKS": str(nodes * per_node),
                "SLURM_GPUS_ON_NODE": options.get("gpus-per-node", "0"),
                "SLURM_RESTART_COUNT": str(state["restarts"]),
                "SLURM_SUBMIT_DIR": os.getcwd(),
            })
            if idx != "-":
                env.update({"SLURM_ARRAY_JOB_ID": jid, "SLURM_ARRAY_TASK_ID": idx})
            update_task(jid, idx, state="RUNNING", reason="None")
            proc = subprocess.Popen(["bash", job["script"]], env=env, start_new_session=True)
            update_task(jid, idx, pid=proc.pid)
            rc = proc.wait()
            now = load(jid)["tasks"][idx]
            if now["state"] == "CANCELLED":
                break
            if now["requeue"]:
                update_task(jid, idx, state="PENDING", requeue=False, restarts=now["restarts"] + 1)
                continue
            fail_state = job["env"].get("STUB_SLURM_FAIL_STATE", "FAILED")
            update_task(jid, idx, state="COMPLETED" if rc == 0 else fail_state, rc=rc)
            break
    return 0


# -------------------------------------------------------------------------------------------------- srun
def srun(argv: list[str]) -> int:
    out_pattern = err_pattern = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        tok = argv[i]
        if tok in ("--output", "-o", "--error", "-e"):
            if tok in ("--output", "-o"):
                out_pattern = argv[i + 1]
            else:
                err_pattern = argv[i + 1]
            i += 2
            continue
        i += 1
    command = argv[i:]
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1"))

    def fill(pattern: str, t: int) -> str:
        return (pattern.replace("%A", os.environ.get("SLURM_ARRAY_JOB_ID", ""))
                .replace("%a", os.environ.get("SLURM_ARRAY_TASK_ID", ""))
                .replace("%j", os.environ.get("SLURM_JOB_ID", "")).replace("%t", str(t)))

    procs = []
    for t in range(ntasks):
        env = dict(os.environ)
        env.update({"SLURM_PROCID": str(t), "SLURM_LOCALID": str(t % per_node), "SLURM_NODEID": str(t // per_node),
                    "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": str(ntasks)})
        with Locked(), open(DIR / "srun.jsonl", "a") as f:
            f.write(json.dumps({k: v for k, v in env.items() if k.startswith("SLURM_")}) + "\n")
        out = open(fill(out_pattern, t), "a") if out_pattern else None  # noqa: SIM115 - the task's lifetime
        err = open(fill(err_pattern, t), "a") if err_pattern else None  # noqa: SIM115
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))
    rc = 0
    while procs:
        for p in list(procs):
            code = p.poll()
            if code is None:
                continue
            procs.remove(p)
            if code != 0 and rc == 0:
                rc = code
                for other in procs:  # --kill-on-bad-exit
                    other.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    return rc


# -------------------------------------------------------------------------------------------------- queries
def _ids(argv: list[str]) -> list[str]:
    out = []
    for i, tok in enumerate(argv):
        if tok in ("-j", "--jobs") and i + 1 < len(argv):
            out += argv[i + 1].split(",")
        elif tok.startswith("--jobs="):
            out += tok.split("=", 1)[1].split(",")
    return out


def _tasks(ids: list[str]):
    for text in ids:
        jid, idx = split_id(text)
        if not job_path(jid).is_file():
            continue
        job = load(jid)
        for k, t in job["tasks"].items():
            if idx is None or k == idx:
                yield (jid if k == "-" else f"{jid}_{k}"), t


def sacct(argv: list[str]) -> int:
    print("JobID|State|NodeList")
    for name, t in _tasks(_ids(argv)):
        print(f"{name}|{t['state']}|localhost")
    return 0


def squeue(argv: list[str]) -> int:
    for name, t in _tasks(_ids(argv)):
        if t["state"] not in TERMINAL:
            print(f"{name}|{t['state']}|{t['reason']}")
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:1] == ["requeue"]:
        for name in argv[1].split(","):
            jid, idx = split_id(name)
            update_task(jid, idx or "-", requeue=True)
            with open(DIR / "requeue.log", "a") as f:
                f.write(name + "\n")
        return 0
    if argv[:2] == ["show", "hostnames"]:
        print("localhost")
        return 0
    print(f"stub scontrol: unsupported {argv}", file=sys.stderr)
    return 1


def scancel(argv: list[str]) -> int:
    for text in [a for a in argv if not a.startswith("-")]:
        jid, idx = split_id(text)
        job = load(jid)
        for k, t in job["tasks"].items():
            if (idx is None or k == idx) and t["state"] not in TERMINAL:
                update_task(jid, k, state="CANCELLED")
                if t.get("pid"):
                    try:
                        os.killpg(t["pid"], signal.SIGTERM)
                    except ProcessLookupError:
                        pass
    return 0


def main() -> int:
    name = Path(sys.argv[0]).name
    argv = sys.argv[1:]
    if name == "slurm_stub.py":
        name, argv = argv[0], argv[1:]
    if name == "_schedule":
        return schedule(argv[0])
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scontrol": scontrol,
            "scancel": scancel}[name](argv)


if __name__ == "__main__":
    sys.exit(main())
