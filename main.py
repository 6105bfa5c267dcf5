"""LightningCLI entry point of the recipe collection.

    python main.py fit --config recipes/quickstart.yaml
    python main.py fit --config recipes/baseline_resnet56_cifar10.yaml --trainer.strategy=ddp --trainer.devices=4
    python main.py report --config recipes/baseline_vgg16_cifar10.yaml --json vgg16.json --convention li2017

Any LightningModule (``model.class_path``) and LightningDataModule (``data.class_path``) can be used. What this
entry point adds to a plain LightningCLI:

* Run layout: every run writes under ``<runs_root>/<run_name>/`` (default ``runs/<recipe file stem>/``):
  ``checkpoints/`` (``last.ckpt`` every epoch), ``config.yaml`` (the full resolved config, overwritten on rerun)
  and the W&B files.
* W&B: a ``WandbLogger`` unless the recipe names another logger; offline when no credentials are found or
  ``WANDB_MODE=offline``. The resolved config goes to the run's config.
* ``--init_from``: start from an earlier stage's weights: a ``.ckpt`` file, a run directory or a recipe name
  (both resolve to ``runs/<name>/checkpoints/last.ckpt``). Ignored when resuming with ``--ckpt_path``.
* ``data.num_classes`` and ``data.input_shape`` are linked to the model's ``num_classes`` and ``input_shape``
  where the model takes them.
* ``report``: parameters and MACs of the model a recipe builds, without data or training, after the structural
  callbacks of the recipe (those with an ``apply_structure(pl_module)`` method) have been applied.
* Clear one-paragraph errors for missing data, NaN loss and checkpoints of another architecture.
"""

from __future__ import annotations

import json as jsonlib
import os
import sys
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

import lightning.pytorch as pl
from callbacks.efficiency_report import count_macs, count_params
from callbacks.nonfinite_loss_guard import NonFiniteLossError, NonFiniteLossGuard

PROJECT = "efficient-recipes"


class RecipeError(RuntimeError):
    """A user-facing error of the recipe runner (bad path, wrong checkpoint, ...)."""


