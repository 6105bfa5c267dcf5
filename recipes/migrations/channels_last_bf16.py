"""Migration: add the ChannelsLast callback to every recipe that trains a convolutional net in bf16-mixed precision.

Under bf16 autocast on a GPU, cuDNN's tensor-core convolutions need NHWC weights to pay off (results/gpu_plain_loop.txt:
ResNet-56 CIFAR at batch 1024, bf16 NCHW 11.1k images/s vs NHWC 37.8k). On the CPU the callback only changes the
weights' memory layout: the same training (tests/callbacks/test_channels_last.py), and checkpoints hold ordinary
tensors.

A recipe is changed when its ``trainer.precision`` is ``bf16-mixed``, its model (built by main.py's CLI exactly as
``python main.py fit --config <recipe>`` builds it, without data) has at least 3 ``nn.Conv2d`` layers (a ViT has one,
its patch embedding; DiSK's DeiT student with a ViT teacher has two), and it does not list ChannelsLast yet. Only
``trainer.callbacks`` is touched: one list item is appended as text, so comments and layout stay; the result is
checked to parse to the old configuration plus that item. Running it again changes nothing.

Usage::

    python -m recipes.migrations.channels_last_bf16            # rewrite the recipes, print what changed
    python -m recipes.migrations.channels_last_bf16 --check    # exit 1 if a recipe still needs the change
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a file: main.py and the packages live at the repository root
    sys.path.insert(0, str(REPO))
CALLBACK = "callbacks.channels_last.ChannelsLast"
MIN_CONVS = 3


def wants_channels_last(config: dict) -> bool:
    return ((config.get("trainer") or {}).get("precision") == "bf16-mixed"
            and CALLBACK not in yaml.safe_dump(config))


def conv_layers(recipe: Path) -> int:
    """Number of ``nn.Conv2d`` in the recipe's LightningModule (built on the CPU, no data read)."""
    import torch

    from main import cli_main

    with tempfile.TemporaryDirectory() as runs:
        cli = cli_main(["--config", str(recipe), "--trainer.logger=false", "--trainer.accelerator=cpu",
                        f"--runs_root={runs}"], run=False)
    return sum(isinstance(m, torch.nn.Conv2d) for m in cli.model.modules())


def add_callback(text: str) -> str:
    """``text`` with a ChannelsLast item appended to ``trainer.callbacks`` (created if absent)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "trainer:"), None)
    if start is None:
        raise ValueError("no top-level 'trainer:' block")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip() and not lines[i].startswith((" ", "#"))), len(lines))
    cb = next((i for i in range(start + 1, end) if lines[i].startswith("  callbacks:")), None)
    if cb is None:
        last = max(i for i in range(start + 1, end) if lines[i].strip() and not lines[i].lstrip().startswith("#"))
        new = ["  callbacks:\n", f"    - class_path: {CALLBACK}\n"]
        return "".join(lines[:last + 1] + new + lines[last + 1:])
    if lines[cb].split(":", 1)[1].strip():
        raise ValueError("trainer.callbacks is written inline; add the callback by hand")
    items = [i for i in range(cb + 1, end) if lines[i].lstrip().startswith("- ")]
    indent = lines[items[0]][: len(lines[items[0]]) - len(lines[items[0]].lstrip())] if items else "    "
    last = cb
    for i in range(cb + 1, end):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(lines[i]) - len(lines[i].lstrip()) <= 2:
            break
        last = i
    return "".join(lines[:last + 1] + [f"{indent}- class_path: {CALLBACK}\n"] + lines[last + 1:])


def migrate(recipe: Path, write: bool = True) -> bool:
    """True if ``recipe`` needed (and, with ``write``, got) the callback."""
    text = recipe.read_text()
    config = yaml.safe_load(text)
    if not wants_channels_last(config) or conv_layers(recipe) < MIN_CONVS:
        return False
    new_text = add_callback(text)
    expected = copy.deepcopy(config)
    expected["trainer"].setdefault("callbacks", []).append({"class_path": CALLBACK})
    if yaml.safe_load(new_text) != expected:
        raise RuntimeError(f"{recipe}: the edited text does not parse to the old config plus {CALLBACK}")
    if write:
        recipe.write_text(new_text)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a recipe needs the callback")
    p.add_argument("recipes", nargs="*", type=Path, help="default: every recipes/*.yaml")
    a = p.parse_args(argv)
    recipes = a.recipes or sorted((REPO / "recipes").glob("*.yaml"))
    changed = [r for r in recipes if migrate(r, write=not a.check)]
    for r in changed:
        print(f"{'needs' if a.check else 'added'} {CALLBACK}: {r.relative_to(REPO) if r.is_absolute() else r}")
    print(f"{len(changed)} of {len(recipes)} recipes {'need the change' if a.check else 'changed'}")
    return 1 if a.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
