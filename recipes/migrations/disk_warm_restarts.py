"""Give the CIFAR-100 DiSK recipes the released student schedule (cosine with warm restarts) and weight decay.

The released trainer (``DiSK.py`` in anilkagak2/DiSK_Distilling_Scaffolded_Knowledge at commit 93671fd8, run by
``runner.sh`` with ``epochs=200``, ``kt=3``) builds ``CosineAnnealingWarmRestarts(T_0=epochs // 4)`` for the student
and steps it with ``step(e)`` after outer epoch ``e``. ``modules.schedules.HeldCosineRestartsLR`` reproduces that
when the DiSK module steps it after each student epoch (``restart_every: 50``, ``steps_per_cycle: 3``). This script
swaps the recipes' ``CosineAnnealingLR(T_max=600)`` for it, sets the weight decay of the student and the guide to
the trainer's defaults (``--wd`` and ``--r_wd`` 1e-5; the runner sets neither) and rewrites the header's deviation
sentence.

Usage (from the repository root): ``python recipes/migrations/disk_warm_restarts.py [--check]``. Idempotent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OLD_YAML = """      class_path: torch.optim.lr_scheduler.CosineAnnealingLR
      init_args: {T_max: 600}
"""
NEW_YAML = """      class_path: modules.schedules.HeldCosineRestartsLR
      init_args: {restart_every: 50, steps_per_cycle: 3}
"""
OLD_HEAD = """#                 delta cosine 0.6->0.4 period 20, max x0.9 every 20 epochs. Deviation: the released cosine
#                 warm restarts are one cosine over the 600 student epochs.
"""
MIGRATED_HEAD = """#                 delta cosine 0.6->0.4 period 20, max x0.9 every 20 epochs. Student lr: cosine with warm
#                 restarts every 50 outer epochs (the release's T_0 = epochs // 4), set one outer epoch late and held
#                 over its 3 student epochs, as the released loop steps it (modules.schedules.HeldCosineRestartsLR).
# Deviations:     the guide's lr is constant (the release decays it too: a cosine over the 5 warm-up epochs, then
#                 the same warm restarts; the DiSK module schedules the student only).
"""
OLD_OPT = "      init_args: {lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}\n    guide_optimizer:"
NEW_OPT = "      init_args: {lr: 0.1, momentum: 0.9, weight_decay: 1.0e-5}\n    guide_optimizer:"
OLD_GUIDE = "      class_path: torch.optim.SGD\n      init_args: {lr: 0.1, momentum: 0.9}\n"
NEW_GUIDE = "      class_path: torch.optim.SGD\n      init_args: {lr: 0.1, momentum: 0.9, weight_decay: 1.0e-5}\n"
NEW_HEAD = """#                 delta cosine 0.6->0.4 period 20, max x0.9 every 20 epochs. Student lr: cosine with warm
#                 restarts every 50 outer epochs (the release's T_0 = epochs // 4), set one outer epoch late and held
#                 over its 3 student epochs, as the released loop steps it (modules.schedules.HeldCosineRestartsLR).
#                 Weight decay 1e-5 for student and guide (the released trainer's --wd/--r_wd defaults).
# Deviations:     the guide's lr is constant (the release decays it too: a cosine over the 5 warm-up epochs, then
#                 the same warm restarts; the DiSK module schedules the student only).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a recipe still has the old schedule")
    args = ap.parse_args(argv)
    stale = []
    for path in sorted((ROOT / "recipes").glob("disk_*_cifar100_*.yaml")):
        text = path.read_text()
        new = (text.replace(OLD_YAML, NEW_YAML).replace(OLD_HEAD, NEW_HEAD).replace(MIGRATED_HEAD, NEW_HEAD)
               .replace(OLD_OPT, NEW_OPT))
        guide = new.find("    guide_optimizer:\n")
        if guide >= 0 and new.startswith(OLD_GUIDE, guide + len("    guide_optimizer:\n")):
            new = new[:guide] + new[guide:].replace(OLD_GUIDE, NEW_GUIDE, 1)
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    print(("would change" if args.check else "rewrote") + f" {len(stale)} recipe(s)")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
