"""The study file format (``studies/<name>.yaml``): parsing, checks, and the expansion into runs.

See studies/README.md for the format. Everything here is pure: no run is started and nothing is written.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOP_KEYS = {"name", "header", "seeds", "seed_overrides", "axes", "stages", "metrics", "claims", "plots",
            "report_hook"}
HEADER_KEYS = {"title", "paper", "section", "published", "command", "notes", "previous_source"}
STAGE_KEYS = {"recipe", "overrides", "init_from", "checkpoints", "seeds", "budget_min", "test", "report", "gpus",
              "fit", "validate", "export", "export_latency"}
METRIC_KEYS = {"stage", "file", "key", "scale", "where", "label", "previous", "seeds", "expr"}
EXPR_FUNCS = {"abs": abs, "min": min, "max": max, "log": math.log, "exp": math.exp, "sqrt": math.sqrt}
CLAIM_KEYS = {"a", "b", "test", "margin", "paired", "min_seeds", "confidence", "value", "primary", "label",
              "descriptive"}
CLAIM_TESTS = ("non_inferior", "beats", "ratio_at_most", "ratio_at_least")
METRIC_FILES = ("fit", "validate", "test", "report", "export")
DEFAULT_BUDGET_MIN = 60.0


class StudyError(ValueError):
    """A user-facing error about a study file or its runs (printed as one paragraph)."""

    user_facing = True


@dataclass(frozen=True)
class Stage:
    name: str
    recipe: str
    overrides: dict[str, Any]
    init_from: str | None
    checkpoints: dict[str, str]  # config key -> upstream stage (its run's last.ckpt)
    seeds: tuple[int, ...]
    budget_min: float
    test: bool
    report: bool
    axes: tuple[str, ...]  # the axes that apply to this stage, in the study's axis order
    gpus: int = 1  # GPUs of one run on a cluster (one task per GPU, one node); local runs ignore it
    fit: bool = True  # False: no training; validate/test the init_from stage's last.ckpt with this stage's recipe
    validate: bool = False  # also `main.py validate` (on the run's last.ckpt, or the upstream's when fit is False)
    export: bool = False  # also `main.py export --format onnx --latency true` (metrics/export.json: size, latency)
    export_latency: bool = True  # false: export and check only, no onnxruntime timing (e.g. in a smoke run)

    @property
    def upstream(self) -> list[str]:
        names = ([self.init_from] if self.init_from else []) + list(self.checkpoints.values())
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Metric:
    name: str
    stage: str
    file: str
    key: str
    scale: float
    where: dict[str, str]
    label: str
    previous: str | None
    seeds: tuple[int, ...] | None = None  # only these seeds of the stage (a subset); None: all of them
    expr: str | None = None  # a derived metric: arithmetic over other metrics, per seed (stage/file/key unused)
    operands: tuple[str, ...] = ()  # the metric names ``expr`` reads


@dataclass(frozen=True)
class Claim:
    name: str
    a: str
    b: str
    test: str
    margin: float
    paired: bool
    min_seeds: int
    confidence: float
    value: float | None
    primary: bool
    label: str
    descriptive: bool = False  # below min_seeds with every seed finished: report the numbers, not "pending"


@dataclass(frozen=True)
class Run:
    """One planned ``main.py fit`` (and its ``test``/``report``) of a stage at one point of the grid."""

    stage: str
    axes: tuple[tuple[str, str], ...]  # (axis, value name) of the axes that apply to the stage
    seed: int

    @property
    def key(self) -> str:
        return run_name(self.stage, self.axes, self.seed)


def run_name(stage: str, axes: tuple[tuple[str, str], ...], seed: int) -> str:
    parts = [stage] + ([",".join(f"{a}={v}" for a, v in axes)] if axes else []) + [f"seed{seed}"]
    return "/".join(parts)


@dataclass
class Study:
    path: Path
    name: str
    header: dict[str, Any]
    seeds: tuple[int, ...]
    seed_overrides: tuple[str, ...]
    axes: dict[str, dict[str, Any]]  # axis -> {"stages": [...], "values": {name: overrides}}
    stages: dict[str, Stage]
    metrics: dict[str, Metric]
    claims: dict[str, Claim]
    plots: list[dict[str, Any]] = field(default_factory=list)
    report_hook: str | None = None  # "module:function" called by `report` (extra markdown, plots, tables)

    # ---------------------------------------------------------------------------------------- expansion
    def order(self) -> list[str]:
        """Stage names, every stage after the stages it starts from (checked acyclic at load)."""
        return _topological(self.path, self.stages)

    def runs(self, only: list[str] | None = None) -> list[Run]:
        """Every run of the study (or of ``only`` and the stages they need), upstream stages first."""
        wanted = set(self.order()) if not only else self._with_upstream(only)
        out = []
        for name in self.order():
            if name not in wanted:
                continue
            stage = self.stages[name]
            grids = [[(a, v) for v in self.axes[a]["values"]] for a in stage.axes]
            for combo in itertools.product(*grids):
                for seed in stage.seeds:
                    out.append(Run(name, tuple(combo), seed))
        return out

    def _with_upstream(self, only: list[str]) -> set[str]:
        for name in only:
            if name not in self.stages:
                raise StudyError(f"{self.path}: --only names stage {name!r}, which the study does not have "
                                 f"(stages: {', '.join(self.stages)}).")
        todo, seen = list(only), set()
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += self.stages[name].upstream
        return seen

    def upstream_run(self, run: Run, stage: str) -> Run:
        """The run of ``stage`` that ``run`` starts from: same seed, same values of the axes both stages have."""
        values = dict(run.axes)
        return Run(stage, tuple((a, values[a]) for a in self.stages[stage].axes), run.seed)

    def steps(self, stage: str) -> list[str]:
        """The main.py subcommands of one run of ``stage``: ``fit``, then ``test`` (on the run's last.ckpt) and
        ``report`` (MACs and parameters) when the stage asks for them or a metric reads them."""
        s = self.stages[stage]
        reads = {m.file for m in self.metrics.values() if m.stage == stage and m.expr is None}
        return (["fit"] if s.fit else []) + [f for f in ("validate", "test", "report", "export")
                                              if getattr(s, f) or f in reads]

    def metric_seeds(self, name: str) -> tuple[int, ...]:
        """The seeds a metric has values for when every run finished: its ``seeds`` (or its stage's); a derived
        metric has the seeds common to its operands."""
        m = self.metrics[name]
        if m.expr is not None:
            common = [self.metric_seeds(o) for o in m.operands]
            return tuple(s for s in common[0] if all(s in c for c in common[1:]))
        return m.seeds if m.seeds is not None else self.stages[m.stage].seeds

    def overrides(self, run: Run) -> dict[str, Any]:
        """The config overrides of one run: the stage's, then each axis value's, then the seed."""
        stage = self.stages[run.stage]
        out = dict(stage.overrides)
        for axis, value in run.axes:
            out.update(self.axes[axis]["values"][value] or {})
        for key in self.seed_overrides:
            out[key] = run.seed
        return out


# -------------------------------------------------------------------------------------------- loading
def load_study(path: str | Path, repo_root: str | Path = ".") -> Study:
    """Reads and checks a study file; raises :class:`StudyError` naming the file and key on bad input."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise StudyError(f"Cannot read the study file {path}: {e.strerror or e}. Give the path of a "
                         "studies/<name>.yaml file.") from None
    except yaml.YAMLError as e:
        raise StudyError(f"The study file {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise StudyError(f"The study file {path} must hold a mapping with at least 'stages' and 'metrics'.")
    where = str(path)
    _unknown(where, "", data, TOP_KEYS)
    name = str(data.get("name") or path.stem)
    if "/" in name or name in ("", ".", ".."):
        raise StudyError(f"{where}: 'name' must be a plain folder name, got {name!r}.")
    header = data.get("header") or {}
    if not isinstance(header, dict):
        raise StudyError(f"{where}: 'header' must be a mapping (paper, section, published, command, notes).")
    _unknown(where, "header.", header, HEADER_KEYS)
    seeds = _seeds(where, "seeds", data.get("seeds", [0]))
    seed_overrides = data.get("seed_overrides", ["seed_everything"])
    if not isinstance(seed_overrides, list) or not all(isinstance(k, str) for k in seed_overrides):
        raise StudyError(f"{where}: 'seed_overrides' must be a list of config keys set to the run's seed, e.g. "
                         "[seed_everything, data.init_args.seed].")
    axes = _axes(where, data.get("axes") or {})
    stages = _stages(where, data.get("stages"), seeds, axes, Path(repo_root))
    for axis, spec in axes.items():
        for s in spec["stages"]:
            if s not in stages:
                raise StudyError(f"{where}: axes.{axis}.stages names {s!r}, which is not a stage "
                                 f"(stages: {', '.join(stages)}).")
    study = Study(path=path, name=name, header=header, seeds=seeds, seed_overrides=tuple(seed_overrides),
                  axes=axes, stages=stages, metrics={}, claims={}, plots=list(data.get("plots") or []),
                  report_hook=_report_hook(where, data.get("report_hook")))
    study.order()  # refuses cycles
    _check_chain_axes(study)
    study.metrics = _metrics(study, data.get("metrics"))
    study.claims = _claims(study, data.get("claims") or {})
    for i, plot in enumerate(study.plots):
        if not isinstance(plot, dict) or not isinstance(plot.get("metrics"), list):
            raise StudyError(f"{where}: plots[{i}] must be a mapping with a 'metrics' list (and optional 'title', "
                             "'ylabel', 'file').")
        for m in plot["metrics"]:
            if m not in study.metrics:
                raise StudyError(_unknown_name(where, f"plots[{i}].metrics", m, study.metrics, "metric"))
    return study


def _report_hook(where: str, value: Any) -> str | None:
    """Checks ``report_hook: "package.module:function"`` (imported and looked up now, so a typo fails at load)."""
    if value is None:
        return None
    import importlib

    module, _, func = str(value).partition(":")
    if not module or not func:
        raise StudyError(f"{where}: report_hook must be 'package.module:function', got {value!r}.")
    try:
        ok = callable(getattr(importlib.import_module(module), func, None))
    except ImportError as e:
        raise StudyError(f"{where}: report_hook names the module {module!r}, which cannot be imported ({e}).") from None
    if not ok:
        raise StudyError(f"{where}: report_hook names {func!r}, which module {module} does not define as a function.")
    return str(value)


def resolve_hook(value: str) -> Any:
    import importlib

    module, _, func = value.partition(":")
    return getattr(importlib.import_module(module), func)


def _unknown(where: str, prefix: str, data: dict, allowed: set[str]) -> None:
    import difflib

    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise StudyError(f"{where}: unknown key {prefix}{key}.{hint} Allowed here: {', '.join(sorted(allowed))} "
                             "(see studies/README.md).")


def _unknown_name(where: str, key: str, value: Any, known: dict, what: str) -> str:
    import difflib

    close = difflib.get_close_matches(str(value), list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"{where}: {key} names the {what} {value!r}, which the study does not define.{hint} "
            f"Defined {what}s: {', '.join(known) or 'none'}.")


def _seeds(where: str, key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in value):
        raise StudyError(f"{where}: {key} must be a non-empty list of integer seeds, got {value!r}.")
    if len(set(value)) != len(value):
        raise StudyError(f"{where}: {key} lists a seed twice: {value!r}.")
    return tuple(value)


def _overrides(where: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise StudyError(f"{where}: {key} must be a mapping of dotted config keys to values, e.g. "
                         "{trainer.max_epochs: 2, model.init_args.optimizer.init_args.lr: 0.01}.")
    for k in value:
        if k.lstrip("-") in ("ckpt_path", "run_name", "runs_root", "init_from") or k.startswith("--"):
            raise StudyError(f"{where}: {key} sets {k!r}, which the runner sets itself (run directories and "
                             "init_from come from the study; write the key without dashes otherwise).")
    return dict(value)


def _axes(where: str, data: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        raise StudyError(f"{where}: 'axes' must be a mapping axis -> {{values: {{name: overrides}}, stages: [...]}}.")
    out = {}
    for axis, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("values"), dict) or not spec["values"]:
            raise StudyError(f"{where}: axes.{axis} must be a mapping with 'values' (a non-empty mapping value name "
                             "-> overrides) and optional 'stages' (the stages it applies to; default all).")
        _unknown(where, f"axes.{axis}.", spec, {"values", "stages"})
        for v in spec["values"]:
            if not str(v).replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise StudyError(f"{where}: axes.{axis}.values: the value name {v!r} must be letters, digits, "
                                 "'.', '_' or '-' (it names run directories).")
        values = {str(v): _overrides(where, f"axes.{axis}.values.{v}", o) for v, o in spec["values"].items()}
        stages = spec.get("stages")
        out[str(axis)] = {"values": values, "stages": list(stages) if stages is not None else None}
    return out


def _stages(where: str, data: Any, seeds: tuple[int, ...], axes: dict, root: Path) -> dict[str, Stage]:
    if not isinstance(data, dict) or not data:
        raise StudyError(f"{where}: 'stages' must be a non-empty mapping stage name -> {{recipe: ..., ...}}.")
    out = {}
    for name, spec in data.items():
        key = f"stages.{name}"
        if not isinstance(spec, dict) or "recipe" not in spec:
            raise StudyError(f"{where}: {key} must be a mapping with at least 'recipe' (a recipes/*.yaml path).")
        _unknown(where, key + ".", spec, STAGE_KEYS)
        recipe = str(spec["recipe"])
        if not (root / recipe).is_file():
            raise StudyError(f"{where}: {key}.recipe names {recipe!r}, which does not exist (looked for "
                             f"{root / recipe}). Give a recipe path relative to the repository root, e.g. "
                             "recipes/glyphs/resnet20_pooled_glyphs.yaml.")
        checkpoints = spec.get("checkpoints") or {}
        if not isinstance(checkpoints, dict) or not all(isinstance(v, str) for v in checkpoints.values()):
            raise StudyError(f"{where}: {key}.checkpoints must map config keys to stage names, e.g. "
                             "{model.init_args.student_ckpt: student_ce}.")
        for upstream in ([spec["init_from"]] if spec.get("init_from") else []) + list(checkpoints.values()):
            if upstream not in data:
                what = "init_from" if upstream == spec.get("init_from") else "checkpoints"
                raise StudyError(_unknown_name(where, f"{key}.{what}", upstream, data, "stage"))
        budget = spec.get("budget_min", DEFAULT_BUDGET_MIN)
        if not isinstance(budget, int | float) or isinstance(budget, bool) or budget <= 0:
            raise StudyError(f"{where}: {key}.budget_min must be a positive number of minutes (the time limit of "
                             f"one run), got {budget!r}.")
        gpus = spec.get("gpus", 1)
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
            raise StudyError(f"{where}: {key}.gpus must be a positive integer (GPUs of one run on a cluster), got "
                             f"{gpus!r}.")
        stage_axes = tuple(a for a, s in axes.items() if s["stages"] is None or name in s["stages"])
        for flag in ("fit", "validate", "test", "report", "export", "export_latency"):
            if flag in spec and not isinstance(spec[flag], bool):
                raise StudyError(f"{where}: {key}.{flag} must be true or false, got {spec[flag]!r}.")
        fit = spec.get("fit", True)
        if not fit:
            if not spec.get("init_from"):
                raise StudyError(f"{where}: {key} has fit: false, so it trains nothing and evaluates the last.ckpt "
                                 "of an earlier stage: name that stage with init_from.")
            if not (spec.get("validate") or spec.get("test")):
                raise StudyError(f"{where}: {key} has fit: false but neither validate: true nor test: true, so it "
                                 "would run nothing; set the step(s) it should run on the init_from stage's weights.")
        if "export_latency" in spec and not spec.get("export"):
            raise StudyError(f"{where}: {key}.export_latency is set but {key}.export is not true: the latency is "
                             "measured by the export step; set export: true, or remove export_latency.")
        flags = {"fit": bool(fit), "validate": bool(spec.get("validate", False)),
                 "export": bool(spec.get("export", False)), "export_latency": bool(spec.get("export_latency", True))}
        out[str(name)] = Stage(
            name=str(name), recipe=recipe, overrides=_overrides(where, f"{key}.overrides", spec.get("overrides")),
            init_from=spec.get("init_from"), checkpoints=dict(checkpoints),
            seeds=_seeds(where, f"{key}.seeds", spec["seeds"]) if "seeds" in spec else seeds,
            budget_min=float(budget), test=bool(spec.get("test", False)), report=bool(spec.get("report", False)),
            axes=stage_axes, gpus=gpus, **flags,
        )
    return out


def _topological(path: Path, stages: dict[str, Stage]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = chain[chain.index(name):] + [name]
            raise StudyError(f"{path}: the stages form a cycle through init_from/checkpoints: "
                             f"{' -> '.join(cycle)} (each name starts from the next). A stage can only start "
                             "from a stage that does not start from it; remove one of these links.")
        state[name] = 1
        for up in stages[name].upstream:
            visit(up, chain + [name])
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


def _check_chain_axes(study: Study) -> None:
    for stage in study.stages.values():
        for up in stage.upstream:
            missing = [a for a in study.stages[up].axes if a not in stage.axes]
            if missing:
                raise StudyError(f"{study.path}: stage {stage.name!r} starts from stage {up!r}, which varies along "
                                 f"the axis {missing[0]!r} while {stage.name!r} does not, so it is not clear which "
                                 f"of {up!r}'s runs to start from; add {stage.name!r} to axes.{missing[0]}.stages.")
            absent = [s for s in stage.seeds if s not in study.stages[up].seeds]
            if absent:
                raise StudyError(f"{study.path}: stage {stage.name!r} runs seeds {absent} that its upstream stage "
                                 f"{up!r} does not run; a chained run starts from the upstream run of the same seed.")


def _metrics(study: Study, data: Any) -> dict[str, Metric]:
    where = str(study.path)
    if not isinstance(data, dict) or not data:
        raise StudyError(f"{where}: 'metrics' must be a non-empty mapping name -> {{stage, key, file}} (the values "
                         "the report reads from each finished run).")
    out: dict[str, Metric] = {}
    derived = {}
    for name, spec in data.items():
        key = f"metrics.{name}"
        if isinstance(spec, dict) and "expr" in spec:
            _unknown(where, key + ".", spec, {"expr", "label", "previous"})
            derived[str(name)] = spec
            continue
        if not isinstance(spec, dict) or "stage" not in spec or "key" not in spec:
            raise StudyError(f"{where}: {key} must be a mapping with 'stage' and 'key' (e.g. key: test/acc1), or "
                             "with 'expr' (a metric derived from others, e.g. expr: \"train_acc - test_acc\").")
        _unknown(where, key + ".", spec, METRIC_KEYS)
        if spec["stage"] not in study.stages:
            raise StudyError(_unknown_name(where, f"{key}.stage", spec["stage"], study.stages, "stage"))
        stage = study.stages[spec["stage"]]
        file = str(spec.get("file", "test"))
        if file not in METRIC_FILES:
            raise StudyError(f"{where}: {key}.file must be one of {', '.join(METRIC_FILES)} (metrics/<file>.json of "
                             f"the run), got {file!r}.")
        where_axes = {str(a): str(v) for a, v in (spec.get("where") or {}).items()}
        for a, v in where_axes.items():
            if a not in stage.axes or v not in study.axes[a]["values"]:
                raise StudyError(f"{where}: {key}.where fixes {a}={v}, which is not an axis value of stage "
                                 f"{stage.name!r} (its axes: {', '.join(stage.axes) or 'none'}).")
        seeds = None
        if "seeds" in spec:
            seeds = _seeds(where, f"{key}.seeds", spec["seeds"])
            extra = [x for x in seeds if x not in stage.seeds]
            if extra:
                raise StudyError(f"{where}: {key}.seeds lists seed(s) {extra} that stage {stage.name!r} does not run "
                                 f"(its seeds: {list(stage.seeds)}); give a subset of the stage's seeds.")
        out[str(name)] = Metric(name=str(name), stage=stage.name, file=file, key=str(spec["key"]),
                                scale=float(spec.get("scale", 1.0)), where=where_axes,
                                label=str(spec.get("label", name)),
                                previous=None if spec.get("previous") is None else str(spec["previous"]), seeds=seeds)
    for name in _derived_order(where, derived, out):
        spec = derived[name]
        operands = _expr_names(where, f"metrics.{name}.expr", spec["expr"])
        first = out[operands[0]]
        axes = {o: set(free_axes(study, out[o])) for o in operands}
        if len({frozenset(a) for a in axes.values()}) > 1:
            shown = "; ".join(f"{o}: {', '.join(sorted(a)) or 'none'}" for o, a in axes.items())
            raise StudyError(f"{where}: metrics.{name}.expr combines metrics that vary along different axes ({shown});"
                             " fix the extra axes with 'where' in those metrics.")
        out[name] = Metric(name=name, stage=first.stage, file=first.file, key="", scale=1.0, where=first.where,
                           label=str(spec.get("label", name)),
                           previous=None if spec.get("previous") is None else str(spec["previous"]),
                           expr=str(spec["expr"]), operands=tuple(operands))
    return {str(k): out[str(k)] for k in data}


_EXPR_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub,
               ast.UAdd, ast.Constant, ast.Name, ast.Load, ast.Call)


def _expr_names(where: str, key: str, expr: Any) -> list[str]:
    """The metric names an ``expr`` reads (checked: only arithmetic, numbers, metric names and EXPR_FUNCS)."""
    try:
        tree = ast.parse(str(expr), mode="eval")
    except SyntaxError as e:
        raise StudyError(f"{where}: {key} is not a valid expression ({e.msg}): {expr!r}. Write arithmetic over "
                         "metric names, e.g. \"train_acc - test_acc\".") from None
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, _EXPR_NODES) or (isinstance(node, ast.Constant)
                                                 and not isinstance(node.value, int | float)):
            raise StudyError(f"{where}: {key} may hold only + - * / ** , numbers, parentheses, metric names and "
                             f"{', '.join(EXPR_FUNCS)}(...); {type(node).__name__} is not allowed in {expr!r}.")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in EXPR_FUNCS):
            raise StudyError(f"{where}: {key} calls a function other than {', '.join(EXPR_FUNCS)} in {expr!r}.")
        if isinstance(node, ast.Name) and node.id not in EXPR_FUNCS and node.id not in names:
            names.append(node.id)
    if not names:
        raise StudyError(f"{where}: {key} reads no metric: {expr!r}.")
    return names


def _derived_order(where: str, derived: dict[str, dict], base: dict[str, Metric]) -> list[str]:
    """Derived metrics, each after the derived metrics it reads; unknown names and cycles refused."""
    order: list[str] = []

    def visit(name: str, chain: list[str]) -> None:
        if name in order:
            return
        if name in chain:
            raise StudyError(f"{where}: the derived metrics {' -> '.join(chain + [name])} read each other in a cycle.")
        for o in _expr_names(where, f"metrics.{name}.expr", derived[name]["expr"]):
            if o in derived:
                visit(o, chain + [name])
            elif o not in base:
                raise StudyError(_unknown_name(where, f"metrics.{name}.expr", o, {**base, **derived}, "metric"))
        order.append(name)

    for name in derived:
        visit(name, [])
    return order


def evaluate(metric: Metric, values: dict[str, float]) -> float:
    """A derived metric's value from its operands' values (one seed, one grid point)."""
    return float(eval(compile(metric.expr, metric.name, "eval"), {"__builtins__": {}, **EXPR_FUNCS}, values))  # noqa: S307 - checked by _expr_names


def free_axes(study: Study, metric: Metric) -> tuple[str, ...]:
    return tuple(a for a in study.stages[metric.stage].axes if a not in metric.where)


def _claims(study: Study, data: Any) -> dict[str, Claim]:
    where = str(study.path)
    if not isinstance(data, dict):
        raise StudyError(f"{where}: 'claims' must be a mapping name -> {{a, b, test, margin, paired}}.")
    out = {}
    for name, spec in data.items():
        key = f"claims.{name}"
        if not isinstance(spec, dict) or "a" not in spec or "b" not in spec:
            raise StudyError(f"{where}: {key} must be a mapping with 'a' and 'b' (metric names) and 'test'.")
        _unknown(where, key + ".", spec, CLAIM_KEYS)
        for side in ("a", "b"):
            if spec[side] not in study.metrics:
                raise StudyError(_unknown_name(where, f"{key}.{side}", spec[side], study.metrics, "metric"))
        test = spec.get("test", "beats")
        if test not in CLAIM_TESTS:
            raise StudyError(f"{where}: {key}.test must be one of {', '.join(CLAIM_TESTS)}, got {test!r}.")
        ma, mb = study.metrics[spec["a"]], study.metrics[spec["b"]]
        paired = bool(spec.get("paired", True))
        sa, sb = study.metric_seeds(ma.name), study.metric_seeds(mb.name)
        if (paired or test.startswith("ratio")) and set(sa) != set(sb):
            raise StudyError(f"{where}: {key} pairs {ma.name} (stage {ma.stage!r}, seeds {list(sa)}) with {mb.name} "
                             f"(stage {mb.stage!r}, seeds {list(sb)}) by seed, but the two read different seeds; "
                             "give both stages the same seeds, pick the common seeds with 'seeds' in the metric, or "
                             "set paired: false for a Welch comparison.")
        fa, fb = free_axes(study, ma), free_axes(study, mb)
        if fb and set(fb) != set(fa):
            raise StudyError(f"{where}: {key}: {mb.name} varies along {', '.join(fb)} but {ma.name} along "
                             f"{', '.join(fa) or 'nothing'}; fix the extra axes with 'where' in the metric.")
        value = spec.get("value")
        if test.startswith("ratio") and not isinstance(value, int | float):
            raise StudyError(f"{where}: {key}: test {test} needs 'value' (the bound on a / b, e.g. 0.75).")
        min_seeds = spec.get("min_seeds", 5)
        lowest = 1 if test.startswith("ratio") else 2  # exact ratios (MACs) hold on any seed; intervals need 2
        if not isinstance(min_seeds, int) or isinstance(min_seeds, bool) or min_seeds < lowest:
            raise StudyError(f"{where}: {key}.min_seeds must be an integer >= {lowest} (a 95% interval needs 2 "
                             f"seeds; the house rule for claims is 5), got {min_seeds!r}.")
        margin = spec.get("margin", 0.0)
        if not isinstance(margin, int | float) or margin < 0:
            raise StudyError(f"{where}: {key}.margin must be a number >= 0 fixed before running, got {margin!r}.")
        out[str(name)] = Claim(
            name=str(name), a=ma.name, b=mb.name, test=test, margin=float(margin), paired=paired,
            min_seeds=min_seeds, confidence=float(spec.get("confidence", 0.95)),
            value=None if value is None else float(value), primary=bool(spec.get("primary", False)),
            label=str(spec.get("label", name)), descriptive=bool(spec.get("descriptive", False)),
        )
    return out


def with_seed_count(study: Study, n: int) -> Study:
    """The study with seeds 0..n-1 in every stage (``--seeds N``: e.g. 5 seeds for a claim, 1 for a quick look)."""
    import dataclasses

    if n < 1:
        raise StudyError(f"--seeds must be >= 1 (the number of seeds of every stage), got {n}.")
    seeds = tuple(range(n))
    stages = {k: dataclasses.replace(s, seeds=seeds) for k, s in study.stages.items()}
    metrics = {k: dataclasses.replace(m, seeds=None) for k, m in study.metrics.items()}  # every seed of the stage
    return dataclasses.replace(study, seeds=seeds, stages=stages, metrics=metrics)


def as_cli_value(value: Any) -> str:
    """A config value as one command-line token jsonargparse parses back to it."""
    if isinstance(value, str):
        return value
    return json.dumps(value)
