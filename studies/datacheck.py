"""Checks a study's data directories before anything is submitted: the layout each datamodule reads, with class and
file counts (a wrong layout on a cluster otherwise fails minutes later in every job of the array).

Known layouts: CIFAR-10/100 (python-version pickle files), ImageNet (``train/<class>/`` and ``val/<class>/`` with
the same ``num_classes`` class folders, none empty) and MNIST (the four idx files). Other datamodules generate
their data or read formats checked by the datamodule itself when the job starts. ``--no-data-check`` skips this
(data that only exists on the compute nodes' local disks).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import yaml

from studies.spec import Study, StudyError

CIFAR_FILES = {
    "CIFAR10DataModule": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch",
                                                                                             "batches.meta"]),
    "CIFAR100DataModule": ("cifar-100-python", ["train", "test", "meta"]),
}
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]


def _recipe(study: Study, stage: str) -> dict[str, Any]:
    return yaml.safe_load(Path(study.stages[stage].recipe).read_text()) or {}


def data_class(study: Study, stage: str) -> str:
    path = ((_recipe(study, stage).get("data") or {}).get("class_path")) or ""
    return study.stages[stage].overrides.get("data.class_path", path).rsplit(".", 1)[-1]


def data_setting(study: Study, stage: str, key: str, override: str | None = None) -> Any:
    """A ``data.init_args`` value of the stage: the study's override, else the recipe's, else the class default."""
    if override is not None:
        return override
    s = study.stages[stage]
    if f"data.init_args.{key}" in s.overrides:
        return s.overrides[f"data.init_args.{key}"]
    data = _recipe(study, stage).get("data") or {}
    if key in (data.get("init_args") or {}):
        return data["init_args"][key]
    import importlib

    module, _, name = data.get("class_path", "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        default = inspect.signature(cls.__init__).parameters[key].default
    except (ImportError, AttributeError, KeyError, ValueError):
        return None
    return None if default is inspect.Parameter.empty else default


def check(study: Study, stages: list[str], data_dirs: dict[str, str] | None = None) -> list[str]:
    """Checks the data of ``stages``; returns one line per checked directory; raises StudyError naming the
    directory, what is wrong and the study key that chose it."""
    lines, seen = [], set()
    for stage in stages:
        cls = data_class(study, stage)
        given = (data_dirs or {}).get(cls)
        data_dir = data_setting(study, stage, "data_dir", given)
        if data_dir is None or (cls, str(data_dir)) in seen:
            continue
        seen.add((cls, str(data_dir)))
        source = ("the cluster profile's data_dirs." + cls if given else
                  f"data.init_args.data_dir of {study.stages[stage].recipe} (or stages.{stage}.overrides)")
        where = f"{study.path}: stage {stage!r} reads {cls} from {data_dir} ({source})"
        root = Path(str(data_dir))
        if cls in CIFAR_FILES:
            sub, files = CIFAR_FILES[cls]
            missing = [f for f in files if not (root / sub / f).is_file()]
            if missing:
                raise StudyError(f"{where}, but {root / sub} lacks {', '.join(missing)} ({len(files) - len(missing)} "
                                 f"of the {len(files)} files of the python-version archive are there). Extract the "
                                 f"archive so that {root / sub} holds them, set the data directory, or pass "
                                 "--no-data-check when the data exists only on the compute nodes.")
            lines.append(f"{cls}: {root / sub} holds the {len(files)} files")
        elif cls == "ImageNetDataModule":
            n = int(data_setting(study, stage, "num_classes") or 1000)
            counts = {}
            for split in ("train", "val"):
                folder = root / split
                if not folder.is_dir():
                    raise StudyError(f"{where}, but {folder} is not a directory. The layout is "
                                     "<data_dir>/train/<class>/*.JPEG and <data_dir>/val/<class>/*.JPEG; set the data "
                                     "directory, or pass --no-data-check when the data exists only on the compute "
                                     "nodes.")
                classes = {e.name: sum(1 for f in os.scandir(e.path) if f.is_file())
                           for e in os.scandir(folder) if e.is_dir()}
                empty = sorted(c for c, k in classes.items() if k == 0)
                if len(classes) != n or empty:
                    what = (f"{len(classes)} class folders, not {n}" if len(classes) != n else
                            f"{len(empty)} empty class folders (e.g. {empty[0]})")
                    raise StudyError(f"{where}, but {folder} has {what}. Sort the images into one folder per class "
                                     "(the same folders in train/ and val/), or pass --no-data-check when the data "
                                     "exists only on the compute nodes.")
                counts[split] = (classes, sum(classes.values()))
            if set(counts["train"][0]) != set(counts["val"][0]):
                odd = sorted(set(counts["train"][0]) ^ set(counts["val"][0]))[:3]
                raise StudyError(f"{where}, but train/ and val/ have different class folders (e.g. {', '.join(odd)}).")
            lines.append(f"{cls}: {root} has {n} classes, {counts['train'][1]} train and {counts['val'][1]} val "
                         "images")
        elif cls == "MNISTDataModule":
            raw = root / "MNIST" / "raw"
            missing = [f for f in MNIST_FILES if not (raw / f).is_file() and not (raw / (f + ".gz")).is_file()]
            if missing:
                raise StudyError(f"{where}, but {raw} lacks {', '.join(missing)}; set the data directory, or pass "
                                 "--no-data-check when the data exists only on the compute nodes.")
            lines.append(f"{cls}: {raw} holds the 4 idx files")
    return lines
