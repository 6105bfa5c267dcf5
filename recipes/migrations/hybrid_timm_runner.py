"""Bring the ImageNet hybrid edge/cloud recipes closer to the released timm-based runner.

The runner (``runner.sh`` and ``hybrid_train.py`` in anilkagak2/Hybrid_Models at commit b5c19078, a copy of timm's
``train.py``) trains with ``--opt adamw --lr 5e-4 --weight-decay 5e-4 --sched cosine --epochs 100 --warmup-lr 1e-6``
(timm defaults: 5 warm-up epochs, min-lr 0, no cool-down, stepped once per epoch), ``--aa rand-m9-mstd0.5-inc1``
with the default random bilinear/bicubic training interpolation, bicubic evaluation resizing, an EMA of the base
model (0.9999) and AMP, on 4 GPUs x 64. Its AdamW gets a plain parameter list, so every parameter is decayed
(the recipes' ``torch.optim.AdamW`` already is that). This script replaces, in each ``RECIPES`` file, the
``CosineAnnealingLR(T_max=100)`` by ``modules.schedules.WarmupCosineLR`` with the runner's warm-up, adds the
runner's augmentation keys to the datamodule, and rewrites the header's ``# Schedule:`` block.

Usage (from the repository root): ``python recipes/migrations/hybrid_timm_runner.py [--check]``. Idempotent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["hybrid_mobilenet_v3_large_resnet50_imagenet.yaml", "hybrid_mobilenet_v3_large_resnet50_imagenet_joint.yaml",
           "hybrid_mobilenet_v3_small_resnet50_imagenet.yaml", "hybrid_mobilenet_v3_small_resnet50_imagenet_joint.yaml"]
OLD_HEAD = """# Schedule:       released runner: AdamW lr 5e-4, weight decay 5e-4, cosine, batch 64 per device x 4, 100 epochs
#                 (here: router warm-up 2 epochs, then 1 model + 1 router epoch per cycle for the alternating
#                 scheme); no EMA, RandAugment or AMP-specific settings.
"""
DRAFT_HEAD = """# Schedule:       the released runner (runner.sh + hybrid_train.py in anilkagak2/Hybrid_Models at commit b5c19078,
#                 timm's trainer): AdamW lr 5e-4, weight decay 5e-4 on every parameter, lr set once per epoch: linear
#                 warm-up from 1e-6 over 5 epochs, then a cosine to 0 over the 100 epochs (counted from epoch 0);
#                 batch 64 per device x 4 = 256 (the lr is not scaled with the device count: with other than 4
#                 devices the global batch changes); RandAugment rand-m9-mstd0.5-inc1, random bilinear/bicubic crop
#                 resizing, bicubic eval resize, label smoothing as the module sets it. Here: router warm-up 2
#                 epochs, then 1 model + 1 router epoch per cycle for the alternating scheme.
"""
NEW_HEAD = """# Schedule:       the released runner (runner.sh + hybrid_train.py in anilkagak2/Hybrid_Models at commit b5c19078,
#                 timm's trainer): AdamW lr 5e-4, weight decay 5e-4 on every parameter, lr set once per epoch: linear
#                 warm-up from 1e-6 over 5 epochs, then a cosine to 0 over the 100 epochs (counted from epoch 0);
#                 batch 64 per device x 4 = 256 (the lr is not scaled with the device count: with other than 4
#                 devices the global batch changes); RandAugment rand-m9-mstd0.5-inc1, random bilinear/bicubic crop
#                 resizing, bicubic eval resize, label smoothing 0.1. Here: router warm-up 2 epochs, then 1 model +
#                 1 router epoch per cycle for the alternating scheme.
# Deviations:     no EMA of the weights (the runner averages the base model alone, decay 0.9999; callbacks/ema.py
#                 averages the whole module, cloud and router included); the edge and the cloud are this project's
#                 baselines, not the runner's timm models and pretrained weights; bf16 autocast instead of fp16 AMP;
#                 no fixed global batch (HybridModel optimises manually, so no gradient accumulation).
"""
OLD_SCHED = """      class_path: torch.optim.lr_scheduler.CosineAnnealingLR
      init_args: {T_max: 100}
"""
NEW_SCHED = """      class_path: modules.schedules.WarmupCosineLR
      init_args: {total_epochs: 100, warmup_epochs: 5, warmup_lr_init: 1.0e-6}
"""
DATA_TAIL = "    num_workers: 8\n"
AUGMENT = ("    interpolation: bicubic\n    train_interpolation: random\n    auto_augment: rand-m9-mstd0.5-inc1\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a recipe is not migrated")
    args = ap.parse_args(argv)
    stale = []
    for name in RECIPES:
        path = ROOT / "recipes" / name
        text = path.read_text()
        new = text.replace(OLD_HEAD, NEW_HEAD).replace(OLD_SCHED, NEW_SCHED)
        start = new.find(DRAFT_HEAD)
        if start >= 0:  # the first version of this script's header: swap its Schedule lines for the current ones
            schedule = NEW_HEAD.split("# Deviations:", 1)[0]
            new = new[:start] + schedule + new[start + len(DRAFT_HEAD):]
        if new.endswith(DATA_TAIL) and "auto_augment:" not in new:
            new += AUGMENT
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    print(("would change" if args.check else "rewrote") + f" {len(stale)} recipe(s)")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
