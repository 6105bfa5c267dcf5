"""``python -m studies {run,status,report} studies/<name>.yaml`` and ``python -m studies readme``: see
studies/README.md."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from studies.spec import StudyError, load_study, with_seed_count


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("study", help="a study file, e.g. studies/prune_glyphs.yaml")
    common.add_argument("--runs-root", default="runs/studies",
                        help="runs land in <runs-root>/<study>/<stage>/<axis values>/seed<k> (default runs/studies)")
    common.add_argument("--only", nargs="+", metavar="STAGE",
                        help="only these stages (and the stages they start from)")
    common.add_argument("--seeds", type=int, metavar="N",
                        help="run seeds 0..N-1 in every stage instead of the study's seed lists (give the same N to "
                             "run, status and report)")
    r = sub.add_parser("run", parents=[common], help="run every unfinished run (resumes interrupted ones)")
    r.add_argument("--jobs", type=int, default=1, help="runs at a time on this machine (default 1)")
    r.add_argument("--threads", type=int, default=int(os.environ.get("RECIPES_THREADS", "1")),
                   help="torch threads per run (RECIPES_THREADS; default 1)")
    r.add_argument("--launcher", choices=["local", "debug", "slurm"], default="local",
                   help="submitit executor: local (one subprocess per run), debug (in this process) or slurm (one "
                        "job array per stage; see --profile)")
    r.add_argument("--profile", help="cluster profile YAML for --launcher slurm (slurm/profiles/example.yaml)")
    r.add_argument("--partition", help="SLURM partition (overrides the profile's)")
    r.add_argument("--account", help="SLURM account (overrides the profile's)")
    r.add_argument("--gpus-per-node", type=int, dest="gpus_per_node", help="GPUs per node (overrides the profile's)")
    r.add_argument("--constraint", help="SLURM node constraint (overrides the profile's)")
    r.add_argument("--max-time-min", type=float, dest="max_time_min",
                   help="the partition's time limit in minutes (overrides the profile's)")
    r.add_argument("--no-data-check", action="store_true",
                   help="do not check the data directories before submitting (data only on the nodes' local disks)")
    r.add_argument("--dry-run", action="store_true", help="check everything and print the plan; run nothing")
    r.add_argument("--report", action="store_true", help="write the report when the runs are done")
    r.add_argument("--results-dir", default="results")
    sub.add_parser("status", parents=[common], help="which runs are finished, partial or pending")
    rep = sub.add_parser("report", parents=[common], help="aggregate the finished runs into results/<study>.md/.json")
    rep.add_argument("--results-dir", default="results")
    rep.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    rd = sub.add_parser("readme", help="write the study rows of results/README.md from results/<study>.json")
    rd.add_argument("--check", action="store_true", help="exit 1 if results/README.md is not up to date")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except StudyError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        return 1


def _main(args: argparse.Namespace) -> int:
    from studies import report as report_mod
    from studies import runner

    if args.command == "readme":
        from pathlib import Path

        from studies import readme

        if readme.update(Path("."), check=args.check):
            print("results/README.md: the study rows are up to date" if args.check else
                  "results/README.md: study rows written")
            return 0
        print("results/README.md: the study rows differ from the study reports; run `python -m studies readme`",
              file=sys.stderr)
        return 1
    study = load_study(args.study)
    if args.seeds is not None:
        study = with_seed_count(study, args.seeds)
    if args.command == "report":
        r = report_mod.write(study, args.runs_root, args.results_dir, wandb=not args.no_wandb)
        print(f"wrote {args.results_dir}/{study.name}.md and .json ({len(r['runs_finished'])} of "
              f"{r['runs_total']} runs finished)")
        for c in r["claims"].values():
            for pt, d in c["points"].items():
                print(f"  {c['label']}{' at ' + pt if pt else ''}: {d['status']}")
        return 0
    profile = None
    if getattr(args, "launcher", None) == "slurm":
        from studies import slurm

        flags = {k: getattr(args, k) for k in ("partition", "account", "gpus_per_node", "constraint", "max_time_min")}
        profile = slurm.load_profile(args.profile, flags)
        slurm.check_gpus(study, profile)
        if not args.dry_run:
            slurm.need_sbatch()
    planned = runner.check_all(study, args.runs_root, args.only)
    root = runner.study_root(study, args.runs_root)
    if (getattr(args, "launcher", "local") in ("local", "slurm") and not getattr(args, "no_data_check", True)
            and not args.dry_run):
        from studies import datacheck

        stages = sorted({p.run.stage for p in planned if p.todo})
        for line in datacheck.check(study, stages, profile.data_dirs if profile else None):
            print(f"[studies] data: {line}")
    if args.command == "status" or getattr(args, "dry_run", False):
        width = max(len(p.run.key) for p in planned)
        from studies import slurm as slurm_mod

        states = slurm_mod.run_states(study, planned, root) if (root / slurm_mod.JOBS_FILE).is_file() else None
        for p in planned:
            extra = f" (to do: {', '.join(p.todo)})" if p.state == "partial" else ""
            print(f"{p.run.key.ljust(width)}  {states[p.run.key] if states else p.state + extra}")
        counts = {s: sum(p.state == s for p in planned) for s in ("finished", "partial", "pending")}
        root = runner.study_root(study, args.runs_root)
        pid = runner.StudyLock.holder(root)
        print(f"{study.name}: {counts['finished']} finished, {counts['partial']} partial, {counts['pending']} pending "
              f"of {len(planned)} runs under {root}" + (f"; a runner (pid {pid}) is at work" if pid else ""))
        if getattr(args, "dry_run", False):
            _print_graph(study, planned, profile)
            for p in planned:
                if p.todo:
                    for step in p.todo:
                        print("python main.py " + " ".join(_quote(a) for a in p.args[step]))
        return 0
    if profile is not None:
        launched = slurm_launch(study, planned, root, profile)
        return launched
    launcher = runner.LocalLauncher(args.launcher, jobs=args.jobs, threads=args.threads)
    status = launcher.launch(study, planned, runner.study_root(study, args.runs_root))
    bad = {k: v for k, v in status.items() if v != "ok"}
    for key, why in bad.items():
        print(f"[studies] {key}: {why}", file=sys.stderr)
    if args.report:
        report_mod.write(study, args.runs_root, args.results_dir)
    if bad:
        print(f"\nerror: {len(bad)} of {len(status)} runs of {study.path} did not finish (listed above); the "
              "finished ones are kept, and `python -m studies run` again resumes the rest.", file=sys.stderr)
        return 1
    print(f"[studies] {study.name}: all {len(status)} runs finished")
    return 0


def slurm_launch(study, planned, root, profile) -> int:
    from studies import slurm

    status = slurm.SlurmLauncher(profile).launch(study, planned, root)
    counts: dict[str, int] = {}
    for why in status.values():
        counts[why.split(":")[0]] = counts.get(why.split(":")[0], 0) + 1
    for key, why in status.items():
        if why.startswith("queued"):
            print(f"[studies] {key}: {why} (not submitted again)")
    print(f"[studies] {study.name}: {counts.get('submitted', 0)} run(s) submitted, {counts.get('queued', 0)} already "
          f"queued, {counts.get('ok', 0)} done. `python -m studies status {study.path}` shows their states; "
          f"`python -m studies report {study.path}` writes the table when they are done.")
    return 0


def _print_graph(study, planned, profile) -> None:
    """The job graph (one job array per stage), the GPU jobs per stage and the GPU-hour estimate."""
    from studies import cost

    todo: dict[str, int] = {}
    for p in planned:
        if p.todo:
            todo[p.run.stage] = todo.get(p.run.stage, 0) + 1
    print(f"job graph of {study.name} (one job array per stage; a stage starts when the runs it starts from are "
          "done, afterok):")
    for name in study.order():
        if name not in todo:
            continue
        s = study.stages[name]
        after = [u for u in s.upstream if u in todo]
        budget = s.budget_min if profile is None or profile.max_time_min is None else min(s.budget_min,
                                                                                           profile.max_time_min)
        print(f"  {name}: {todo[name]} GPU job(s) x {s.gpus} GPU(s), {len(s.seeds)} seed(s), time limit "
              f"{budget:g} min, recipe {s.recipe}" + (f", after {', '.join(after)}" if after else ""))
    print(cost.format_costs(cost.estimate(study, todo)))


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


if __name__ == "__main__":
    sys.exit(main())
