"""Hybrid edge/cloud inference with a learned router (Kag, Fedorov, Gangrade, Whatmough & Saligrama, "Efficient
Edge Inference by Selective Query", ICLR 2023; docs/selective.md#hybrid-edge-and-cloud-router).

A small edge model b, a large cloud model g and a router r (``nets.router.HybridRouter``; one logit per input,
positive = keep on the edge). Coverage = share of inputs kept on the edge; accuracy =
``P(keep, b right) + P(send, g right)``; average MACs per input = ``edge MACs + (1 - coverage) * cloud MACs``.

* **Proxy labels** (:func:`proxy_labels`): the oracle ``o(x) = 1[b(x) != y and g(x) = y]`` (send to the cloud);
  the router's target is ``keep = 1 - o`` (the released code's polarity).
* **Router loss** (:func:`router_loss`): ``BCE(r(x), keep)`` plus the coverage constraint through
  :class:`modules.constraints.Constraint` in ``fixed`` mode: ``lam * relu(c - mean sigma(r(x)))`` for the
  paper's "coverage >= c" (``coverage_direction: ge``, default). The released hinge penalised the mean of the
  *raw logits* above c (``relu(mean(logit) - cov)``); here the hinge is on the mean keep probability, and
  ``coverage_direction: le`` gives the released direction.
* ``schedule: alternating`` (the paper, default): ``router_warmup`` router epochs (b and g fixed), then cycles of
  ``model_epochs`` epochs adapting b and g and ``router_epochs`` router epochs; the adaptation uses ``L_b = mean((2 - r) CE(b))`` and
  ``L_g = mean((1 + r) CE(g))``, r = the router's probability of sending to the cloud (detached).
  ``schedule: joint`` (the released 2023 trainer): the cloud is frozen, one optimizer trains b and the router
  each step with ``mean((1 + keep) CE_ls(b))`` (label smoothing 0.1) + router loss. (The released trainer's
  extra OSP and DiSK terms on b are not included.)
* **Evaluation** (:func:`route`, :func:`hybrid_accuracy`): for each target coverage c the ``ceil(c n)`` inputs
  with the highest keep score stay on the edge (so the budget holds exactly), the rest go to the cloud; the
  baseline ranks inputs by the edge softmax entropy (low entropy kept).

Edge and cloud are any ``nn.Module`` classifiers (the edge's last ``nn.Linear`` is its output layer; its input
is read as the router's features), registry names, or class_path descriptions. Pass trained modules, or give
their weights with ``edge_ckpt`` and ``cloud_ckpt`` (checkpoints with the weights under ``net.``, loaded
weights-only at fit start). In this project a recipe may also chain from the cloud's run (``restore_structure``
maps its ``net.*`` weights onto ``cloud.*`` and loads ``edge_ckpt`` at the same moment).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import lightning.pytorch as pl
from modules.constraints import Constraint, ConstraintError, check_fraction
from modules.disk import check_same_classes, load_net_weights
from modules.net_args import store_net_hparams
from nets.registry import resolve_net
from nets.router import FeatureTap, HybridRouter

__all__ = ["HybridModel", "count_macs", "entropy", "hybrid_accuracy", "hybrid_macs", "proxy_labels", "route", "router_loss"]


def proxy_labels(edge_logits: Tensor, cloud_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``(oracle, keep)`` as floats: oracle = 1 where the edge is wrong and the cloud right; keep = 1 - oracle."""
    oracle = ((edge_logits.argmax(1) != targets) & (cloud_logits.argmax(1) == targets)).float()
    return oracle, 1.0 - oracle


