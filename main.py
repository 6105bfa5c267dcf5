"""LightningCLI entry point of the recipe collection.

    python main.py fit --config recipes/quickstart.yaml
    python main.py fit --config recipes/quickstart.yaml --ckpt_path last        # resume this run
    python main.py fit --config recipes/baseline_resnet56_cifar10.yaml --trainer.strategy=ddp --trainer.devices=4
    python main.py test --config recipes/quickstart.yaml --ckpt_path last       # test the run's last.ckpt
    python main.py report --config recipes/baseline_vgg16_cifar10.yaml --json vgg16.json --convention li2017
    python main.py export --config recipes/quickstart.yaml --ckpt_path last --format onnx

Any LightningModule (``model.class_path``) and LightningDataModule (``data.class_path``) can be used. What this
entry point adds to a plain LightningCLI:

* Run layout: every run writes under ``<runs_root>/<run_name>/`` (default ``runs/<recipe file stem>/``):
  ``checkpoints/`` (``last.ckpt`` every epoch), ``config.yaml`` (the resolved config of the fit), ``run.json``
  (the run's identity and W&B id), ``metrics/<subcommand>.json`` (the final metrics, plain JSON) and the W&B files.
* Run identity: a fresh ``fit`` never overwrites a run that holds a checkpoint (it refuses; ``--overwrite`` moves
  the old run aside). ``--ckpt_path last`` resumes it (and fails clearly when there is nothing to resume);
  ``--ckpt_path auto`` (for launchers) resumes when the stored identity matches, starts fresh when there is no
  checkpoint and refuses on a mismatch. A resume continues the same W&B run.
* W&B: a ``WandbLogger`` unless the recipe names another logger; offline when no credentials are found or
  ``WANDB_MODE=offline``; its run is created only once the data and callbacks have set up.
* ``--init_from``: start from an earlier stage's weights: a ``.ckpt`` file, a run directory or a recipe name
  (both resolve to ``runs/<name>/checkpoints/last.ckpt``). Ignored when resuming with ``--ckpt_path``.
* Safe loading: checkpoints load with ``torch.load(weights_only=True)``; ``--trust_checkpoint`` opts out for a
  file you trust.
* ``data.num_classes`` and ``data.input_shape`` are linked to the model's ``num_classes`` and ``input_shape``
  where the model takes them.
* ``report``: parameters and MACs of the model a recipe builds, without data or training, after the structural
  callbacks of the recipe (those with an ``apply_structure(pl_module)`` method) have been applied.
* ``export``: the trained net as ONNX or a ``torch.export`` program, checked against eager PyTorch.
* Clear one-paragraph errors for config mistakes (file, line, key and a close match), missing data, NaN loss,
  unreadable checkpoints and checkpoints of another architecture.
"""

from __future__ import annotations

import datetime
import difflib
import inspect
import json as jsonlib
import logging
import os
import pickle
import re
import secrets
import shutil
import string
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

import lightning.pytorch as pl
from callbacks.efficiency_report import count_macs, count_params
from callbacks.nonfinite_loss_guard import NonFiniteLossError, NonFiniteLossGuard

PROJECT = "efficient-recipes"
CHECKPOINT_SUBDIR = "checkpoints"
RUN_FILE = "run.json"


class RecipeError(RuntimeError):
    """A user-facing error of the recipe runner (bad path, wrong checkpoint, run identity, ...)."""


class ConfigError(RecipeError):
    """A config (YAML or command line) that the parser rejected; the message is jsonargparse's."""

    def __init__(self, message: str, parser: Any = None) -> None:
        super().__init__(message)
        self.parser = parser


# ---------------------------------------------------------------------------------------------- third-party noise
class _DropRecords(logging.Filter):
    """Drops log records that carry one of a few known third-party tips (nothing else)."""

    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.needles)


def quiet_third_party_noise() -> None:
    """Filters the advertising tip of Lightning and a deprecation warning that torch raises inside Lightning."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropRecords("litlogger"))
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


# ---------------------------------------------------------------------------------------------- W&B helpers
def wandb_has_credentials() -> bool:
    """True when W&B could log online: an API key in the environment or a login in ~/.netrc."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    return wandb_login_found()


def wandb_login_found() -> bool:
    """True when an API key is in the environment or a W&B login is in ~/.netrc (whatever WANDB_MODE says)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_run_dir(logger: WandbLogger) -> str | None:
    """The local directory of the logger's run (``.../wandb/offline-run-...``)."""
    experiment = logger.experiment
    files_dir = getattr(experiment, "dir", None)
    return os.path.dirname(files_dir) if files_dir else None


