"""Make the device-resident CIFAR pipeline the CIFAR recipes' choice on a GPU (``data.init_args.device_resident:
auto``: on for a CUDA training device, the worker pipeline on a CPU).

The whole uint8 split is loaded once onto the training device and crop, flip and Cutout run there in batched
tensor ops (datamodules/cifar.py, datamodules/device_augment.py); on a GPU this removes the PIL worker pipeline
from the critical path, on a CPU it runs the same ops in the main process. Recipes that ask for AutoAugment keep
the worker pipeline: its policy cannot run batched per sample (the datamodule refuses the combination).

Idempotent: a recipe that already sets ``device_resident`` is left alone. ``--check`` lists what would change and
exits 1 if anything would.

    python recipes/migrations/device_resident_cifar.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1]
CIFAR = ("datamodules.cifar.CIFAR10DataModule", "datamodules.cifar.CIFAR100DataModule")
LINE = "device_resident: auto  # on a GPU: uint8 split on the device, batched crop/flip/Cutout there"
OLD_LINE = "device_resident: true  # uint8 split on the training device, batched crop/flip/Cutout there"


def wants_it(config: dict) -> bool:
    data = config.get("data") or {}
    args = data.get("init_args") or {}
    return data.get("class_path") in CIFAR and not args.get("autoaugment") and "device_resident" not in args


def edit(text: str) -> str:
    if OLD_LINE in text:  # the first version of this migration set `true`
        return text.replace(OLD_LINE, LINE)
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.rstrip() == "data:")
    init = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "init_args:")
    indent = len(lines[init + 1]) - len(lines[init + 1].lstrip())
    lines.insert(init + 1, " " * indent + LINE + "\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the recipes that would change")
    args = parser.parse_args(argv)
    changed = []
    for path in sorted(RECIPES.glob("*.yaml")):
        text = path.read_text()
        if not wants_it(yaml.safe_load(text) or {}) and OLD_LINE not in text:
            continue
        new = edit(text)
        after = yaml.safe_load(new)
        assert after["data"]["init_args"]["device_resident"] == "auto", path
        changed.append(path.name)
        if not args.check:
            path.write_text(new)
    print(f"{'would change' if args.check else 'changed'} {len(changed)} recipes")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
