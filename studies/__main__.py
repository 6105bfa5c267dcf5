"""``python -m studies {run,status,report} studies/<name>.yaml``: see studies/README.md."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from studies.spec import StudyError, load_study


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("study", help="a study file, e.g. studies/prune_glyphs.yaml")
    common.add_argument("--runs-root", default="runs/studies",
                        help="runs land in <runs-root>/<study>/<stage>/<axis values>/seed<k> (default runs/studies)")
    common.add_argument("--only", nargs="+", metavar="STAGE",
                        help="only these stages (and the stages they start from)")
    r = sub.add_parser("run", parents=[common], help="run every unfinished run (resumes interrupted ones)")
    r.add_argument("--jobs", type=int, default=1, help="runs at a time on this machine (default 1)")
    r.add_argument("--threads", type=int, default=int(os.environ.get("RECIPES_THREADS", "1")),
                   help="torch threads per run (RECIPES_THREADS; default 1)")
    r.add_argument("--launcher", choices=["local", "debug"], default="local",
                   help="submitit executor: local (one subprocess per run) or debug (in this process)")
    r.add_argument("--dry-run", action="store_true", help="check everything and print the plan; run nothing")
    r.add_argument("--report", action="store_true", help="write the report when the runs are done")
    r.add_argument("--results-dir", default="results")
    sub.add_parser("status", parents=[common], help="which runs are finished, partial or pending")
    rep = sub.add_parser("report", parents=[common], help="aggregate the finished runs into results/<study>.md/.json")
    rep.add_argument("--results-dir", default="results")
    rep.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
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

    study = load_study(args.study)
    if args.command == "report":
        r = report_mod.write(study, args.runs_root, args.results_dir, wandb=not args.no_wandb)
        print(f"wrote {args.results_dir}/{study.name}.md and .json ({len(r['runs_finished'])} of "
              f"{r['runs_total']} runs finished)")
        for c in r["claims"].values():
            for pt, d in c["points"].items():
                print(f"  {c['label']}{' at ' + pt if pt else ''}: {d['status']}")
        return 0
    planned = runner.check_all(study, args.runs_root, args.only)
    if args.command == "status" or getattr(args, "dry_run", False):
        width = max(len(p.run.key) for p in planned)
        for p in planned:
            extra = f" (to do: {', '.join(p.todo)})" if p.state == "partial" else ""
            print(f"{p.run.key.ljust(width)}  {p.state}{extra}")
        counts = {s: sum(p.state == s for p in planned) for s in ("finished", "partial", "pending")}
        root = runner.study_root(study, args.runs_root)
        pid = runner.StudyLock.holder(root)
        print(f"{study.name}: {counts['finished']} finished, {counts['partial']} partial, {counts['pending']} pending "
              f"of {len(planned)} runs under {root}" + (f"; a runner (pid {pid}) is at work" if pid else ""))
        if getattr(args, "dry_run", False):
            for p in planned:
                if p.todo:
                    for step in p.todo:
                        print("python main.py " + " ".join(_quote(a) for a in p.args[step]))
        return 0
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


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


if __name__ == "__main__":
    sys.exit(main())