def _in_git_repo() -> bool:
    try:
        return subprocess.run(["git", "rev-parse", "--git-dir"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RecipeWandbLogger(WandbLogger):
    """``WandbLogger`` whose W&B run is created only once :meth:`arm` is called.

    Lightning touches ``logger.experiment`` before the datamodule's ``setup``; a run that then fails (e.g. the data
    is missing) would leave an empty W&B run behind. Until armed (by :class:`ArmWandb`, the first callback's
    ``setup``, i.e. after the data has set up), the experiment is a no-op stand-in. It resumes the W&B run of the
    given ``id`` (``resume="allow"``), drops the ``anonymous`` argument that current wandb warns about, and keeps
    wandb's own end-of-run sync hint quiet (the CLI prints one hint itself).
    """

    def __init__(self, name: str | None = None, save_dir: str = ".", project: str | None = None,
                 id: str | None = None, offline: bool = False, log_model: bool = False,
                 resume: str | None = "allow", group: str | None = None, job_type: str | None = None,
                 tags: list[str] | None = None) -> None:
        import wandb

        extra: dict[str, Any] = {"resume": resume} if resume else {}
        extra.update({k: v for k, v in (("group", group), ("job_type", job_type), ("tags", tags)) if v})
        super().__init__(name=name, save_dir=save_dir, project=project, id=id, offline=offline,
                         log_model=log_model, settings=wandb.Settings(quiet=True, disable_git=not _in_git_repo()),
                         **extra)
        self._wandb_init.pop("anonymous", None)
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    @property
    def experiment(self) -> Any:
        if not self._armed and self._experiment is None:
            from lightning.fabric.loggers.logger import _DummyExperiment

            return _DummyExperiment()
        if self._experiment is not None:
            return super().experiment
        # resuming a run whose previous process was killed: its wandb service may hold the run id for a few
        # seconds ("run ID ... is in use"); wait for it, then log to a new W&B run rather than fail the training
        for delay in (1, 2, 4, 8, 15, 0):
            try:
                return super().experiment
            except Exception as err:  # wandb raises its own ServerResponseError
                if "is in use" not in str(err):
                    raise
                if delay:
                    time.sleep(delay)
        old = self._wandb_init.get("id")
        self._id = self._wandb_init["id"] = "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                                    for _ in range(8))
        warnings.warn(f"The W&B run {old} is still held by an earlier process; this run logs to the new W&B run "
                      f"{self._id} instead.", stacklevel=2)
        return super().experiment


class ArmWandb(pl.Callback):
    """Arms the run's :class:`RecipeWandbLogger` in ``setup`` (which Lightning calls after the datamodule's)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            arm = getattr(logger, "arm", None)
            if callable(arm):
                arm()


class KeepRunMetrics(pl.Callback):
    """Keeps a run's scalar metrics across ``--ckpt_path`` so that ``metrics/fit.json`` of a resumed run holds
    what the uninterrupted run's would.

    Every checkpoint stores the scalars of ``trainer.callback_metrics`` (under ``run_metrics``). On resume, the
    ones that the resumed fit does not log again are put back at the end of the fit. This matters most for a run
    killed after its last checkpoint but before ``fit.json`` was written: resuming it trains no further step, so
    without the stored values the metrics that probes log at the end of training would be missing."""

    KEY = "run_metrics"

    def __init__(self) -> None:
        self.restored: dict[str, float] = {}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[self.KEY] = {**self.restored, **{k: float(v) for k, v in trainer.callback_metrics.items()
                                                    if isinstance(v, torch.Tensor) and v.numel() == 1}}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get(self.KEY)
        self.restored = {str(k): float(v) for k, v in saved.items()} if isinstance(saved, dict) else {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key, value in self.restored.items():
            if key not in trainer.callback_metrics:
                trainer.callback_metrics[key] = torch.tensor(value)


# ---------------------------------------------------------------------------------------------- safe loading
# What this project's checkpoints hold beyond tensors and plain containers (hyperparameters may keep paths).
SAFE_GLOBALS: list[Any] = [Path, type(Path()), getattr(__import__("pathlib"), "PurePosixPath")]


def load_checkpoint(path: str | Path, trust: bool = False, mmap: bool = False) -> dict[str, Any]:
    """Loads a checkpoint file safely (``torch.load(weights_only=True)`` with only this project's globals).

    Raises :class:`RecipeError` with one paragraph for a missing, truncated or non-PyTorch file, for a file that
    needs a global this project does not allow (``trust=True`` loads it anyway: only for files you trust), and
    for a file that is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"The checkpoint {path} does not exist. Check the path (or the run's "
                          f"{CHECKPOINT_SUBDIR}/ folder).")
    try:
        if trust:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise RecipeError(
            f"The checkpoint {path} needs the Python global {_unsafe_globals(path, err)} to load, and loading it "
            f"would run code from "
            f"the file, so it was refused (checkpoints load weights-only). If you trust where this file comes "
            f"from, pass --trust_checkpoint (or torch.load(..., weights_only=False) in your own code)."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecipeError(
            f"The checkpoint {path} ({path.stat().st_size:,} bytes) cannot be read: it is truncated or not a "
            f"PyTorch file ({first}). A copy that was interrupted leaves such a file: copy it again, or use "
            f"another checkpoint of the run."
        ) from None
    if not isinstance(checkpoint, dict):
        raise RecipeError(f"The checkpoint {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint "
                          f"(a dict with a 'state_dict' entry).")
    return checkpoint


def _unsafe_globals(path: Path, err: Exception) -> str:
    """The globals a checkpoint would import on unpickling, read from its pickle opcodes without running them."""
    import pickletools

    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    names: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in (n for n in archive.namelist() if n.endswith("data.pkl")):
                strings: list[str] = []
                for op, arg, _ in pickletools.genops(archive.read(member)):
                    if op.name == "GLOBAL":
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # not a zip archive or a broken pickle: fall back on the error text
        match = re.search(r"GLOBAL ([\w.]+)", str(err))
        names = [match.group(1)] if match else []
    unsafe = [n for n in dict.fromkeys(names) if n not in allowed and not n.startswith(("torch.", "collections."))]
    return ", ".join(f"`{n}`" for n in unsafe[:5]) or "(an object that is not a tensor)"


def check_lightning_checkpoint(checkpoint: dict[str, Any], path: Any, resume: bool) -> None:
    """A clear error for a file that is not a Lightning checkpoint, or one of another Lightning major version."""
    if "state_dict" not in checkpoint:
        keys = ", ".join(sorted(map(str, checkpoint))[:8]) or "none"
        raise RecipeError(
            f"{path} is not a Lightning checkpoint: it has no 'state_dict' entry (its keys: {keys}). Give a .ckpt "
            f"file written by a Lightning Trainer (e.g. runs/<run>/{CHECKPOINT_SUBDIR}/last.ckpt)."
        )
    version = checkpoint.get("pytorch-lightning_version")
    if resume and version is None:
        raise RecipeError(f"{path} has a 'state_dict' but no Lightning version or training state, so training "
                          f"cannot resume from it. Start from its weights with --init_from {path} instead.")
    if version is not None and str(version).split(".")[0] != pl.__version__.split(".")[0]:
        raise RecipeError(
            f"{path} was written by Lightning {version}; this installation has Lightning {pl.__version__}, whose "
            f"checkpoint format differs. Upgrade the file with `python -m lightning.pytorch.utilities."
            f"upgrade_checkpoint {path}` (keep a copy), or load it with the Lightning version that wrote it."
        )


# ---------------------------------------------------------------------------------------------- checkpoints
def resolve_checkpoint(source: str, runs_root: str = "runs") -> Path:
    """Resolves ``init_from``: a .ckpt path, a run directory, or a recipe name, to a checkpoint file."""
    path = Path(source)
    candidates = []
    if path.suffix == ".ckpt":
        candidates.append(path)
    else:
        if path.suffix in (".yaml", ".yml"):  # a recipe file: use its run
            path = Path(runs_root) / path.stem
        for base in (path, Path(runs_root) / source):
            candidates += [base / CHECKPOINT_SUBDIR / "last.ckpt", base / "last.ckpt"]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    name = Path(source).stem
    raise RecipeError(
        f"init_from: {source!r} does not name an existing checkpoint (looked for {tried}). Give a .ckpt file, a "
        f"run directory or the name of a recipe whose run has finished; to produce it, run "
        f"`python main.py fit --config recipes/{name}.yaml` first (the recipe header lists its prerequisites)."
    )


def load_weights(pl_module: pl.LightningModule, ckpt_path: Path, trainer: pl.Trainer | None = None,
                 trust: bool = False) -> None:
    """Loads a checkpoint's weights into ``pl_module`` (strict), after letting structural callbacks adapt it.

    Callbacks (and the module) with a ``restore_structure(pl_module, checkpoint)`` method are called first, so
    that e.g. a pruned checkpoint can rebuild the narrow layers before the weights are copied.
    """
    checkpoint = load_checkpoint(ckpt_path, trust=trust)
    check_lightning_checkpoint(checkpoint, ckpt_path, resume=False)
    for owner in [pl_module] + (list(trainer.callbacks) if trainer is not None else []):
        fn = getattr(owner, "restore_structure", None)
        if callable(fn):
            fn(pl_module, checkpoint)
    try:
        pl_module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise checkpoint_mismatch(ckpt_path, pl_module, err) from None


def checkpoint_mismatch(ckpt_path: Any, pl_module: pl.LightningModule, err: Exception) -> RecipeError:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:6]
    return RecipeError(
        f"The checkpoint {ckpt_path} was saved from another architecture than the {type(pl_module).__name__} "
        f"this recipe builds, so its weights cannot be loaded. Use a checkpoint of the same recipe (or the same "
        f"net and net_kwargs), or add the structural callback (e.g. pruning) that produced it. Details: "
        + " | ".join(lines)
    )


# ---------------------------------------------------------------------------------------------- run identity
#: Keys that do not define a run: where it runs and logs, not what it computes. ``*`` matches at any depth.
MACHINE_KEYS = (
    "config", "runs_root", "run_name", "ckpt_path", "overwrite", "trust_checkpoint", "weights_only",
    "wandb_group", "wandb_job_type", "wandb_tags",
    "trainer.devices", "trainer.num_nodes", "trainer.accelerator", "trainer.strategy", "trainer.logger",
    "trainer.enable_progress_bar", "trainer.default_root_dir", "trainer.plugins",
    "*.data_dir", "*.num_workers", "*.pin_memory", "*.persistent_workers",
)


def _excluded(dotted: str) -> bool:
    for key in MACHINE_KEYS:
        if key.startswith("*."):
            if dotted.endswith(key[1:]) or dotted == key[2:]:
                return True
        elif dotted == key or dotted.startswith(key + "."):
            return True
    return False


def _strip(tree: Any, prefix: str = "") -> Any:
    if isinstance(tree, dict):
        return {k: _strip(v, f"{prefix}{k}.") for k, v in tree.items() if not _excluded(f"{prefix}{k}")}
    if isinstance(tree, list):
        return [_strip(v, prefix) for v in tree]
    return tree


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a resolved config that define the run (:data:`MACHINE_KEYS` removed)."""
    return _strip(config)


def identity_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two identities.

    A key that only one side has is not compared: it is an argument that a code change added or removed since the
    stored run (its default then applies), not a setting that changed. Lists are compared item by item when they
    have the same length (e.g. ``trainer.callbacks``), whole otherwise.
    """
    out = []
    for key in sorted(set(a) & set(b), key=str):
        out += _value_diff(a[key], b[key], f"{prefix}{key}")
    return out


def _value_diff(va: Any, vb: Any, where: str) -> list[str]:
    if isinstance(va, dict) and isinstance(vb, dict):
        return identity_diff(va, vb, f"{where}.")
    if isinstance(va, list) and isinstance(vb, list) and len(va) == len(vb):
        out = []
        for i, (x, y) in enumerate(zip(va, vb)):
            out += _value_diff(x, y, f"{where}.{i}")
        return out
    return [] if va == vb else [where]


def read_run_json(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_FILE
    try:
        return jsonlib.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(jsonlib.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / CHECKPOINT_SUBDIR
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def _launcher_rank_zero() -> bool:
    """True in the process that starts a run (not a DDP rank > 0 that Lightning or srun started)."""
    return all(os.environ.get(v, "0") == "0" for v in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


@dataclass
class PlannedRun:
    """What a command would run, parsed without instantiating anything (see :func:`planned_run`)."""

    subcommand: str
    run_dir: Path
    identity: dict[str, Any]
    config: dict[str, Any]


class _Planned(Exception):
    def __init__(self, plan: PlannedRun) -> None:
        super().__init__("planned")
        self.plan = plan


def planned_run(args: list[str]) -> PlannedRun:
    """Parses ``args`` (as given to ``main.py``) and returns the run directory and identity it would use.

    Nothing is instantiated or written: launchers (the studies runner) use it to compare a planned run with the
    ``run.json`` of a run directory before submitting it.
    """
    try:
        _PlanCLI(args=args, run=True)
    except _Planned as planned:
        return planned.plan
    raise RecipeError(f"planned_run: {args} did not reach the parsing stage")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- config errors
def _config_files(argv: list[str]) -> list[Path]:
    files = []
    for i, a in enumerate(argv):
        if a in ("--config", "-c") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif a.startswith("--config="):
            files.append(Path(a.split("=", 1)[1]))
    return files


def check_config_files(argv: list[str]) -> None:
    """One-paragraph errors for a missing, empty, unparsable or non-mapping YAML file given with --config."""
    for path in _config_files(argv):
        if not path.is_file():
            raise RecipeError(f"The config file {path} does not exist. Give the path of a recipe, e.g. "
                              f"--config recipes/quickstart.yaml (recipes/ lists them).")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise RecipeError(f"The config file {path} is not valid YAML at{where or ' an unknown place'}: "
                              f"{problem}. Fix the indentation or quoting there.") from None
        if data is None:
            raise RecipeError(f"The config file {path} is empty. A recipe is a YAML mapping with the keys trainer, "
                              f"model and data (see recipes/quickstart.yaml).")
        if not isinstance(data, dict):
            raise RecipeError(f"The config file {path} holds a YAML {type(data).__name__}, not a mapping. A recipe "
                              f"is a mapping with the keys trainer, model and data (see recipes/quickstart.yaml).")


def _key_line(path: Path, dotted: str) -> int | None:
    """The line of ``dotted`` (a.b.c) in a YAML file, 1-based, or None."""
    try:
        node = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        for key, value in node.value:
            if key.value == part:
                line, node = key.start_mark.line + 1, value
                break
        else:
            return None
    return line


def _yaml_value(files: list[Path], dotted: str) -> Any:
    """The merged value of ``dotted`` over the config files (the last one that sets it wins)."""
    found = None
    for path in files:
        try:
            node: Any = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            found = node
    return found


def _class_params(class_path: str) -> list[str]:
    """Constructor argument names of an importable class, following ``**kwargs`` into its bases."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(__import__(module_name, fromlist=[name]), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in getattr(cls, "__mro__", [cls]):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _bad_key(message: str) -> tuple[str, str | None] | None:
    """(dotted key, class path at its level or None) from a jsonargparse error message."""
    m = re.search(r"does not accept option '([^']+)'", message) or re.search(r"No action for key \"([^\"]+)\"",
                                                                             message)
    if m and "Problem with given class_path" not in message:
        return m.group(1), None
    m = re.search(r"unrecognized arguments: --([\w.]+)", message)
    if m:
        return m.group(1), None
    m = re.search(r"[Oo]ption '([^']+)' is not accepted", message)
    if not m:
        m = re.search(r"No action for key \"([^\"]+)\"", message)
    if not m:
        return None
    option = m.group(1)
    nested = re.search(r"NestedArg\(key='([^']+)'", message)
    if nested and nested.group(1).endswith(option):
        option = nested.group(1)  # e.g. optimizer.init_args.momentm given on the command line
    parents = re.findall(r"Parser key \"([^\"]+)\"", message)
    # the innermost class: the Namespace of the failing value when given, else the last "given class_path",
    # else the class of the value given to the outer key
    got = re.findall(r"Namespace\(class_path='([^']+)'", message)
    given = re.findall(r"given class_path '([^']+)'", message)
    outer = re.findall(r"'class_path': '([^']+)'", message)[:1]
    owner = (got or given or outer or [None])[-1]
    dotted = ".init_args.".join(parents) + ".init_args." + option if parents else option
    return dotted, owner


def explain_config_error(message: str, argv: list[str], parser: Any = None) -> str:
    """One paragraph for a parser error: the file and line (or the command line), the key, a close match and the
    keys accepted at that level."""
    files = _config_files(argv)
    typed = re.search(r"Parser key \"([^\"]+)\":\s*\n\s*Expected a <class '(\w+)'>\. Got value: ([^\n]+)", message)
    if typed:
        outer = re.match(r"Parser key \"([^\"]+)\"", message)
        dotted = typed.group(1) if not outer or outer.group(1) == typed.group(1) else f"{outer.group(1)}.{typed.group(1)}"
        return (f"Invalid value {typed.group(3).strip()!r} for `{dotted}`: expected a {typed.group(2)}. Fix it in "
                f"{', '.join(map(str, files)) or 'the command line'} or on the command line.")
    union = re.match(r"Parser key \"([^\"]+)\":\s*\n\s*Does not validate against any of the Union subtypes", message)
    given = re.search(r"Given value: ([^\n]+)", message)
    expected = [t for t in re.findall(r"^\s*- Expected a <class '(\w+)'>\s*$", message, re.M) if t != "NoneType"]
    if union and given and expected and _bad_key(message) is None:
        return (f"Invalid value {given.group(1).strip()!r} for `{union.group(1)}`: expected "
                f"{' or '.join(expected)}. Fix it in {', '.join(map(str, files)) or 'the command line'} or on the "
                f"command line.")
    found = _bad_key(message)
    if found is None:
        reason = _constructor_error(ValueError(message))
        if reason is not None:
            return reason
        first = " ".join(line.strip() for line in message.strip().splitlines()[:3])
        where = ", ".join(map(str, files)) or "the command line"
        return (f"The config ({where}) was rejected: {first}. Run `python main.py {_subcommand(argv)} --help` for "
                f"the accepted keys.")
    dotted, owner = found
    level, _, key = dotted.rpartition(".")
    accepted: list[str] = []
    if owner is not None:
        accepted = _class_params(owner)
    elif parser is not None:
        prefix = level + "." if level else ""
        subcommands = getattr(parser, "_subcommands_action", None)
        if subcommands is not None and _subcommand(argv) in getattr(subcommands, "_name_parser_map", {}):
            parser = subcommands._name_parser_map[_subcommand(argv)]
        for action in getattr(parser, "_actions", []):
            dest = getattr(action, "dest", "")
            if dest.startswith(prefix) and dest != prefix:
                accepted.append(dest[len(prefix):].split(".")[0])
        accepted = [a for a in dict.fromkeys(accepted) if a not in ("help", "config", "print_config")]
    if owner is None and level == "trainer" and not accepted:
        accepted = _class_params("lightning.pytorch.Trainer")
    if level.endswith("init_args"):  # the class at that level, as the command line or the files set it
        class_path = _argv_class_path(argv, level.rsplit(".", 1)[0]) or _yaml_value(
            files, level.rsplit(".", 1)[0] + ".class_path")
        if isinstance(class_path, str) and _class_params(class_path):
            owner = class_path
            accepted = _class_params(class_path)
    where = "on the command line"
    for path in reversed(files):
        line = _key_line(path, dotted)
        if line is not None:
            where = f"in {path} line {line}"
            break
    close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    at = f" of {owner}" if owner else (f" under `{level}`" if level else " at the top level")
    shown = ", ".join(accepted[:25]) + (", ..." if len(accepted) > 25 else "")
    listing = f" Accepted keys{at}: {shown}." if accepted else ""
    return f"Unknown key `{dotted}` {where}.{hint}{listing}"


def _argv_class_path(argv: list[str], key: str) -> str | None:
    """The class path the command line gives ``key`` (``--key=C`` or ``--key.class_path=C``; the last wins)."""
    found = None
    for i, a in enumerate(argv):
        for flag in (f"--{key}", f"--{key}.class_path"):
            if a.startswith(flag + "="):
                found = a.split("=", 1)[1]
            elif a == flag and i + 1 < len(argv):
                found = argv[i + 1]
    return found if found and "." in found and not found.startswith("{") else None


def _subcommand(argv: list[str]) -> str:
    return next((a for a in argv if a in LightningCLI.subcommands() or a in ("report", "export")), "fit")


class RecipeArgumentParser(LightningArgumentParser):
    """Raises :class:`ConfigError` instead of printing the usage and exiting, so the CLI can explain the error in
    one paragraph (``--help`` still prints the full usage)."""

    def error(self, message: str, ex: Exception | None = None) -> Any:  # type: ignore[override]
        raise ConfigError(message, getattr(ex, "subcommand_parser", None) or self)


# ---------------------------------------------------------------------------------------------- CLI parts
def _plain(value: Any) -> Any:
    """A YAML/JSON-friendly copy of hyperparameters (tuples to lists, objects to their repr)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


class RecipeSaveConfig(SaveConfigCallback):
    """Writes config.yaml into the run directory (overwriting; ``config.<subcommand>.yaml`` for an evaluation)
    and sends the resolved config to W&B (its logger was armed by :class:`ArmWandb`, the first callback)."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_validation=True))
        # values linked at instantiation (num_classes, input_shape) are not in the parsed config: add the
        # instantiated module's and datamodule's hyperparameters as well
        config["model_hparams"] = _plain(dict(pl_module.hparams))
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            config["data_hparams"] = _plain(dict(getattr(datamodule, "hparams", {})))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(config, allow_val_change=True)


def _not_deployed(model: nn.Module) -> dict[str, nn.Module]:
    """The submodules a module declares as training-only in ``not_deployed`` (e.g. DiSK's frozen teacher and its
    guide: the deployed net is the student): a report of the deployed net leaves their parameters out."""
    names = getattr(model, "not_deployed", ()) or ()
    return {n: m for n in names if isinstance(m := getattr(model, n, None), nn.Module)}


class RecipeTrainer(pl.Trainer):
    """``pl.Trainer`` with ``report`` and ``export`` subcommands."""

    export_overwrite = False  # set from the CLI's --overwrite for `export`

    def report(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        json: str | None = None,
        convention: Literal["li2017", "all"] = "li2017",
        ckpt_path: str | None = None,
    ) -> dict[str, float]:
        """Print the parameters and MACs of the recipe's model (no data, no training).

        Args:
            json: also write ``{"params": ..., "macs": ..., "params_all": ...}`` to this file. Parameters of the
                submodules a module declares training-only (``not_deployed``, e.g. DiSK's teacher and guide) are
                left out and listed under ``not_counted``.
            convention: ``li2017`` (conv and linear MACs, the pruning paper's) or ``all`` (torch flop counter / 2).
            ckpt_path: count the net of this checkpoint (``last``: the run's last.ckpt) as it was saved: pruned
                widths, a searched sub-network, anything a ``restore_structure`` rebuilds. Without it, the net the
                recipe builds, with its structural callbacks' ``apply_structure`` applied.
        """
        if ckpt_path:
            load_weights(model, Path(ckpt_path), self)
        else:
            for callback in self.callbacks:
                fn = getattr(callback, "apply_structure", None)
                if callable(fn):
                    fn(model)
        if model.example_input_array is None:
            raise RecipeError(
                f"{type(model).__name__} has no example_input_array, so `report` cannot count MACs; set it in "
                "the module's __init__."
            )
        x = model.example_input_array
        unused = _not_deployed(model)
        counted = "all" if convention == "all" else "li2017"
        left_out = {c: sum(count_params(m, c) for m in unused.values()) for c in (counted, "all")}
        result = {
            "params": count_params(model, counted) - left_out[counted],
            "macs": count_macs(model, x, convention),
            "params_all": count_params(model, "all") - left_out["all"],
            "convention": convention,
        }
        print(f"model: {type(model).__name__}" + (f" ({model.hparams.get('net')})" if model.hparams else ""))
        if unused:
            print(f"not counted (training-only parts, not deployed): {', '.join(unused)} "
                  f"({left_out['all']:,} parameters)")
        print(f"parameters ({convention}): {result['params']:,} ({result['params']:.3g})")
        print(f"parameters (all):      {result['params_all']:,}")
        print(f"MACs per input ({convention}): {result['macs']:.4g}")
        if json:
            Path(json).parent.mkdir(parents=True, exist_ok=True)
            Path(json).write_text(jsonlib.dumps({"params": result["params"], "macs": result["macs"],
                                                 "params_all": result["params_all"], "convention": convention,
                                                 "not_counted": sorted(unused), "ckpt_path": ckpt_path}, indent=2))
            print(f"wrote {json}")
        return result

    def export(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        format: Literal["onnx", "pt2"] = "onnx",
        out: str | None = None,
        latency: bool = False,
        latency_batch: int = 32,
        threads: int = 1,
        repeats: int = 30,
    ) -> dict[str, Any]:
        """Export the trained net (ONNX through torch.onnx's dynamo exporter, or a torch.export .pt2 program),
        with the recipe's structural callbacks applied, and check its outputs against eager PyTorch.

        Args:
            ckpt_path: the checkpoint to export (``last``: this run's last.ckpt).
            format: ``onnx`` (checked in onnxruntime) or ``pt2``.
            out: the output file (default: ``<run_dir>/export/model.<format>``); an existing file is replaced only
                with ``--overwrite``.
            latency: also time the exported ONNX file in onnxruntime (CPU) at batch 1 and ``latency_batch``, with
                ``threads`` intra-op threads, ``repeats`` timed calls after 5 untimed ones (median and IQR).

        The summary's numbers (stored bytes, errors, latencies) are written to the run's ``metrics/export.json``.
        """
        try:
            from nets.export import export_checkpoint
        except ImportError as err:
            raise RecipeError(f"export needs the deployment extra ({err}); install it with "
                              f"`python -m pip install -e \".[deploy]\"`.") from None
        if ckpt_path is None:
            raise RecipeError("export needs --ckpt_path: a .ckpt file, or `last` for this run's last.ckpt.")
        summary = export_checkpoint(model, list(self.callbacks), ckpt_path, fmt=format, out=out,
                                    overwrite=self.export_overwrite)
        from nets.export import format_summary, time_onnx

        if latency:
            if format != "onnx":
                raise RecipeError("export --latency times the ONNX file in onnxruntime: use --format onnx.")
            timed = time_onnx(summary["path"], model.example_input_array, (1, latency_batch), threads, repeats)
            summary.update(latency_threads=timed["threads"], latency_repeats=repeats, latency_runtime=timed["runtime"])
            for b in (1, latency_batch):
                summary[f"latency_b{b}_s"] = timed[f"b{b}"]["median"]
                summary[f"latency_b{b}_iqr_s"] = [timed[f"b{b}"]["q25"], timed[f"b{b}"]["q75"]]
        print(format_summary(summary))
        self.last_export = summary
        return summary


class RecipeCLI(LightningCLI):
    """LightningCLI with the project's run layout and identity, W&B defaults, links, ``init_from``, ``report`` and
    ``export``."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=RecipeTrainer,
            save_config_callback=RecipeSaveConfig,
            save_config_kwargs={"overwrite": True},
            parser_class=RecipeArgumentParser,
            auto_configure_optimizers=False,
            parser_kwargs={"default_env": False, "allow_abbrev": False},
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "report": {"model", "datamodule"}, "export": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--run_name", type=str | None, default=None,
                            help="Run directory name under runs_root (default: the first --config file's stem).")
        parser.add_argument("--runs_root", type=str, default="runs", help="Root of all run directories.")
        parser.add_argument("--init_from", type=str | None, default=None,
                            help="Start from these weights: a .ckpt, a run directory or a recipe name.")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: move an earlier run in the same run directory aside (never deleted) and "
                                 "start fresh; export: replace an existing output file.")
        parser.add_argument("--trust_checkpoint", type=bool, default=False,
                            help="Load checkpoints with full unpickling (runs code stored in the file): only for "
                                 "files you trust.")
        parser.add_argument("--wandb_group", type=str | None, default=None, help="W&B group of the run.")
        parser.add_argument("--wandb_job_type", type=str | None, default=None, help="W&B job type of the run.")
        parser.add_argument("--wandb_tags", type=list[str] | None, default=None, help="W&B tags of the run.")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning merges a ``--ckpt_path`` file's saved hyperparameters into the model's config (for validate /
        test / predict). They include values linked at instantiation that the module's ``__init__`` does not take
        (e.g. ``num_classes`` for a model without classes), which would then fail as unexpected keywords: keep
        only the arguments the class accepts."""
        cfg = self.config.get(self.config.get("subcommand") or "", None) if self.config.get("subcommand") else None
        ckpt_path = cfg.get("ckpt_path") if cfg is not None else None
        if not ckpt_path or not Path(str(ckpt_path)).is_file():
            return super()._parse_ckpt_path()
        import importlib
        import inspect

        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None)
        if not hparams or not class_path:
            return super()._parse_ckpt_path()
        module, _, name = str(class_path).rpartition(".")
        try:
            params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
        except (ImportError, AttributeError, TypeError, ValueError):
            return super()._parse_ckpt_path()
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            hparams = {k: v for k, v in hparams.items() if k in params}
        update = {self.config.subcommand: {"model": {"class_path": class_path, "dict_kwargs": hparams}}}
        try:
            self.config = self.parser.parse_object(update, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    # ---- run layout
    def _config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _resolved_config(self) -> dict[str, Any]:
        parser = self._parser(self.subcommand)
        return yaml.safe_load(parser.dump(self._config(), skip_none=False, skip_validation=True))

    def _plan(self) -> PlannedRun:
        cfg = self._config()
        if cfg.get("run_name") is None:
            configs = cfg.get("config") or []
            cfg.run_name = Path(str(configs[0])).stem if configs else "default"
        config = self._resolved_config()
        return PlannedRun(self.subcommand or "fit", Path(cfg.runs_root) / cfg.run_name, run_identity(config),
                          config)

    def before_instantiate_classes(self) -> None:
        cfg = self._config()
        plan = self._plan()
        self.run_dir = plan.run_dir
        self.identity = plan.identity
        self.run_record = read_run_json(self.run_dir)
        trainer = cfg.trainer
        if trainer.get("default_root_dir") is None:
            trainer.default_root_dir = str(self.run_dir)
        if self.subcommand == "report":
            trainer.logger = False
            trainer.enable_checkpointing = False
            # a recipe's own ModelCheckpoint would clash with enable_checkpointing=False; a report saves nothing
            callbacks = trainer.get("callbacks")
            if isinstance(callbacks, list):
                trainer.callbacks = [c for c in callbacks if not str(
                    c.get("class_path", "") if hasattr(c, "get") else type(c).__name__).endswith("ModelCheckpoint")]
            trainer.enable_progress_bar = False
            if cfg.get("ckpt_path") in ("last", "auto"):
                cfg.ckpt_path = str(self._last_ckpt_or_fail(cfg.ckpt_path))
            return
        if self.subcommand == "export":
            trainer.logger = False
            trainer.enable_progress_bar = False
            if cfg.get("ckpt_path") in ("last", "auto"):
                cfg.ckpt_path = str(self._last_ckpt_or_fail(cfg.ckpt_path))
            return
        if "ckpt_path" in cfg:
            cfg.ckpt_path = self._decide_checkpoint(cfg)
            if cfg.ckpt_path is not None:
                checkpoint = load_checkpoint(cfg.ckpt_path, trust=cfg.trust_checkpoint, mmap=True)
                check_lightning_checkpoint(checkpoint, cfg.ckpt_path, resume=self.subcommand == "fit")
                del checkpoint
        if "weights_only" in cfg:
            cfg.weights_only = not cfg.trust_checkpoint
        resuming = self.subcommand == "fit" and cfg.get("ckpt_path") is not None and self.run_record is not None \
            and Path(cfg.ckpt_path).resolve().parent == (self.run_dir / CHECKPOINT_SUBDIR).resolve()
        evaluating_run = self.subcommand != "fit" and self.run_record is not None
        wandb_id = self.run_record.get("wandb_id") if (resuming or evaluating_run) and self.run_record else None
        if not wandb_id:  # a new W&B run id: 8 characters of [a-z0-9], as wandb makes them
            wandb_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        self.wandb_id = wandb_id
        logger = trainer.get("logger")
        if logger is None or logger is True:
            init_args = Namespace(
                name=cfg.run_name, save_dir=str(self.run_dir), project=PROJECT,
                offline=not wandb_has_credentials(), log_model=False, id=wandb_id, resume="allow",
            )
            for key, flag in (("group", "wandb_group"), ("job_type", "wandb_job_type"), ("tags", "wandb_tags")):
                if cfg.get(flag) is not None:
                    init_args[key] = cfg.get(flag)
            trainer.logger = Namespace(class_path="main.RecipeWandbLogger", init_args=init_args)

    def _last_ckpt_or_fail(self, how: str) -> Path:
        last = self.run_dir / CHECKPOINT_SUBDIR / "last.ckpt"
        if last.is_file():
            return last
        raise RecipeError(
            f"--ckpt_path {how}: the run directory {self.run_dir} has no checkpoint ({last} does not exist), so "
            f"there is nothing to resume or evaluate. Check --run_name/--runs_root (the run directory is "
            f"<runs_root>/<run_name>), give a .ckpt path, or train first with `fit` without --ckpt_path."
        )

    def _decide_checkpoint(self, cfg: Namespace) -> str | None:
        """Resolves ``--ckpt_path`` (``last``, ``auto``, a path or none) under the run-identity rules."""
        ckpt = cfg.get("ckpt_path")
        existing = _checkpoints(self.run_dir)
        if self.subcommand != "fit":
            return str(self._last_ckpt_or_fail(ckpt)) if ckpt in ("last", "auto") else ckpt
        if not _launcher_rank_zero():
            # a DDP rank started by Lightning or srun: rank 0 has checked everything; resume iff it does
            if ckpt in ("last", "auto"):
                last = self.run_dir / CHECKPOINT_SUBDIR / "last.ckpt"
                return str(last) if last.is_file() else None
            return ckpt
        if ckpt == "last":
            last = self._last_ckpt_or_fail("last")
            if self.run_record is not None:
                differ = identity_diff(self.run_record.get("identity", {}), self.identity)
                if differ:
                    print(f"note: resuming {self.run_dir} with settings that differ from its run.json: "
                          f"{', '.join(differ[:8])}", file=sys.stderr)
            return str(last)
        if ckpt == "auto":
            last = self.run_dir / CHECKPOINT_SUBDIR / "last.ckpt"
            if not existing:
                return None
            if self.run_record is None:
                raise RecipeError(
                    f"--ckpt_path auto: {self.run_dir} holds checkpoints but no {RUN_FILE} (it was written before "
                    f"runs recorded their identity, or by hand), so it cannot be checked against this run. Resume it "
                    f"explicitly with --ckpt_path last, or start again with --overwrite (the old run is moved aside)."
                )
            differ = identity_diff(self.run_record.get("identity", {}), self.identity)
            if differ:
                shown = ", ".join(f"`{k}`" for k in differ[:8]) + (", ..." if len(differ) > 8 else "")
                raise RecipeError(
                    f"--ckpt_path auto: the run in {self.run_dir} was started with other settings ({shown} differ "
                    f"from {self.run_dir / RUN_FILE}), so it was not resumed. Use another --run_name for the new "
                    f"settings, --overwrite to move the old run aside and start again, or --ckpt_path last to "
                    f"resume it anyway."
                )
            if not last.is_file():
                raise RecipeError(f"--ckpt_path auto: {self.run_dir} holds checkpoints but no last.ckpt; give the "
                                  f"checkpoint to resume with --ckpt_path <file>.")
            return str(last)
        if ckpt is None and existing:
            if cfg.get("overwrite"):
                stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                aside = self.run_dir.with_name(f"{self.run_dir.name}.old-{stamp}")
                shutil.move(str(self.run_dir), str(aside))
                print(f"--overwrite: moved the earlier run to {aside}", file=sys.stderr)
                self.run_record = None
                return None
            raise RecipeError(
                f"The run directory {self.run_dir} already holds a checkpoint ({existing[-1].name}) from an earlier "
                f"run, and a fresh fit would overwrite it. Resume it with --ckpt_path last, start a separate run with "
                f"--run_name <new name>, or pass --overwrite to move the earlier run aside (it is kept, never deleted)."
            )
        return ckpt

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        if self.subcommand not in ("report", "export"):
            recipe_callbacks = self._get(self.config_init, "trainer").get("callbacks") or []
            defaults: list[pl.Callback] = [ArmWandb()]
            checkpointing = self._get(self.config, "trainer").get("enable_checkpointing") is not False
            if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in recipe_callbacks):
                # last.ckpt every epoch in runs/<name>/checkpoints: `--ckpt_path last`
                defaults.append(ModelCheckpoint(dirpath=str(self.run_dir / CHECKPOINT_SUBDIR), save_last=True,
                                                enable_version_counter=False))
            if not any(isinstance(c, NonFiniteLossGuard) for c in recipe_callbacks):
                defaults.append(NonFiniteLossGuard())
            if self.subcommand == "fit":
                defaults.append(KeepRunMetrics())
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": defaults}
            # a recipe's own ModelCheckpoint without a dirpath saves into the run's checkpoints/ as well
            for c in recipe_callbacks:
                if isinstance(c, ModelCheckpoint) and c.dirpath is None:
                    c.dirpath = str(self.run_dir / CHECKPOINT_SUBDIR)
            if self.subcommand != "fit":
                self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"config.{self.subcommand}.yaml"}
        return super().instantiate_trainer(**kwargs)

    # ---- subcommand hooks
    def before_export(self) -> None:
        self.trainer.export_overwrite = bool(self._config().get("overwrite"))

    def before_fit(self) -> None:
        cfg = self._config()
        if cfg.get("init_from") and not cfg.get("ckpt_path"):
            path = resolve_checkpoint(cfg.init_from, cfg.runs_root)
            load_weights(self.model, path, self.trainer, trust=cfg.trust_checkpoint)
            print(f"init_from: loaded weights from {path}")
        if _launcher_rank_zero():
            record = dict(self.run_record or {})
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            record.update(identity=self.identity, wandb_id=self.wandb_id, updated=now, commit=_git_commit(),
                          lightning=pl.__version__)
            record.setdefault("created", now)
            _write_json(self.run_dir / RUN_FILE, record)

    def _finish(self, subcommand: str) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                   if isinstance(v, torch.Tensor) and v.numel() == 1}
        cfg = self._config()
        _write_json(self.run_dir / "metrics" / f"{subcommand}.json", {
            "subcommand": subcommand, "metrics": dict(sorted(metrics.items())), "ckpt_path": cfg.get("ckpt_path"),
            "epoch": self.trainer.current_epoch, "global_step": self.trainer.global_step,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        shown = {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
        if shown:
            print("Final metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
        print(f"Run directory: {self.run_dir}")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                run_dir = wandb_run_dir(logger)
                if getattr(logger.experiment, "offline", True):
                    login = "" if wandb_login_found() else "run `wandb login` once (no W&B credentials were found), then "
                    print(f"W&B run written offline to {run_dir}; to upload it, {login}run: wandb sync {run_dir}")
                else:
                    print(f"W&B run: {logger.experiment.url} (local files in {run_dir})")

    def after_fit(self) -> None:
        self._finish("fit")

    def after_validate(self) -> None:
        self._finish("validate")

    def after_test(self) -> None:
        self._finish("test")

    def after_export(self) -> None:
        summary = getattr(self.trainer, "last_export", None) or {}
        numbers = {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        _write_json(self.run_dir / "metrics" / "export.json", {
            "subcommand": "export", "metrics": dict(sorted(numbers.items())), "path": summary.get("path"),
            "ckpt_path": summary.get("checkpoint"), "notes": summary.get("notes", []),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })


class _PlanCLI(RecipeCLI):
    """Stops right after parsing (see :func:`planned_run`)."""

    def _set_seed(self) -> None:  # no global side effect while planning
        return None

    def before_instantiate_classes(self) -> None:
        raise _Planned(self._plan())


def _user_facing(err: BaseException) -> bool:
    """Errors printed as one paragraph: this file's, missing data, NaN loss, a checkpoint that does not fit, and
    any technique error that sets ``user_facing = True`` (e.g. the pruning callback's PruningError)."""
    if isinstance(err, RecipeError | NonFiniteLossError | FileNotFoundError):
        return True
    if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
        return True
    return bool(getattr(err, "user_facing", False))


def _constructor_error(err: BaseException) -> str | None:
    """The message of an error raised inside a model/data/callback constructor, which jsonargparse wraps in
    "Does not validate against any of the Union subtypes" (the original exception object is not chained)."""
    text = str(err)
    if not isinstance(err, ValueError) or "Does not validate against any of the Union subtypes" not in text:
        return None
    reasons = []
    for line in text.split("Errors:", 1)[-1].splitlines():
        line = line.strip()
        if line.startswith("Given value"):
            break
        if line.startswith("- "):
            line = line[2:]
        if line and not line.startswith("Expected a <class 'NoneType'>"):
            reasons.append(line)
    return " ".join(reasons) or None


def _fail(message: str) -> None:
    print(f"\nerror: {message} (set RECIPES_RAISE=1 to see the traceback)", file=sys.stderr, flush=True)
    raise SystemExit(1) from None


def cli_main(args: list[str] | None = None, run: bool = True) -> RecipeCLI:
    """Runs the CLI; user-facing errors are printed as one paragraph and exit with status 1.

    Set ``RECIPES_RAISE=1`` to get the traceback instead.
    """
    quiet_third_party_noise()
    torch.set_float32_matmul_precision("high")
    if os.environ.get("RECIPES_THREADS"):
        torch.set_num_threads(int(os.environ["RECIPES_THREADS"]))
    argv = list(args) if args is not None else sys.argv[1:]
    raise_all = bool(os.environ.get("RECIPES_RAISE"))
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        # an earlier command in this process left its W&B run open (for inspection): close it, so that this run
        # neither logs into it (Lightning reuses an open run) nor collides with it when resuming the same run id
        wandb.finish()
    try:
        if not any(a in ("-h", "--help") for a in argv):
            check_config_files(argv)
            _precheck_ckpt_path(argv)
        return RecipeCLI(args=args, run=run)
    except ConfigError as err:
        if raise_all:
            raise
        _fail(explain_config_error(str(err), argv, err.parser))
    except Exception as err:
        reason = _constructor_error(err)
        if reason is not None and not raise_all:
            _fail(reason)
        if not _user_facing(err) or raise_all:
            raise
        if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
            err = checkpoint_mismatch(_ckpt_arg(argv), pl.LightningModule(), err)
        _fail(str(err))
    raise AssertionError("unreachable")  # pragma: no cover


def _precheck_ckpt_path(argv: list[str]) -> None:
    """LightningCLI reads a ``--ckpt_path`` file while parsing (for its hyperparameters): check it first, so that a
    truncated, foreign or unsafe file gets its one-paragraph error."""
    ckpt = _ckpt_arg(argv)
    if ckpt in ("last", "auto", "given with --ckpt_path") or not Path(ckpt).is_file():
        return
    trust = any(a in ("--trust_checkpoint=true", "--trust_checkpoint=True") for a in argv) or any(
        a == "--trust_checkpoint" and i + 1 < len(argv) and argv[i + 1].lower() == "true" for i, a in enumerate(argv))
    checkpoint = load_checkpoint(ckpt, trust=trust, mmap=True)
    check_lightning_checkpoint(checkpoint, ckpt, resume=_subcommand(argv) == "fit")


def _ckpt_arg(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a.startswith("--ckpt_path="):
            return a.split("=", 1)[1]
        if a == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
    return "given with --ckpt_path"


if __name__ == "__main__":
    # run through the importable module, so that `main.RecipeWandbLogger` (named in configs) is this same class
    import main as _main

    _main.cli_main()
    _wandb = sys.modules.get("wandb")
    if _wandb is not None and _wandb.run is not None:
        _wandb.finish()  # now, with the run's quiet settings (an exit-time finish prints wandb's own sync hint)
