"""Hyperparameter parity: the objects each recipe builds through main.py equal the released runner's values.

The tables below hold the release's values with their source file and commit. Each test builds a recipe with
``main.cli_main([...], run=False)`` and compares the instantiated optimizer, schedule, callbacks, datamodule and
net with the table; a difference is allowed only where the recipe header's ``Deviations`` line lists it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.optim import RMSpropTF
from timm.scheduler import StepLRScheduler
from torchvision.ops import StochasticDepth
from torchvision.transforms import CenterCrop, InterpolationMode, Resize

from callbacks.ema import WeightEMA
from callbacks.global_batch import GlobalBatchSize, split_global_batch
from main import cli_main

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------ ImageNet (timm)
# anilkagak2/PDE_GlobalLayer, commit 8482e752: runner-imagenet.sh (the three distributed_train.sh commands: -b is
# the per-process batch on 8 GPUs; the epochs are the comments beside the E=1 placeholder) and train_imagenet.py
# (timm's train.py: its defaults --warmup-epochs 3, --smoothing 0.1, --train-interpolation random, --momentum 0.9;
# create_optimizer_v2 with filter_bias_and_bn; create_scheduler -> StepLRScheduler stepped once per epoch;
# ModelEmaV2); imagenet_global_models.py (_cfg: bicubic, crop_pct 0.875).
TIMM_SOURCE = "anilkagak2/PDE_GlobalLayer@8482e752 runner-imagenet.sh + train_imagenet.py"
TIMM_COMMON: dict[str, Any] = dict(opt=RMSpropTF, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5,
                                   decay_epochs=2.4, warmup_epochs=3, warmup_lr=1e-6, ema_decay=0.999,
                                   aa_magnitude=9, aa_mstd=0.5, aa_layers=2, re_mode="pixel", smoothing=0.1,
                                   dropout=0.2, drop_path=0.2, image_size=224, resize=256)
TIMM_RUNNERS: dict[str, dict[str, Any]] = {
    "global_efficientnet_b0": dict(lr=0.192, device_batch=256, devices=8, decay_rate=0.97, epochs=450,
                                   re_prob=0.2, lr_noise=None),
    "global_mobilenetv3_large_100": dict(lr=0.192, device_batch=256, devices=8, decay_rate=0.973, epochs=600,
                                         re_prob=0.2, lr_noise=(0.42, 0.9)),
    "global_mobilenetv2_100": dict(lr=0.4, device_batch=128, devices=8, decay_rate=0.97, epochs=200, re_prob=0.05,
                                   lr_noise=None),
}
# recipe -> runner command it follows; recipes whose header lists "no drop-path" as a deviation
TIMM_RECIPES = {
    "global_efficientnet_b0_imagenet": "global_efficientnet_b0",
    "global_mobilenet_v3_large_imagenet": "global_mobilenetv3_large_100",
    "global_mobilenet_v2_imagenet": "global_mobilenetv2_100",
    "sicnn_imagenet": "global_mobilenetv3_large_100",
    "sicnn_efficientnet_b0_imagenet": "global_efficientnet_b0",
    "baseline_efficientnet_b0_imagenet": "global_efficientnet_b0",
    "baseline_mobilenet_v3_large_imagenet": "global_mobilenetv3_large_100",
    "baseline_mobilenet_v2_imagenet": "global_mobilenetv2_100",
}
NO_DROP_PATH = {"baseline_mobilenet_v3_large_imagenet", "baseline_mobilenet_v2_imagenet"}
# one recipe per runner command in the default tier, the rest under -m slow
TIMM_DEFAULT = {"sicnn_imagenet", "global_mobilenet_v2_imagenet", "global_efficientnet_b0_imagenet"}


def build(recipe: str, tmp_path, *extra: str):
    return cli_main(["--config", str(REPO / "recipes" / f"{recipe}.yaml"), f"--runs_root={tmp_path}",
                     "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false", *extra], run=False)


def header_deviations(recipe: str) -> str:
    text = (REPO / "recipes" / f"{recipe}.yaml").read_text().split("\nseed_everything")[0]
    return text.split("# Deviations:", 1)[1] if "# Deviations:" in text else ""


def callback(trainer, cls):
    found = [c for c in trainer.callbacks if isinstance(c, cls)]
    assert len(found) == 1, f"expected one {cls.__name__}, got {len(found)}"
    return found[0]


def _timm_params(recipe: str) -> pytest.param:
    marks = () if recipe in TIMM_DEFAULT else (pytest.mark.slow,)
    return pytest.param(recipe, id=recipe, marks=marks)


@pytest.mark.parametrize("recipe", [_timm_params(r) for r in TIMM_RECIPES])
def test_imagenet_recipe_builds_the_timm_runner(recipe, tmp_path):
    r = {**TIMM_COMMON, **TIMM_RUNNERS[TIMM_RECIPES[recipe]]}
    cli = build(recipe, tmp_path)
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer

    # optimizer: timm's RMSpropTF with the factory's decay groups
    conf = model.configure_optimizers()
    opt, sched_conf = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, r["opt"])
    for group in opt.param_groups:
        # the scheduler has already set epoch 0's rate: the configured one is initial_lr
        assert (group["initial_lr"], group["alpha"], group["eps"], group["momentum"]) == (
            r["lr"], r["alpha"], r["eps"], r["momentum"])
        assert group["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in group["params"]) else r["weight_decay"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())

    # schedule: set once per epoch, equal to timm's StepLRScheduler as create_scheduler builds it, at every epoch
    assert sched_conf["interval"] == "epoch" and model.hparams.warmup_steps == 0
    scheduler = sched_conf["scheduler"]
    noise = None if r["lr_noise"] is None else [round(f * r["epochs"]) for f in r["lr_noise"]]
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=r["lr"])
    ref = StepLRScheduler(ref_opt, decay_t=r["decay_epochs"], decay_rate=r["decay_rate"], warmup_t=r["warmup_epochs"],
                          warmup_lr_init=r["warmup_lr"], warmup_prefix=False, noise_range_t=noise, t_in_epochs=True)
    for epoch in (0, 1, 2, 3, 4, 10, r["epochs"] // 2, r["epochs"] - 1):
        ref.step(epoch)
        assert scheduler.lr_at(epoch, r["lr"]) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12), epoch
    scheduler.check_run_length(trainer.max_epochs)
    assert trainer.max_epochs == r["epochs"]

    # global batch: fixed; per-device batch and accumulation for 1 and 8 devices
    gb = callback(trainer, GlobalBatchSize)
    assert gb.global_batch_size == r["device_batch"] * r["devices"] and dm.batch_size == r["device_batch"]
    assert split_global_batch(gb.global_batch_size, 1, dm.batch_size) == (r["device_batch"], r["devices"])
    assert split_global_batch(gb.global_batch_size, 8, dm.batch_size) == (r["device_batch"], 1)

    # EMA of the weights
    assert callback(trainer, WeightEMA).decay == r["ema_decay"]

    # augmentation
    train = {type(t): t for t in dm.train_transform().transforms}
    ra, erase = train[RandAugment], train[RandomErasing]
    assert ra.num_layers == r["aa_layers"] and {(op.magnitude, op.magnitude_std) for op in ra.ops} == {
        (r["aa_magnitude"], r["aa_mstd"])}
    assert (erase.probability, erase.mode) == (r["re_prob"], r["re_mode"])
    crop = train[RandomResizedCropAndInterpolation]
    assert crop.size == (r["image_size"],) * 2
    assert set(crop.interpolation) == {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC}
    resize, center = dm.eval_transform().transforms[:2]
    assert isinstance(resize, Resize) and isinstance(center, CenterCrop)
    assert (resize.size, resize.interpolation, center.size) == (r["resize"], InterpolationMode.BICUBIC,
                                                                (r["image_size"],) * 2)

    # loss and regularisation of the net
    assert model.hparams.label_smoothing == r["smoothing"]
    dropouts = [m.p for m in model.net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {r["dropout"]}
    drop_path = [m.p for m in model.net.modules() if isinstance(m, StochasticDepth)]
    if recipe in NO_DROP_PATH:
        assert not drop_path and "no drop-path" in header_deviations(recipe)
    else:
        assert drop_path and max(drop_path) < r["drop_path"] and max(drop_path) > 0.7 * r["drop_path"]


def test_no_imagenet_recipe_expects_a_lower_top1_for_a_missing_library():
    for path in (REPO / "recipes").glob("*imagenet*.yaml"):
        head = path.read_text().split("\nseed_everything")[0]
        assert "the platform has no timm" not in head, path.name
        assert "lower top-1 than published" not in head or "# Deviations:" in head, path.name
