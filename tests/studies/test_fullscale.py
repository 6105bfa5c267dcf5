"""Every full-scale study (a ``studies/*.yaml`` whose stages use full-scale recipes from ``recipes/``) end to end on
the smoke harness's tiny fake data in the real on-disk formats: one seed, every axis at its first value, one
training and one validation step per run (tests/recipes/smoke.yaml's settings, with a checkpoint so that the
chain works), through submitit's DebugExecutor in this process; then the report with the paper's numbers.

This covers the smoke runs of the recipes these studies use, chained as the paper chained them (init_from and
student checkpoints from the upstream stage's run instead of nulled out).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.studies.tiny import REPO, studies

FULLSCALE = sorted(p for p in (REPO / "studies").glob("*.yaml")
                   if all(not str(s["recipe"]).startswith(("recipes/glyphs/", "tests/"))
                          for s in (yaml.safe_load(p.read_text()).get("stages") or {}).values()))
# The default tier runs one chain of each study (the stage of its primary claim and the stages it starts from);
# the slow tier runs every stage. ImageNet tables run in the slow tier only (224 px nets on CPU).
DEFAULT_CHAIN = {"pruning_table1_cifar10": ["resnet56_b"]}
# weight_sharing_cifar10 and dcl_table run in the slow tier only: their chains took 80-100 s each in the default tier
DEFAULT_CHAIN["nas_glue"] = ["sst2_searched"]  # SST-2 search -> searched fine-tune (primary claim: searched vs full)
DEFAULT_CHAIN["fptt_adding"] = ["fptt_t500"]  # FPTT on the adding task, T = 500 (primary claim's stage)
DEFAULT_CHAIN["fptt_sequential"] = ["fptt_mnist_pixel"]  # FPTT on pixel MNIST (primary claim's stage)
DEFAULT_CHAIN["irnn_table"] = ["irnn_adding_t750"]  # iRNN on the adding task, T = 750 (primary claim's stage)
DEFAULT_CHAIN["tarnn_table"] = ["tarnn_adding_t750"]  # TARNN on the adding task, T = 750 (primary claim's stage)
DEFAULT_CHAIN["global_table_cifar"] = ["global_c10", "resnet32_c10"]  # ResNet-32-Global vs ResNet-32, CIFAR-10 (primary)
DEFAULT_CHAIN["avae_table1_mnist"] = ["sweep_avae_rotopt", "sweep_vae_single"]  # AVAE-opt vs VAE single, Table 1 (primary)
DEFAULT_CHAIN["avae_3d_modelnet10"] = ["avae_so3_l16", "vae_so3_l19"]  # AVAE L16 vs VAE L19, SO(3) (primary)
DEFAULT_CHAIN["selective_table_cifar10"] = ["osp", "sr"]  # OSP vs softmax response, ResNet-32 (primary claim)
DEFAULT_CHAIN["disk_table"] = ["disk_resnet10_s_t_resnet10_l"]  # teacher + CE student -> DiSK, ResNet10-s (primary)
SMOKE = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 1, "trainer.limit_val_batches": 1,
         "trainer.limit_test_batches": 1, "trainer.num_sanity_val_steps": 0, "trainer.accelerator": "cpu",
         "trainer.devices": 1, "trainer.precision": "32-true", "trainer.logger": False,
         "trainer.enable_progress_bar": False, "data.init_args.batch_size": 2, "data.init_args.num_workers": 0}


# LossLandscape at fit/validate end: 3-point grids on 4 images, no trajectory (1 epoch leaves < 3 checkpoints)
LANDSCAPE_SMOKE = {"x_grid": "-1:1:3", "y_grid": "-1:1:3", "interpolate_grid": "-0.5:1.5:3", "trajectory": None,
                   "hessian_grid": None, "sharpness_directions": 2, "batch_size": 4, "max_samples": 4}


def _smoke_study(src: Path, dst: Path, data_dir) -> Path:
    """The study with one seed, every axis at its first value and the smoke settings in every stage."""
    from tests.recipes.test_recipes import SMOKE_DATA

    d = yaml.safe_load(src.read_text())
    for axis in (d.get("axes") or {}).values():
        first = next(iter(axis["values"]))
        axis["values"] = {first: axis["values"][first]}
    d["seeds"] = [0]
    for stage in d["stages"].values():
        stage.pop("seeds", None)
        stage.pop("gpus", None)
        recipe = yaml.safe_load((REPO / stage["recipe"]).read_text())
        cls = recipe["data"]["class_path"].rsplit(".", 1)[-1]
        extra = {}
        for arg in SMOKE_DATA[cls][1]:
            key, _, value = arg.lstrip("-").partition("=")
            extra[key] = yaml.safe_load(value)
        callbacks = (recipe.get("trainer") or {}).get("callbacks") or []
        last = callbacks[-1] if callbacks else {}
        if str(last.get("class_path", "")).endswith("LossLandscape"):  # the last callback: init_args reach it
            args = last.get("init_args") or {}
            extra.update({f"trainer.callbacks.init_args.{k}": v for k, v in LANDSCAPE_SMOKE.items()
                          if args.get(k) is not None})
        directory = data_dir(cls)
        if directory is not None:
            extra["data.init_args.data_dir"] = directory
        stage["overrides"] = {**(stage.get("overrides") or {}), **SMOKE, **extra}
    dst.write_text(yaml.safe_dump(d, sort_keys=False))
    return dst


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory):
    from tests.recipes.test_recipes import SMOKE_DATA

    cache: dict[str, str | None] = {}

    def get(cls: str) -> str | None:
        if cls not in cache:
            writer = SMOKE_DATA[cls][0]
            cache[cls] = None if writer is None else writer(str(tmp_path_factory.mktemp(cls)))
        return cache[cls]

    return get


def test_there_are_fullscale_studies() -> None:
    assert {p.stem for p in FULLSCALE} >= {"pruning_table1_cifar10", "pruning_table1_imagenet"}


CASES = ([pytest.param(p, DEFAULT_CHAIN[p.stem], id=f"{p.stem}-chain") for p in FULLSCALE if p.stem in DEFAULT_CHAIN]
         + [pytest.param(p, None, id=p.stem, marks=pytest.mark.slow) for p in FULLSCALE])


@pytest.mark.parametrize(("study", "only"), CASES)
def test_fullscale_study_end_to_end_on_fake_data(study: Path, only: list[str] | None, data_dir, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # the real study's dry run: job graph and estimate (of the chain's stages in the default tier)
    select = ["--only", *only] if only else []
    assert studies("run", study, "--runs-root", tmp_path / "dry", "--dry-run", *select) == 0
    out = capsys.readouterr().out
    assert "job graph of" in out and "GPU-hours" in out
    smoke = _smoke_study(study, tmp_path / study.name, data_dir)
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert studies("run", smoke, "--runs-root", runs, "--launcher", "debug", *select) == 0, \
        capsys.readouterr().err[-3000:]
    assert studies("report", smoke, "--runs-root", runs, "--results-dir", results, "--no-wandb") == 0
    name = yaml.safe_load(study.read_text()).get("name", study.stem)
    report = json.loads((results / f"{name}.json").read_text())
    assert len(report["runs_finished"]) > 0
    if not only:
        assert len(report["runs_finished"]) == report["runs_total"]
    text = (results / f"{name}.md").read_text()
    # the paper's numbers stand beside ours
    for m in yaml.safe_load(study.read_text())["metrics"].values():
        if m.get("previous"):
            assert str(m["previous"]) in text
    # chained stages started from their upstream run's checkpoint
    d = yaml.safe_load(smoke.read_text())
    for stage, spec in d["stages"].items():
        if spec.get("init_from") and (not only or stage in only):
            if spec.get("fit", True):
                config = yaml.safe_load(next((runs / name / stage).rglob("config.yaml")).read_text())
                assert str(config["init_from"]).startswith(str(runs / name / spec["init_from"]))
            else:  # an evaluation-only stage: its validate/test ran on the upstream run's checkpoint
                config = yaml.safe_load(next((runs / name / stage).rglob("config.*.yaml")).read_text())
                assert str(config["ckpt_path"]).startswith(str(runs / name / spec["init_from"]))
