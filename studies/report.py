"""``report``: reads the metrics files of a study's finished runs, aggregates over seeds, decides the claims with
the seeds helper (studies/seeds.py) and writes ``results/<study>.md`` and ``.json`` (and plots)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import platform
import subprocess
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from studies.runner import RUN_MARK, study_root
from studies.spec import Claim, Metric, Study, StudyError, evaluate, free_axes, resolve_hook, run_name


def _read_value(study: Study, metric: Metric, run_dir: Path) -> float | None:
    path = run_dir / "metrics" / f"{metric.file}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    values = data.get("metrics", data) if isinstance(data, dict) else {}
    if metric.key not in values:
        numeric = sorted(k for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool))
        raise StudyError(
            f"{study.path}: metrics.{metric.name} reads key {metric.key!r} from {path}, which has no such metric. "
            f"Keys there: {', '.join(numeric) or 'none'}. Fix metrics.{metric.name}.key (or file)."
        )
    return float(values[metric.key]) * metric.scale


def collect(study: Study, runs_root: str | Path) -> dict[str, dict[str, dict[int, float]]]:
    """metric -> grid point ("axis=value,..." of its free axes, "" for none) -> seed -> value (finished runs)."""
    root = study_root(study, runs_root)
    out: dict[str, dict[str, dict[int, float]]] = {}
    for metric in study.metrics.values():
        if metric.expr is not None:
            continue
        stage = study.stages[metric.stage]
        free = free_axes(study, metric)
        out[metric.name] = {}
        for combo in itertools.product(*[list(study.axes[a]["values"]) for a in free]):
            point = dict(zip(free, combo))
            axes = tuple((a, metric.where.get(a, point.get(a))) for a in stage.axes)
            values = {}
            for seed in study.metric_seeds(metric.name):
                v = _read_value(study, metric, root / run_name(stage.name, axes, seed))
                if v is not None:
                    values[seed] = v
            out[metric.name][",".join(f"{a}={v}" for a, v in point.items())] = values
    pending = [m for m in study.metrics.values() if m.expr is not None]
    while pending:  # derived metrics, each after the derived metrics it reads (acyclic: checked at load)
        metric = next(m for m in pending if all(o in out for o in m.operands))
        pending.remove(metric)
        first = out[metric.operands[0]]
        out[metric.name] = {}
        for pt in first:
            per = [out[o].get(pt, {}) for o in metric.operands]
            seeds = [s for s in study.metric_seeds(metric.name) if all(s in p for p in per)]
            out[metric.name][pt] = {s: evaluate(metric, {o: p[s] for o, p in zip(metric.operands, per)})
                                    for s in seeds}
    return dict(sorted(out.items(), key=lambda kv: list(study.metrics).index(kv[0])))


def _interval(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    from studies.seeds import mean_ci

    if len(values) < 2:
        return {"n": len(values), "mean": values[0] if values else None}
    ci = mean_ci(values, confidence)
    return {"n": ci.n, "mean": ci.mean, "low": ci.low, "high": ci.high, "std": ci.std}


def decide(claim: Claim, a: dict[int, float], b: dict[int, float], seeds_a: tuple, seeds_b: tuple) -> dict[str, Any]:
    """One claim at one grid point: the seeds helper's decision, "pending" while seeds are missing, or
    "descriptive" (claims with ``descriptive: true``) when every planned seed finished but they are fewer than the
    claim's ``min_seeds`` (e.g. a
    full-scale table on 3 seeds: the numbers are reported, the claim is neither met nor failed)."""
    from studies.seeds import compare

    out: dict[str, Any] = {"test": claim.test, "margin": claim.margin, "paired": claim.paired}
    if claim.test.startswith("ratio"):
        common = sorted(set(a) & set(b))
        if len(common) < len(seeds_a):
            return {**out, "status": "pending", "why": f"{len(common)} of {len(seeds_a)} seeds finished"}
        ratios = [a[s] / b[s] for s in common]
        ok = all(r <= claim.value for r in ratios) if claim.test == "ratio_at_most" else all(
            r >= claim.value for r in ratios)
        return {**out, "status": "met" if ok else "not met", "value": claim.value, "ratios": ratios,
                "text": f"{claim.a} / {claim.b} = {min(ratios):.4g}..{max(ratios):.4g} over {len(ratios)} seed(s); "
                        f"goal {'<=' if claim.test == 'ratio_at_most' else '>='} {claim.value:g}"}
    if claim.paired:
        common = sorted(set(a) & set(b))
        xa, xb = [a[s] for s in common], [b[s] for s in common]
        need = len(seeds_a)
    else:
        xa, xb = list(a.values()), list(b.values())
        need = len(seeds_a) + len(seeds_b)
    complete = len(xa) >= len(seeds_a) and (claim.paired or len(xb) >= len(seeds_b))
    if min(len(xa), len(xb)) < claim.min_seeds and complete and claim.descriptive:
        # every planned seed finished, but fewer than the claim needs: the numbers, not a verdict
        diff = sum(xa) / len(xa) - sum(xb) / len(xb)
        text = f"{claim.a} - {claim.b} = {diff:+.3g} (mean of {min(len(xa), len(xb))} seed(s))"
        if min(len(xa), len(xb)) >= 2:
            c = compare(xa, xb, margin=claim.margin, paired=claim.paired, confidence=claim.confidence,
                        min_seeds=2, names=(claim.a, claim.b))
            text = str(c).rsplit("; margin", 1)[0]
        return {**out, "status": "descriptive", "diff": diff,
                "text": f"{text}; {min(len(xa), len(xb))} seed(s), fewer than the {claim.min_seeds} the claim needs, "
                        "so it is reported, not decided"}
    if min(len(xa), len(xb)) < claim.min_seeds:
        have = len(xa) if claim.paired else len(xa) + len(xb)
        return {**out, "status": "pending", "why": f"{have} of {need} seed runs finished; the claim is decided at "
                                                   f"{claim.min_seeds}+ seeds per side"}
    c = compare(xa, xb, margin=claim.margin, paired=claim.paired, confidence=claim.confidence,
                min_seeds=claim.min_seeds, names=(claim.a, claim.b))
    met = c.non_inferior if claim.test == "non_inferior" else c.margin_met
    return {**out, "status": "met" if met else "not met", "diff": c.diff, "low": c.low, "high": c.high,
            "n": c.n_a, "text": str(c).rsplit("; margin", 1)[0]}  # the verdict follows, by this claim's test


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return (sha or "unknown") + (" (with uncommitted changes)" if dirty else "")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node() or 'unknown host'}: {cpu}, {os.cpu_count()} logical CPU(s), {gpu}; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}")


def timing(study: Study, runs_root: str | Path) -> dict[str, float]:
    wall = cpu = 0.0
    for run in study.runs():
        path = study_root(study, runs_root) / run.key / RUN_MARK
        if path.is_file():
            for s in json.loads(path.read_text()).get("steps", []):
                wall += s.get("wall_s", 0.0)
                cpu += s.get("cpu_s", 0.0)
    return {"wall_s": wall, "cpu_s": cpu}


def build(study: Study, runs_root: str | Path) -> dict[str, Any]:
    values = collect(study, runs_root)
    metrics: dict[str, Any] = {}
    for name, points in values.items():
        m = study.metrics[name]
        metrics[name] = {"label": m.label, "stage": m.stage, "key": m.key, "file": m.file, "previous": m.previous,
                         **({"expr": m.expr} if m.expr else {}),
                         "points": {pt: {"per_seed": {str(s): v for s, v in per.items()},
                                         **_interval(list(per.values()))} for pt, per in points.items()}}
    claims: dict[str, Any] = {}
    for name, c in study.claims.items():
        sa, sb = study.metric_seeds(c.a), study.metric_seeds(c.b)
        claims[name] = {"label": c.label, "a": c.a, "b": c.b, "primary": c.primary, "points": {}}
        for pt, a in values[c.a].items():
            b = values[c.b].get(pt, values[c.b].get("", {}))
            claims[name]["points"][pt] = decide(c, a, b, sa, sb)
    runs = study.runs()
    root = study_root(study, runs_root)
    done = [r.key for r in runs if all((root / r.key / "metrics" / f"{s}.json").is_file()
                                       for s in study.steps(r.stage))]
    run_commits: dict[str, int] = {}
    for r in runs:
        path = root / r.key / "run.json"
        if path.is_file():
            c = str(json.loads(path.read_text()).get("commit") or "unknown")
            run_commits[c] = run_commits.get(c, 0) + 1
    return {
        "study": study.name, "file": str(study.path), "run_commits": run_commits, "header": study.header, "metrics": metrics, "claims": claims,
        "runs_finished": done, "runs_total": len(runs), "timing": timing(study, runs_root), "commit": commit(),
        "machine": machine(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runs_root": str(root),
    }


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1e4:
        return f"{x:.4g}"
    return f"{x:.{digits}f}"


def _digits(values: Iterable[Any]) -> int:
    """Decimals for one row of the metrics table: 2, or enough to show 3 significant digits of the row's largest
    value when every value is below 1 (an MSE of 0.0042 must not print as 0.00)."""
    top = max((abs(x) for x in values if isinstance(x, (int, float)) and math.isfinite(x) and x != 0), default=None)
    if top is None or top >= 1:
        return 2
    return min(6, 2 - math.floor(math.log10(top)))


def markdown(study: Study, r: dict[str, Any]) -> str:
    h = r["header"]
    lines = [f"# {h.get('title', study.name)}", ""]
    for key, label in (("paper", "Paper"), ("section", "Section"), ("published", "Published number")):
        if h.get(key):
            lines.append(f"**{label}:** {str(h[key]).strip()}  ")
    lines += ["", f"Study file: `{r['file']}`; runs under `{r['runs_root']}`.", ""]
    if h.get("notes"):
        lines += [str(h["notes"]).strip(), ""]
    has_prev = any(m["previous"] for m in r["metrics"].values())
    lines += ["## Metrics", "",
              "| metric | grid point | mean [95% CI] | n | per seed |" + (" previous |" if has_prev else ""),
              "|---|---|---|---|---|" + ("---|" if has_prev else "")]
    for m in r["metrics"].values():
        for pt, v in m["points"].items():
            d = _digits([v.get("mean"), v.get("low"), v.get("high"), *v["per_seed"].values()])
            ci = (f"{_fmt(v['mean'], d)} [{_fmt(v['low'], d)}, {_fmt(v['high'], d)}]" if "low" in v
                  else _fmt(v.get("mean"), d))
            per = ", ".join(f"{s}: {_fmt(x, d)}" for s, x in v["per_seed"].items())
            lines.append(f"| {m['label']} | {pt or '-'} | {ci} | {v['n']} | {per} |"
                         + (f" {m['previous'] or ''} |" if has_prev else ""))
    if has_prev and h.get("previous_source"):
        lines += ["", f"Previous: {str(h['previous_source']).strip()}"]
    lines += ["", "## Claims (margins fixed before running)", ""]
    for c in r["claims"].values():
        for pt, d in c["points"].items():
            tag = " (primary)" if c["primary"] else ""
            where = f" at {pt}" if pt else ""
            if d["status"] == "pending":
                lines.append(f"* {c['label']}{tag}{where}: **pending** ({d['why']})")
            else:
                lines.append(f"* {c['label']}{tag}{where}: {d['text']}; test {d['test']}"
                             + (f", margin {d['margin']:g}" if not d["test"].startswith("ratio") else "")
                             + f": **{d['status']}**")
    t = r["timing"]
    lines += ["", "## Provenance", "",
              f"Runs finished: {len(r['runs_finished'])} of {r['runs_total']}."
              + ("" if len(r["runs_finished"]) == r["runs_total"] else " **Incomplete.**"),
              "", "Command:", "", "```", str(h.get("command", f"python -m studies run {r['file']}")).strip(), "```",
              "", f"Runs made at commit(s): {', '.join(f'{c[:10]} ({n})' for c, n in r['run_commits'].items()) or '-'}  ",
              f"Report written at commit: {r['commit']}  ", f"Machine: {r['machine']}  ",
              (f"Time of all steps of the finished and partial runs: {t['wall_s'] / 60:.1f} min wall, "
               f"{t['cpu_s'] / 60:.1f} min CPU (process time, all threads)  "), f"Date: {r['date']}", ""]
    for plot in r.get("plots", []):
        lines += [f"![{plot['title']}]({plot['file']})", ""]
    return "\n".join(lines)


def plots(study: Study, r: dict[str, Any], out_dir: Path) -> list[dict[str, str]]:
    """One figure per ``plots`` entry: each metric's per-seed values and mean with its 95% interval."""
    if not study.plots:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for i, spec in enumerate(study.plots):
        fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(spec["metrics"]), 3.8))
        labels = []
        for x, name in enumerate(spec["metrics"]):
            m = r["metrics"][name]
            for pt, v in m["points"].items():
                ys = list(v["per_seed"].values())
                ax.scatter([x] * len(ys), ys, s=12, color="0.6", zorder=2)
                if "low" in v:
                    ax.errorbar([x], [v["mean"]], yerr=[[v["mean"] - v["low"]], [v["high"] - v["mean"]]], fmt="o",
                                color="C0", capsize=4, zorder=3)
                labels.append(textwrap.fill(m["label"], 18) + (f"\n{pt}" if pt else ""))
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel(spec.get("ylabel", ""))
        ax.set_title(spec.get("title", study.name), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        file = spec.get("file", f"{study.name}{'' if i == 0 else f'_{i}'}.png")
        fig.savefig(out_dir / file, dpi=120)
        plt.close(fig)
        made.append({"title": spec.get("title", study.name), "file": file, "path": str(out_dir / file)})
    return made


def write(study: Study, runs_root: str | Path, results_dir: str | Path = "results", wandb: bool = True) -> dict:
    """Writes ``<results_dir>/<study>.md`` / ``.json`` (+ plots) and logs them to the study's W&B group."""
    r = build(study, runs_root)
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    r["plots"] = plots(study, r, out)
    extra_md = ""
    if study.report_hook:  # the study's own tables and figures (e.g. surfaces, curves) from its run directories
        r.setdefault("extra", {})
        extra_md = resolve_hook(study.report_hook)(study, r, study_root(study, runs_root), out) or ""
    (out / f"{study.name}.json").write_text(json.dumps(r, indent=1, default=str))
    (out / f"{study.name}.md").write_text(markdown(study, r) + ("\n" + extra_md.strip() + "\n" if extra_md else ""))
    if wandb:
        log_to_wandb(study, r, runs_root)
    repo = Path(__file__).resolve().parents[1]
    if out.resolve() == (repo / "results").resolve():  # keep results/README.md's study rows in step
        from studies import readme

        readme.update(repo)
    return r


def log_to_wandb(study: Study, r: dict[str, Any], runs_root: str | Path) -> None:
    """A short W&B run of job type "report" in the study's group: the metrics table, the claims, the plots."""
    import wandb

    from main import PROJECT, wandb_has_credentials

    save_dir = study_root(study, runs_root) / "report"
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=PROJECT, group=study.name, job_type="report", name=f"{study.name}/report",
                     dir=str(save_dir), mode="online" if wandb_has_credentials() else "offline",
                     config={"study": study.name, "file": r["file"], "commit": r["commit"], "machine": r["machine"]},
                     reinit="finish_previous")
    try:
        table = wandb.Table(columns=["metric", "grid point", "mean", "low", "high", "n", "per seed"])
        for m in r["metrics"].values():
            for pt, v in m["points"].items():
                table.add_data(m["label"], pt, v.get("mean"), v.get("low"), v.get("high"), v["n"],
                               json.dumps(v["per_seed"]))
        claims = wandb.Table(columns=["claim", "grid point", "status", "text"])
        for c in r["claims"].values():
            for pt, d in c["points"].items():
                claims.add_data(c["label"], pt, d["status"], d.get("text", d.get("why", "")))
        payload: dict[str, Any] = {"metrics": table, "claims": claims}
        for p in r.get("plots", []):
            payload[f"plots/{Path(p['file']).stem}"] = wandb.Image(p["path"])
        run.log(payload)
    finally:
        run.finish()