# ---------------------------------------------------------------------------------------------- W&B helpers
def wandb_has_credentials() -> bool:
    """True when W&B could log online: an API key in the environment or a login in ~/.netrc."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
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
            candidates += [base / "checkpoints" / "last.ckpt", base / "last.ckpt"]
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


def load_weights(pl_module: pl.LightningModule, ckpt_path: Path, trainer: pl.Trainer | None = None) -> None:
    """Loads a checkpoint's weights into ``pl_module`` (strict), after letting structural callbacks adapt it.

    Callbacks (and the module) with a ``restore_structure(pl_module, checkpoint)`` method are called first, so
    that e.g. a pruned checkpoint can rebuild the narrow layers before the weights are copied.
    """
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if "state_dict" not in checkpoint:
        raise RecipeError(f"{ckpt_path} is not a Lightning checkpoint (it has no 'state_dict' entry).")
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
    """Writes config.yaml into the run directory (overwriting) and sends the resolved config to W&B."""

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


class RecipeTrainer(pl.Trainer):
    """``pl.Trainer`` with a ``report`` subcommand."""

    def report(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        json: str | None = None,
        convention: Literal["li2017", "all"] = "li2017",
    ) -> dict[str, float]:
        """Print the parameters and MACs of the recipe's model (no data, no training).

        Args:
            json: also write ``{"params": ..., "macs": ...}`` to this file.
            convention: ``li2017`` (conv and linear MACs, the pruning paper's) or ``all`` (torch flop counter / 2).
        """
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
        result = {
            "params": count_params(model, "all" if convention == "all" else "li2017"),
            "macs": count_macs(model, x, convention),
            "params_all": count_params(model, "all"),
            "convention": convention,
        }
        print(f"model: {type(model).__name__}" + (f" ({model.hparams.get('net')})" if model.hparams else ""))
        print(f"parameters ({convention}): {result['params']:,} ({result['params']:.3g})")
        print(f"parameters (all):      {result['params_all']:,}")
        print(f"MACs per input ({convention}): {result['macs']:.4g}")
        if json:
            Path(json).parent.mkdir(parents=True, exist_ok=True)
            Path(json).write_text(jsonlib.dumps({"params": result["params"], "macs": result["macs"],
                                                 "convention": convention}, indent=2))
            print(f"wrote {json}")
        return result


class RecipeCLI(LightningCLI):
    """LightningCLI with the project's run layout, W&B defaults, links, ``init_from`` and ``report``."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=RecipeTrainer,
            save_config_callback=RecipeSaveConfig,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_kwargs={"default_env": False},
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "report": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--run_name", type=str | None, default=None,
                            help="Run directory name under runs_root (default: the first --config file's stem).")
        parser.add_argument("--runs_root", type=str, default="runs", help="Root of all run directories.")
        parser.add_argument("--init_from", type=str | None, default=None,
                            help="Start from these weights: a .ckpt, a run directory or a recipe name.")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")

    # ---- run layout
    def _config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._config()
        if cfg.get("run_name") is None:
            configs = cfg.get("config") or []
            cfg.run_name = Path(str(configs[0])).stem if configs else "default"
        self.run_dir = Path(cfg.runs_root) / cfg.run_name
        trainer = cfg.trainer
        if trainer.get("default_root_dir") is None:
            trainer.default_root_dir = str(self.run_dir)
        if self.subcommand == "report":
            trainer.logger = False
            trainer.enable_checkpointing = False
            trainer.enable_progress_bar = False
            return
        logger = trainer.get("logger")
        if logger is None or logger is True:
            trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.WandbLogger",
                init_args=Namespace(
                    name=cfg.run_name, save_dir=str(self.run_dir), project=PROJECT,
                    offline=not wandb_has_credentials(), log_model=False,
                ),
            )

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        if self.subcommand != "report":
            recipe_callbacks = self._get(self.config_init, "trainer").get("callbacks") or []
            defaults: list[pl.Callback] = []
            checkpointing = self._get(self.config, "trainer").get("enable_checkpointing") is not False
            if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in recipe_callbacks):
                # last.ckpt every epoch in runs/<name>/checkpoints, overwritten on rerun: `--ckpt_path last`
                defaults.append(ModelCheckpoint(dirpath=str(self.run_dir / "checkpoints"), save_last=True,
                                                enable_version_counter=False))
            if not any(isinstance(c, NonFiniteLossGuard) for c in recipe_callbacks):
                defaults.append(NonFiniteLossGuard())
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": defaults}
            # a recipe's own ModelCheckpoint without a dirpath saves into the run's checkpoints/ as well
            for c in recipe_callbacks:
                if isinstance(c, ModelCheckpoint) and c.dirpath is None:
                    c.dirpath = str(self.run_dir / "checkpoints")
        return super().instantiate_trainer(**kwargs)

    # ---- subcommand hooks
    def before_fit(self) -> None:
        cfg = self._config()
        if cfg.get("init_from") and not cfg.get("ckpt_path"):
            path = resolve_checkpoint(cfg.init_from, cfg.runs_root)
            load_weights(self.model, path, self.trainer)
            print(f"init_from: loaded weights from {path}")

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                   if k.startswith(("val/", "test/")) and v.numel() == 1}
        if metrics:
            print("Final metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
        print(f"Run directory: {self.run_dir}")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                run_dir = wandb_run_dir(logger)
                if getattr(logger.experiment, "offline", True):
                    print(f"W&B run written offline to {run_dir}; upload it with: wandb sync {run_dir}")
                else:
                    print(f"W&B run: {logger.experiment.url} (local files in {run_dir})")


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


def cli_main(args: list[str] | None = None, run: bool = True) -> RecipeCLI:
    """Runs the CLI; user-facing errors are printed as one paragraph and exit with status 1.

    Set ``RECIPES_RAISE=1`` to get the traceback instead.
    """
    torch.set_float32_matmul_precision("high")
    try:
        return RecipeCLI(args=args, run=run)
    except Exception as err:
        reason = _constructor_error(err)
        if reason is not None and not os.environ.get("RECIPES_RAISE"):
            print(f"\nerror: {reason} (set RECIPES_RAISE=1 to see the traceback)", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        if not _user_facing(err) or os.environ.get("RECIPES_RAISE"):
            raise
        if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
            err = checkpoint_mismatch(_ckpt_arg(args), pl.LightningModule(), err)
        print(f"\nerror: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _ckpt_arg(args: list[str] | None) -> str:
    argv = args if args is not None else sys.argv[1:]
    for i, a in enumerate(argv):
        if a.startswith("--ckpt_path="):
            return a.split("=", 1)[1]
        if a == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
    return "given with --ckpt_path"


if __name__ == "__main__":
    cli_main()
