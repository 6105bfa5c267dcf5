"""Every recipe: valid header, --print_config, and a smoke run (one train + one val step) on tiny fake data in
the recipe's real on-disk format and input size, through the stacked tests/recipes/smoke.yaml."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import yaml

from main import cli_main, load_checkpoint
from tests import fakedata

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml"))
SMOKE = str(REPO / "tests" / "recipes" / "smoke.yaml")
# SMOKE_ACCELERATOR=gpu runs the same smoke steps on a GPU in each recipe's own precision (bf16-mixed where it
# asks for it), e.g. `SMOKE_ACCELERATOR=gpu python -m pytest tests/recipes -k smoke_run -n 8`
SMOKE_ACCELERATOR = os.environ.get("SMOKE_ACCELERATOR", "cpu")

# datamodule class -> (writer of tiny data in its real format, or None when the data is embedded; extra args)
SMOKE_DATA = {
    "DigitsDataModule": (None, []),
    "GlyphsDataModule": (None, ["--data.init_args.train_size=64", "--data.init_args.test_size=32"]),
    "CIFAR10DataModule": (fakedata.write_cifar10, []),
    "CIFAR100DataModule": (fakedata.write_cifar100, []),
    "ImageNetDataModule": (lambda root: fakedata.write_imagenet(root, num_classes=1000, per_class=1), []),
    "MNISTDataModule": (fakedata.write_mnist, []),
}
# each technique adds its own datamodules in tests/recipes/smoke_data_<technique>.py (a SMOKE_DATA dict there)
for _path in sorted(Path(__file__).parent.glob("smoke_data_*.py")):
    _module = importlib.import_module(f"tests.recipes.{_path.stem}")
    SMOKE_DATA.update(_module.SMOKE_DATA)


def _data_class(recipe: Path) -> str:
    return yaml.safe_load(recipe.read_text())["data"]["class_path"].rsplit(".", 1)[-1]


@pytest.fixture(scope="session")
def fake_data_dirs(tmp_path_factory):
    cache: dict[str, str] = {}

    def get(name: str) -> str | None:
        writer = SMOKE_DATA[name][0]
        if writer is None:
            return None
        if name not in cache:
            cache[name] = writer(str(tmp_path_factory.mktemp(name)))
        return cache[name]

    return get


def test_there_are_recipes():
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_header(recipe):
    text = recipe.read_text()
    for field in ("# Command:", "# Prerequisites:", "# Paper's number:"):
        assert field in text, f"{recipe.name}: header lacks {field!r}"
    command = next(line for line in text.splitlines() if line.startswith("# Command:"))
    assert f"recipes/{recipe.name}" in command


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_print_config(recipe, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(recipe), "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] and printed["data"]["class_path"]


def _covered_by_study_chains() -> set[str]:
    """Recipes that a default-tier full-scale study chain (tests/studies/test_fullscale.py) already runs on the
    same tiny data, one step each: their own smoke run moves to the slow tier instead of running twice."""
    from studies.spec import load_study
    from tests.studies.test_fullscale import DEFAULT_CHAIN

    covered: set[str] = set()
    for name, chain in DEFAULT_CHAIN.items():
        study = load_study(REPO / "studies" / f"{name}.yaml", REPO)
        stages = study._with_upstream(chain)
        covered |= {Path(study.stages[s].recipe).stem for s in stages if study.stages[s].fit}
    return covered


COVERED = _covered_by_study_chains()


@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) if r.stem in COVERED else r
                                    for r in RECIPES], ids=lambda p: p.stem)
def test_recipe_smoke_run(recipe, fake_data_dirs, tmp_path):
    """One training and one validation step of every recipe on tiny fake data; the recipes of the default-tier
    full-scale study chains are smoked there instead (this test runs them in the slow tier)."""
    name = _data_class(recipe)
    assert name in SMOKE_DATA, f"add a tiny-data entry for {name} to SMOKE_DATA in {__file__}"
    data_dir = fake_data_dirs(name)
    args = ["fit", "--config", str(recipe), "--config", SMOKE, f"--runs_root={tmp_path / 'runs'}",
            "--data.init_args.batch_size=2", "--data.init_args.num_workers=0", *SMOKE_DATA[name][1]]
    if data_dir is not None:
        args.append(f"--data.init_args.data_dir={data_dir}")
    config = yaml.safe_load(recipe.read_text())
    if SMOKE_ACCELERATOR != "cpu":
        precision = (config.get("trainer") or {}).get("precision", "32-true")
        args += [f"--trainer.accelerator={SMOKE_ACCELERATOR}", f"--trainer.precision={precision}"]
    if config.get("init_from"):
        # an earlier stage's run does not exist here; the chain itself is tested in tests/test_main.py
        args.append("--init_from=null")
    if ((config.get("model") or {}).get("init_args") or {}).get("student_ckpt"):
        # DiSK's CE-student stage, likewise (loading it is tested in tests/modules/test_disk.py)
        args.append("--model.init_args.student_ckpt=null")
    cli = cli_main(args)
    assert cli.trainer.global_step == 1
    assert cli.trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed == 1
    # every checkpoint a recipe writes loads weights-only (no pickled code), with its finiteness record
    for ckpt in (tmp_path / "runs").rglob("*.ckpt"):
        assert load_checkpoint(ckpt)["nonfinite_guard"]["finite"] is True, ckpt


STUDENT_CHAINS = [p for p in RECIPES if "student_ckpt:" in p.read_text()]


@pytest.mark.parametrize("recipe", STUDENT_CHAINS, ids=lambda p: p.stem)
def test_student_ckpt_chains_to_the_ce_recipe_of_the_same_student(recipe):
    """DiSK recipes that start from the CE student name the run of a baseline recipe that trains exactly that
    student net on the same dataset, and their header says how to produce it."""
    config = yaml.safe_load(recipe.read_text())
    args = config["model"]["init_args"]
    path = Path(args["student_ckpt"])
    assert path.parts[0] == "runs" and path.parts[2:] == ("checkpoints", "last.ckpt"), path
    base = REPO / "recipes" / f"{path.parts[1]}.yaml"
    assert base.is_file(), f"{recipe.name}: student_ckpt names {path.parts[1]}, which has no recipe"
    base_cfg = yaml.safe_load(base.read_text())
    assert base_cfg["model"]["init_args"]["net"] == args["student"]
    assert base_cfg["model"]["init_args"].get("net_kwargs") == args.get("student_kwargs")
    assert base_cfg["data"]["class_path"] == config["data"]["class_path"]
    assert f"recipes/{base.name}" in recipe.read_text().split("seed_everything")[0]
