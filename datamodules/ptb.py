"""Penn Treebank language modelling at word and character level, from Mikolov's standard text files.

Files (the ``simple-examples/data`` release, or AWD-LSTM's ``data/penn`` / ``data/pennchar`` copies):

* word level: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (or ``train.txt``, ``valid.txt``, ``test.txt``);
  10,000 word types with ``<unk>``;
* char level: ``ptb.char.train.txt``, ``ptb.char.valid.txt``, ``ptb.char.test.txt`` (or ``train.txt`` ...):
  characters separated by spaces, ``_`` between words.

Both levels use the AWD-LSTM tokenisation: every line is split on whitespace and ends with ``<eos>``; the
vocabulary is built in order of first appearance over train, valid, test. ``vocab_size`` (10000 word, 50 char)
sizes the model's embedding/softmax before any file is read (it is linked to the model's ``num_classes``); a
corpus with more types than that raises an error naming the number to set.

Each split's token stream is cut into consecutive non-overlapping chunks of ``seq_len + 1`` tokens (inputs the
first ``seq_len``, targets shifted by one): ``input_shape = (seq_len,)``. Training chunks are shuffled; the hidden
state is not carried between chunks (the FPTT PTB-300 setting: each 300-token sequence is one example; the
stateful batchified streams of AWD-LSTM are not reproduced). The tail shorter than ``seq_len + 1`` is dropped.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch.utils.data import TensorDataset

from datamodules.base import BaseDataModule
from datamodules.errors import DatasetNotFoundError, dataset_not_found

NAMES = {
    "word": {s: (f"ptb.{s}.txt", f"{s}.txt") for s in ("train", "valid", "test")},
    "char": {s: (f"ptb.char.{s}.txt", f"{s}.txt") for s in ("train", "valid", "test")},
}
DEFAULT_VOCAB = {"word": 10000, "char": 50}


class PTBDataModule(BaseDataModule):
    """Penn Treebank (module docstring). ``num_classes`` = ``vocab_size``; ``input_shape = (seq_len,)``."""

    def __init__(self, data_dir: str = "data/ptb", level: Literal["word", "char"] = "word", seq_len: int = 300,
                 vocab_size: int | None = None, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if level not in NAMES:
            raise ValueError(f"data.init_args.level must be 'word' or 'char', got {level!r}")
        if seq_len < 1:
            raise ValueError(f"data.init_args.seq_len must be >= 1, got {seq_len}")
        self.data_dir, self.level, self.seq_len = os.fspath(data_dir), level, int(seq_len)
        self.num_classes = int(vocab_size or DEFAULT_VOCAB[level])
        self.input_shape = (self.seq_len,)
        self.vocab: dict[str, int] = {}

    def _error(self, missing=None, problem=None) -> DatasetNotFoundError:
        names = NAMES[self.level]
        return dataset_not_found(
            f"Penn Treebank ({self.level} level)", self.data_dir,
            "<data_dir>/ holding " + ", ".join(n[0] for n in names.values()) + " (or " +
            ", ".join(n[1] for n in names.values()) + ")",
            "download simple-examples.tgz from http://www.fit.vutbr.cz/~imikolov/rnnlm/ and copy its data/"
            + ("ptb.*.txt" if self.level == "word" else "ptb.char.*.txt") + " files into "
            + os.path.abspath(self.data_dir),
            missing=missing, problem=problem)

    def files(self) -> dict[str, str]:
        """The path of each split; raises a clear error naming the missing files."""
        if not os.path.isdir(self.data_dir):
            raise self._error(missing=[self.data_dir])
        found, missing = {}, []
        for split, candidates in NAMES[self.level].items():
            path = next((os.path.join(self.data_dir, c) for c in candidates
                         if os.path.isfile(os.path.join(self.data_dir, c))), None)
            if path is None:
                missing.append(candidates[0])
            else:
                found[split] = path
        if missing:
            raise self._error(missing=missing)
        return found

    def _tokens(self, path: str) -> list[str]:
        try:
            with open(path, encoding="utf-8") as f:
                return [tok for line in f for tok in (*line.split(), "<eos>")]
        except (OSError, UnicodeDecodeError) as err:
            raise self._error(problem=f"has an unreadable file {os.path.basename(path)} ({err})") from err

    def _chunks(self, ids: torch.Tensor, split: str) -> TensorDataset:
        n = (len(ids) - 1) // self.seq_len
        if n < 1:
            raise self._error(problem=f"has a {split} split of {len(ids)} tokens, too short for one sequence of "
                                      f"seq_len={self.seq_len} (+1) tokens")
        x = ids[: n * self.seq_len].reshape(n, self.seq_len)
        y = ids[1: n * self.seq_len + 1].reshape(n, self.seq_len)
        return TensorDataset(x, y)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        paths = self.files()
        streams = {s: self._tokens(p) for s, p in paths.items()}
        vocab: dict[str, int] = {}
        for split in ("train", "valid", "test"):
            for tok in streams[split]:
                if tok not in vocab:
                    vocab[tok] = len(vocab)
        if len(vocab) > self.num_classes:
            raise self._error(problem=f"has {len(vocab)} token types, more than vocab_size={self.num_classes}; set "
                                      f"data.init_args.vocab_size: {len(vocab)}")
        self.vocab = vocab
        ids = {s: torch.tensor([vocab[t] for t in toks], dtype=torch.long) for s, toks in streams.items()}
        self.train_set = self._chunks(ids["train"], "train")
        self.val_set = self._chunks(ids["valid"], "valid")
        self.test_set = self._chunks(ids["test"], "test")
