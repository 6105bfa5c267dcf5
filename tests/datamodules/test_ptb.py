"""Penn Treebank datamodule on tiny files in Mikolov's layout: tokenisation, vocabulary, shifted chunks, errors."""

from __future__ import annotations

import pytest
import torch

from datamodules.errors import DatasetNotFoundError
from datamodules.ptb import PTBDataModule


def _write(root, names, lines):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_text("".join(f" {ln} \n" for ln in lines))


def test_word_level_tokens_vocab_and_shifted_chunks(tmp_path):
    _write(tmp_path, ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"], ["a b <unk> c", "b a"])
    dm = PTBDataModule(data_dir=str(tmp_path), level="word", seq_len=3, batch_size=2)
    assert dm.num_classes == 10000 and dm.input_shape == (3,)
    dm.setup()
    assert dm.vocab == {"a": 0, "b": 1, "<unk>": 2, "c": 3, "<eos>": 4}
    # stream: a b <unk> c <eos> b a <eos>  ->  (8 - 1) // 3 = 2 chunks
    x, y = dm.train_set.tensors
    assert x.tolist() == [[0, 1, 2], [3, 4, 1]]
    assert y.tolist() == [[1, 2, 3], [4, 1, 0]]
    xb, yb = next(iter(dm.val_dataloader()))
    assert xb.dtype == torch.long and xb.shape == (2, 3)


def test_char_level_reads_the_char_files(tmp_path):
    _write(tmp_path, ["ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"], ["a b _ c a", "c _ a"])
    dm = PTBDataModule(data_dir=str(tmp_path), level="char", seq_len=4)
    assert dm.num_classes == 50
    dm.setup()
    assert set(dm.vocab) == {"a", "b", "_", "c", "<eos>"}
    assert len(dm.train_set) == 2


def test_awd_lstm_names_are_accepted(tmp_path):
    _write(tmp_path, ["train.txt", "valid.txt", "test.txt"], ["x y z w v u"])
    dm = PTBDataModule(data_dir=str(tmp_path), seq_len=5)
    dm.setup()
    assert len(dm.train_set) == 1


def test_missing_files_name_the_file_and_the_fix(tmp_path):
    _write(tmp_path, ["ptb.train.txt"], ["a b"])
    with pytest.raises(DatasetNotFoundError) as err:
        PTBDataModule(data_dir=str(tmp_path)).setup()
    msg = str(err.value)
    assert "ptb.valid.txt" in msg and "ptb.test.txt" in msg and "simple-examples" in msg
    with pytest.raises(DatasetNotFoundError, match="ptb.char.train.txt"):
        PTBDataModule(data_dir=str(tmp_path / "absent"), level="char").setup()


def test_vocabulary_larger_than_vocab_size_is_an_error(tmp_path):
    _write(tmp_path, ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"], ["a b c d e f g"])
    with pytest.raises(DatasetNotFoundError, match="vocab_size: 8"):
        PTBDataModule(data_dir=str(tmp_path), seq_len=2, vocab_size=4).setup()
    with pytest.raises(DatasetNotFoundError, match="too short"):
        PTBDataModule(data_dir=str(tmp_path), seq_len=50).setup()
