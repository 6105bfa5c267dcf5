"""Rewrite the ImageNet recipes trained with the Global layer's released timm runner to that runner's settings.

The runner (``runner-imagenet.sh`` and ``train_imagenet.py`` of ``anilkagak2/PDE_GlobalLayer``, commit 8482e752,
a copy of timm's ``train.py``) trains with RMSprop-TF, an EMA of the weights, RandAugment, random erasing, a
warm-up + step-decay schedule in epochs and drop-path. The recipes used torch's RMSprop, a constant warm-up
factor, step counts for 8 devices and no EMA/RandAugment/erasing; this script replaces, in each recipe of
``RECIPES``:

* the ``# Schedule:`` block of the header (up to the first YAML line) by the runner's settings, the global batch
  and the deviations that remain;
* in the YAML: the optimizer (``modules.schedules.TimmRMSpropTF``), the schedule
  (``modules.schedules.WarmupStepDecayLR``, stepped once per epoch), the callbacks ``GlobalBatchSize`` and
  ``WeightEMA``, the datamodule's augmentation keys and the net's drop-path key; the module's old
  ``warmup_steps``/``warmup_factor``/``lr_scheduler_interval`` keys are removed.

Everything else (the rest of the header, other keys) is kept. Usage, from the repository root::

    python recipes/migrations/timm_runner_parity.py          # rewrite
    python recipes/migrations/timm_runner_parity.py --check  # exit 1 if a recipe differs from what it would write

Idempotent: a second run writes the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "runner-imagenet.sh in anilkagak2/PDE_GlobalLayer at commit 8482e752, whose train_imagenet.py is timm's train.py"

# the runner's three commands (per-device batch -b, --lr, --decay-rate, --reprob, --lr-noise; the epochs from the
# comment next to E=1, the placeholder the committed script runs with)
RUNNERS: dict[str, dict[str, Any]] = {
    "efficientnet_b0": dict(model="global_efficientnet_b0", device_batch=256, lr=0.192, decay_rate=0.97,
                            epochs=450, re_prob=0.2, lr_noise=None),
    "mobilenet_v3_large": dict(model="global_mobilenetv3_large_100", device_batch=256, lr=0.192, decay_rate=0.973,
                               epochs=600, re_prob=0.2, lr_noise=(0.42, 0.9)),
    "mobilenet_v2": dict(model="global_mobilenetv2_100", device_batch=128, lr=0.4, decay_rate=0.97, epochs=200,
                         re_prob=0.05, lr_noise=None),
}
# shared flags of the three commands and the trainer's defaults they rely on
COMMON = dict(devices=8, opt="rmsproptf", alpha=0.9, opt_eps=1e-3, momentum=0.9, weight_decay=1e-5,
              decay_epochs=2.4, warmup_epochs=3, warmup_lr=1e-6, ema_decay=0.999, aa="rand-m9-mstd0.5",
              remode="pixel", train_interpolation="random", interpolation="bicubic", smoothing=0.1, drop=0.2,
              drop_path=0.2)

# recipe -> (runner, how the net takes drop-path: net_kwargs key or None when it cannot, role)
RECIPES: dict[str, tuple[str, str | None, str]] = {
    "global_efficientnet_b0_imagenet.yaml": ("efficientnet_b0", "stochastic_depth_prob", "global"),
    "global_mobilenet_v3_large_imagenet.yaml": ("mobilenet_v3_large", "drop_path_rate", "global"),
    "global_mobilenet_v2_imagenet.yaml": ("mobilenet_v2", "drop_path_rate", "global"),
    "sicnn_imagenet.yaml": ("mobilenet_v3_large", "drop_path_rate", "sicnn"),
    "sicnn_efficientnet_b0_imagenet.yaml": ("efficientnet_b0", "stochastic_depth_prob", "sicnn"),
    "baseline_efficientnet_b0_imagenet.yaml": ("efficientnet_b0", "stochastic_depth_prob", "baseline"),
    "baseline_mobilenet_v3_large_imagenet.yaml": ("mobilenet_v3_large", None, "baseline"),
    "baseline_mobilenet_v2_imagenet.yaml": ("mobilenet_v2", None, "baseline"),
}


def settings(runner: str) -> dict[str, Any]:
    """The recipe values of one runner command (global batch, lr noise in epochs, ...)."""
    r = {**COMMON, **RUNNERS[runner]}
    r["global_batch"] = r["device_batch"] * r["devices"]
    r["noise_epochs"] = None if r["lr_noise"] is None else [round(f * r["epochs"]) for f in r["lr_noise"]]
    return r


def _g(x: float) -> str:
    if 0 < abs(x) < 1e-2:
        mant, exp = f"{x:.0e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{x:g}"


def header(name: str) -> list[str]:
    runner, dp_key, role = RECIPES[name]
    r = settings(runner)
    who = {"global": f"the released timm runner of this model, `{r['model']}` ({SOURCE})",
           "baseline": f"the released timm runner of the Global version of this net, `{r['model']}` ({SOURCE})",
           "sicnn": f"the released timm runner of the Global version of this backbone, `{r['model']}` ({SOURCE}; "
                    "SI-CNN has no released runner: project choice)"}[role]
    noise = (f" lr noise x(1+n), |n| < 0.67, in epochs {r['noise_epochs'][0]}-{r['noise_epochs'][1]} "
             f"(--lr-noise {_g(r['lr_noise'][0])} {_g(r['lr_noise'][1])});" if r["noise_epochs"] else "")
    text = (
        f"{who}, built from timm and Lightning: RMSprop-TF (alpha {_g(r['alpha'])}, eps {_g(r['opt_eps'])} inside "
        f"the square root, momentum {_g(r['momentum'])}; weight decay {_g(r['weight_decay'])}, none on biases and "
        f"norm weights), lr {_g(r['lr'])} for a global batch of {r['global_batch']} ({r['device_batch']} per "
        f"device x {r['devices']}); lr set once per epoch: linear warm-up from {_g(r['warmup_lr'])} over "
        f"{r['warmup_epochs']} epochs, then x{_g(r['decay_rate'])} every {_g(r['decay_epochs'])} epochs counted "
        f"from epoch 0;{noise} {r['epochs']} epochs; EMA of the weights (decay {_g(r['ema_decay'])}, after every "
        f"optimizer step; validation and the checkpoint's state_dict use it); RandAugment {r['aa']}, random erasing "
        f"{_g(r['re_prob'])} ({r['remode']}), random bilinear/bicubic crop resizing, bicubic eval resize; dropout "
        f"{_g(r['drop'])}, drop-path {_g(r['drop_path'])}{' (see Deviations)' if dp_key is None else ''}, label smoothing {_g(r['smoothing'])}; no mixup or "
        "cutmix (the runner uses none).")
    batch = (
        f"fixed at {r['global_batch']} images per optimizer step on any device count "
        f"(callbacks/global_batch.py): per device {r['global_batch']} / devices, at most data.init_args.batch_size "
        f"({r['device_batch']}), gradient accumulation making up the rest (1 device: {r['global_batch'] // r['device_batch']} x "
        f"{r['device_batch']}; {r['devices']}: {r['device_batch']}; 64: {r['global_batch'] // 64}); a device count "
        f"that does not divide {r['global_batch']} is refused. The lr belongs to the global batch, so it does not "
        "change with the device count; scale it linearly if you change global_batch_size.")
    deviations = [
        "bf16 autocast (the runner trains in fp32: --trainer.precision=32-true for its arithmetic)",
        "batch-norm statistics come from rank 0 at evaluation (DDP broadcasts them; the runner averages them "
        "over ranks, --dist-bn reduce)",
        "only the EMA weights are validated (the runner also validates the raw weights)",
    ]
    if dp_key is None:
        deviations.insert(0, "no drop-path: torchvision's MobileNetV2/V3 have none, and the net registry "
                             "(nets/registry.py) does not build timm's models")
    dev = "; ".join(deviations) + "."
    return (_wrap("# Schedule:       ", text) + _wrap("# Global batch:   ", batch)
            + _wrap("# Deviations:     ", dev))


def _wrap(first: str, text: str, width: int = 118) -> list[str]:
    lines, line = [], first
    for word in text.split(" "):
        if len(line) + 1 + len(word) > width and line.strip("# ") and not line.endswith(": "):
            lines.append(line.rstrip())
            line = "#" + " " * 17
        line += ("" if line.endswith(" ") else " ") + word
    lines.append(line.rstrip())
    return lines


def body(name: str, data: dict[str, Any]) -> dict[str, Any]:
    runner, dp_key, _ = RECIPES[name]
    r = settings(runner)
    data["trainer"]["max_epochs"] = r["epochs"]
    callbacks = list(data["trainer"].get("callbacks") or [])
    wanted = [{"class_path": "callbacks.global_batch.GlobalBatchSize",
               "init_args": {"global_batch_size": r["global_batch"]}},
              {"class_path": "callbacks.ema.WeightEMA", "init_args": {"decay": r["ema_decay"]}}]
    for entry in wanted:  # replaced where it is (other migrations may have added callbacks after it), else appended
        at = [i for i, c in enumerate(callbacks) if c.get("class_path") == entry["class_path"]]
        if at:
            callbacks[at[0]] = entry
        else:
            callbacks.append(entry)
    data["trainer"]["callbacks"] = callbacks
    m = data["model"]["init_args"]
    for key in ("warmup_steps", "warmup_factor", "lr_scheduler_interval"):
        m.pop(key, None)
    if dp_key is not None:
        m["net_kwargs"] = {**(m.get("net_kwargs") or {}), dp_key: r["drop_path"]}
    m["label_smoothing"] = r["smoothing"]
    m["optimizer"] = {"class_path": "modules.schedules.TimmRMSpropTF",
                      "init_args": {"lr": r["lr"], "alpha": r["alpha"], "eps": r["opt_eps"],
                                    "momentum": r["momentum"], "weight_decay": r["weight_decay"]}}
    sched = {"decay_epochs": r["decay_epochs"], "decay_rate": r["decay_rate"], "warmup_epochs": r["warmup_epochs"],
             "warmup_lr_init": r["warmup_lr"]}
    if r["noise_epochs"]:
        sched["noise_range_epochs"] = r["noise_epochs"]
    m["lr_scheduler"] = {"class_path": "modules.schedules.WarmupStepDecayLR", "init_args": sched}
    d = data["data"]["init_args"]
    d["batch_size"] = r["device_batch"]
    d.update(interpolation=r["interpolation"], train_interpolation=r["train_interpolation"], auto_augment=r["aa"],
             re_prob=r["re_prob"], re_mode=r["remode"])
    return data


# ---------------------------------------------------------------------------------------------- YAML emitter
def _scalar(v: Any) -> str:
    if isinstance(v, float):
        text = repr(v)
        if "e" in text or "E" in text:
            mant, _, exp = f"{v:.1e}".partition("e")
            text = f"{float(mant)!r}e{int(exp)}" if float(f"{mant}e{exp}") == v else repr(v)
        return text
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _flow(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    return _scalar(v)


def _leafy(v: Any) -> bool:
    return isinstance(v, dict | list) and all(not isinstance(x, dict | list) or
                                              (isinstance(x, list) and all(not isinstance(y, dict | list) for y in x))
                                              for x in (v.values() if isinstance(v, dict) else v))


def _emit(obj: dict[str, Any], indent: int, path: tuple[str, ...]) -> list[str]:
    out, pad = [], " " * indent
    for k, v in obj.items():
        block = path + (k,) in (("data", "init_args"),)
        if isinstance(v, dict) and (not _leafy(v) or block):
            out.append(f"{pad}{k}:")
            out += _emit(v, indent + 2, path + (k,))
        elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
            out.append(f"{pad}{k}:")
            for item in v:
                first, *rest = _emit(item, indent + 4, path + (k, "-"))
                out.append(f"{pad}  - {first.lstrip()}")
                out += rest
        elif isinstance(v, dict | list) and len(f"{pad}{k}: {_flow(v)}") > 118 and isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out += [f"{pad}  {x}: {_flow(y)}" for x, y in v.items()]
        elif isinstance(v, dict | list):
            out.append(f"{pad}{k}: {_flow(v)}")
        else:
            out.append(f"{pad}{k}: {_scalar(v)}")
    return out


def rewrite(path: Path) -> str:
    lines = path.read_text().splitlines()
    first_yaml = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    head = lines[:first_yaml]
    start = next(i for i, line in enumerate(head) if line.startswith("# Schedule:"))
    new_head = head[:start] + header(path.name)
    data = yaml.safe_load("\n".join(lines[first_yaml:]))
    return "\n".join(new_head + _emit(body(path.name, data), 0, ())) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a recipe is not what this script writes")
    args = ap.parse_args(argv)
    stale = []
    for name in RECIPES:
        path = ROOT / "recipes" / name
        new = rewrite(path)
        if new != path.read_text():
            stale.append(name)
            if not args.check:
                path.write_text(new)
    verb = "would change" if args.check else "rewrote"
    print(f"{verb} {len(stale)} recipe(s)" + (": " + ", ".join(stale) if stale else ""))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