def entropy(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` per row (nats)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


def route(keep_score: Tensor, coverage: float) -> Tensor:
    """Boolean mask of the inputs kept on the edge: the ``ceil(coverage n)`` highest keep scores (ties broken
    by position), so the kept share is the smallest share >= ``coverage``."""
    coverage = check_fraction("coverage", coverage, "the share of inputs kept on the edge")
    n = keep_score.numel()
    k = min(n, math.ceil(coverage * n - 1e-9))
    keep = torch.zeros(n, dtype=torch.bool, device=keep_score.device)
    keep[torch.argsort(keep_score.flatten(), descending=True, stable=True)[:k]] = True
    return keep


def hybrid_accuracy(edge_correct: Tensor, cloud_correct: Tensor, keep: Tensor) -> float:
    """``P(keep, edge right) + P(send, cloud right)``."""
    return float(torch.where(keep, edge_correct, cloud_correct).float().mean())


def hybrid_macs(edge_macs: float, cloud_macs: float, coverage: float) -> float:
    """Average MACs per input: ``edge + (1 - coverage) * cloud`` (the edge always runs)."""
    return float(edge_macs) + (1.0 - float(coverage)) * float(cloud_macs)


@torch.no_grad()
def count_macs(net: nn.Module, example: Tensor) -> float:
    """Multiply-accumulates of one forward pass per input (torch's flop counter, 2 flops per MAC, every op)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = net.training
    net.eval()
    try:
        x = example.to(next(net.parameters()).device) if any(True for _ in net.parameters()) else example
        with FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        net.train(was_training)
    return counter.get_total_flops() / 2 / max(1, int(example.shape[0]))


def router_loss(router_logits: Tensor, keep: Tensor, coverage: Constraint) -> tuple[Tensor, Tensor]:
    """``(BCE(r, keep), coverage.penalty(mean sigma(r)))``."""
    bce = F.binary_cross_entropy_with_logits(router_logits.float(), keep.float())
    return bce, coverage.penalty(torch.sigmoid(router_logits.float()).mean())


class HybridModel(pl.LightningModule):
    """Edge model + cloud model + router (see the module doc).

    Args:
        edge, cloud: the two classifiers: ``nn.Module`` instances, ``{class_path, init_args}`` descriptions or
            registry names (built with ``edge_kwargs``/``cloud_kwargs``). Modules are not stored in the
            hyperparameters: give them again to ``load_from_checkpoint(path, edge=..., cloud=...)``.
        num_classes, input_shape: linked from the datamodule.
        edge_ckpt, cloud_ckpt: ImageClassifier checkpoints of the two models (``cloud_ckpt`` unless the cloud
            comes through ``init_from``).
        cloud_num_classes: the cloud's class count if it differs (it must not: a clear error).
        coverage: the budget c in (0, 1]: share of inputs to keep on the edge.
        coverage_weight: lam of the fixed-mode coverage hinge.
        coverage_direction: ``ge`` (coverage >= c, the paper) or ``le`` (the released hinge's direction).
        schedule: ``alternating`` (paper) or ``joint`` (released trainer, cloud frozen).
        router_warmup, router_epochs, model_epochs: the alternation (warm-up router epochs, then cycles of
            model epochs and router epochs).
        train_cloud: adapt the cloud in the alternating scheme's model epochs (the paper does).
        eval_coverages: coverages at which accuracy and MACs are logged.
        router_topk, router_hidden: the router's top-k statistics and head widths.
        optimizer: factory for the edge/cloud models; router_optimizer: for the router.
    """

    def __init__(
        self,
        edge: str | nn.Module | None = "torchvision.mobilenet_v3_small",
        cloud: str | nn.Module | None = "torchvision.resnet50",
        num_classes: int = 1000,
        input_shape: tuple[int, ...] = (3, 224, 224),
        edge_kwargs: dict[str, Any] | None = None,
        cloud_kwargs: dict[str, Any] | None = None,
        edge_ckpt: str | None = None,
        cloud_ckpt: str | None = None,
        cloud_num_classes: int | None = None,
        coverage: float = 0.7,
        coverage_weight: float = 1.0,
        coverage_direction: Literal["ge", "le"] = "ge",
        schedule: Literal["alternating", "joint"] = "alternating",
        router_warmup: int = 1,
        router_epochs: int = 1,
        model_epochs: int = 1,
        train_cloud: bool = True,
        label_smoothing: float = 0.1,
        eval_coverages: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        router_topk: int = 10,
        router_hidden: tuple[int, int] = (1000, 64),
        optimizer: OptimizerCallable | None = None,
        router_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["edge", "cloud", "optimizer", "router_optimizer", "lr_scheduler"])
        store_net_hparams(self, {"edge": edge, "cloud": cloud})
        check_fraction("coverage", coverage, "the share of inputs kept on the edge")
        for c in eval_coverages:
            check_fraction("eval_coverages", c, "a share of inputs kept on the edge")
        if schedule not in ("alternating", "joint"):
            raise ConstraintError(f"schedule must be 'alternating' or 'joint', got {schedule!r}.")
        in_ch = input_shape[0]
        self.edge = resolve_net(edge, arg="edge", num_classes=num_classes, in_channels=in_ch, kwargs=edge_kwargs,
                                owner="HybridModel")
        c_classes = num_classes if cloud_num_classes is None else int(cloud_num_classes)
        self.cloud = resolve_net(cloud, arg="cloud", num_classes=c_classes, in_channels=in_ch, kwargs=cloud_kwargs,
                                 owner="HybridModel")
        check_same_classes(self.cloud, self.edge, ("cloud", "edge"))
        self.edge_tap = FeatureTap(self.edge)
        self.router = HybridRouter(self.edge_tap.dim, router_topk, tuple(router_hidden), num_classes)
        self.coverage = Constraint("coverage", mode="fixed", init=coverage_weight, bound=coverage,
                                   direction=coverage_direction)
        self.models_loaded = isinstance(edge, nn.Module) and isinstance(cloud, nn.Module)  # passed in: trained
        self.optimizer_factory = optimizer
        self.router_optimizer_factory = router_optimizer
        self.scheduler_factory = lr_scheduler
        self.automatic_optimization = False
        self.example_input_array = torch.zeros(1, *input_shape)
        self._val: list[tuple[Tensor, ...]] = []
        self.edge_macs: float | None = None
        self.cloud_macs: float | None = None

    # ------------------------------------------------------------------------------------------- weights
    def restore_structure(self, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Chaining hook (this project's entry point): the checkpoint holds the cloud's weights under ``net.``;
        the edge comes from ``edge_ckpt``."""
        state = checkpoint["state_dict"]
        if any(k.startswith("router.") for k in state):
            self.models_loaded = True
            return
        load_net_weights(self.cloud, checkpoint, "cloud", "the chained cloud checkpoint")
        if not self.hparams.edge_ckpt:
            raise ConstraintError(
                "HybridModel: the chained checkpoint gives the cloud model, but edge_ckpt is not set: set edge_ckpt "
                "to the edge model's checkpoint."
            )
        load_net_weights(self.edge, self.hparams.edge_ckpt, "edge", "edge_ckpt")
        checkpoint["state_dict"] = self.state_dict()
        self.models_loaded = True

    def setup(self, stage: str) -> None:
        h = self.hparams
        if stage == "fit" and not self.models_loaded:
            if h.cloud_ckpt:
                load_net_weights(self.cloud, h.cloud_ckpt, "cloud", "cloud_ckpt")
                if not h.edge_ckpt:
                    raise ConstraintError("HybridModel: cloud_ckpt is set but edge_ckpt is not: the hybrid needs "
                                          "both models; set edge_ckpt.")
                load_net_weights(self.edge, h.edge_ckpt, "edge", "edge_ckpt")
                self.models_loaded = True
            else:
                warnings.warn("HybridModel: no edge/cloud weights were loaded (cloud_ckpt/edge_ckpt are not set and "
                              "the nets were given as names): both models are as built. Pass trained modules or "
                              "set edge_ckpt and cloud_ckpt.", stacklevel=1)
        if self.edge_macs is None:
            x = self.example_input_array
            self.edge_macs = count_macs(self.edge, x)
            self.cloud_macs = count_macs(self.cloud, x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(edge logits, router keep logit)``: the edge-side computation."""
        logits = self.edge(x)
        return logits, self.router(logits, self.edge_tap.features)

    # ------------------------------------------------------------------------------------------- training
    def phase(self, epoch: int) -> str:
        """``router`` or ``models`` (alternating), or ``joint``."""
        h = self.hparams
        if h.schedule == "joint":
            return "joint"
        if epoch < h.router_warmup:
            return "router"
        cycle = h.router_epochs + h.model_epochs
        return "models" if (epoch - h.router_warmup) % cycle < h.model_epochs else "router"

    def losses(self, x: Tensor, y: Tensor, phase: str) -> dict[str, Tensor]:
        h = self.hparams
        out: dict[str, Tensor] = {}
        if phase == "router":
            with torch.no_grad():
                b, g = self.edge(x), self.cloud(x)
                feats = self.edge_tap.features
            r = self.router(b.detach(), feats.detach())
            _, keep = proxy_labels(b, g, y)
            out["bce"], out["coverage"] = router_loss(r, keep, self.coverage)
            out["loss"] = out["bce"] + out["coverage"]
        elif phase == "models":
            b = self.edge(x)
            feats = self.edge_tap.features
            with torch.no_grad():
                send = 1.0 - torch.sigmoid(self.router(b.detach(), feats.detach()))
            out["edge"] = ((2.0 - send) * F.cross_entropy(b, y, reduction="none")).mean()
            loss = out["edge"]
            if h.train_cloud:
                g = self.cloud(x)
                out["cloud"] = ((1.0 + send) * F.cross_entropy(g, y, reduction="none")).mean()
                loss = loss + out["cloud"]
            out["loss"] = loss
        else:  # joint: cloud frozen, edge + router together
            with torch.no_grad():
                g = self.cloud(x)
            b = self.edge(x)
            r = self.router(b, self.edge_tap.features)
            _, keep = proxy_labels(b.detach(), g, y)
            ce = F.cross_entropy(b, y, reduction="none", label_smoothing=h.label_smoothing)
            out["edge"] = ((1.0 + keep) * ce).mean()
            out["bce"], out["coverage"] = router_loss(r, keep, self.coverage)
            out["loss"] = out["edge"] + out["bce"] + out["coverage"]
        return out

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        phase = self.phase(self.current_epoch)
        self.cloud.train(phase == "models" and self.hparams.train_cloud)
        self.edge.train(phase != "router")
        self.router.train(phase != "models")
        out = self.losses(x, y, phase)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        opt = opts[0] if phase == "models" or (phase == "joint") else opts[1]
        opt.zero_grad()
        self.manual_backward(out["loss"])
        opt.step()
        for k, v in out.items():
            self.log(f"train/{k}" if k != "loss" else f"train/loss_{phase}", v.detach(), on_step=False,
                     on_epoch=True, batch_size=x.shape[0])
        if phase != "models":
            self.log_dict(self.coverage.log_dict(), on_step=False, on_epoch=True, batch_size=x.shape[0])
        return out["loss"].detach()

    def on_train_epoch_end(self) -> None:
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()

    # ------------------------------------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def on_test_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        b, r = self(x)
        g = self.cloud(x)
        self._val.append((b.argmax(1) == y, g.argmax(1) == y, r.float(), -entropy(b)))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def evaluate(self, edge_correct: Tensor, cloud_correct: Tensor, keep_score: Tensor,
                 entropy_score: Tensor) -> dict[str, float]:
        """Accuracy and MACs at each ``eval_coverages`` for the router and the entropy baseline."""
        out = {"edge_acc": float(edge_correct.float().mean()), "cloud_acc": float(cloud_correct.float().mean()),
               "oracle_rate": float((~edge_correct & cloud_correct).float().mean())}
        for c in self.hparams.eval_coverages:
            key = f"{c * 100:g}"
            keep = route(keep_score, c)
            out[f"hybrid_acc@cov{key}"] = hybrid_accuracy(edge_correct, cloud_correct, keep)
            out[f"entropy_acc@cov{key}"] = hybrid_accuracy(edge_correct, cloud_correct, route(entropy_score, c))
            out[f"coverage@cov{key}"] = float(keep.float().mean())
            if self.edge_macs is not None:
                out[f"macs@cov{key}"] = hybrid_macs(self.edge_macs, self.cloud_macs, float(keep.float().mean()))
        return out

    def _eval_epoch_end(self, stage: str) -> None:
        if not self._val:
            return
        cols = [torch.cat(c) for c in zip(*self._val, strict=True)]
        self._val = []
        if self.trainer.world_size > 1:
            cols = [self.all_gather(c.float()).flatten() for c in cols]  # gloo gathers no bool tensors
            cols = [cols[0] > 0.5, cols[1] > 0.5, cols[2], cols[3]]
        metrics = self.evaluate(*cols)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()})
        key = f"hybrid_acc@cov{self.hparams.coverage * 100:g}"
        self.log(f"{stage}/acc1", metrics[key] if key in metrics else metrics["edge_acc"])

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        """Test logs what validation logs, under ``test/``."""
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        def default(params: Any) -> torch.optim.Optimizer:
            return torch.optim.AdamW(params, lr=5e-4, weight_decay=5e-4)

        h = self.hparams
        if h.schedule == "joint":
            model_params = list(self.edge.parameters()) + list(self.router.parameters())
        else:
            model_params = list(self.edge.parameters()) + (list(self.cloud.parameters()) if h.train_cloud else [])
        models = (self.optimizer_factory or default)(model_params)
        opts = [models, (self.router_optimizer_factory or default)(self.router.parameters())]
        if self.scheduler_factory is None:
            return opts
        return opts, [self.scheduler_factory(models)]
