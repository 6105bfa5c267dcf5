"""Selective classification: OSP (Gangrade, Kag & Saligrama, "Selective Classification via One-Sided
Prediction", AISTATS 2021; docs/selective.md#osp-one-sided-prediction) and the baselines softmax response (Geifman & El-Yaniv 2017),
SelectiveNet (Geifman & El-Yaniv 2019) and DeepGamblers (Liu et al. 2019), in one LightningModule.

**OSP.** One-sided scores ``p_k(x) = softmax(f(x))_k`` (the released code uses a softmax). Per class k, with
``n_k^+`` / ``n_k^-`` the batch counts of class-k / other examples (+0.1, as released):

* coverage term ``L_k = (1/n_k^+) sum_{y=k} -log p_k``; error term ``C_k = (1/n_k^-) sum_{y!=k} -log(1 - p_k)``;
* ``lagrangian: paper`` (default): ``sum_k [L_k + relu(lam_k)(C_k - relu(eps_k)) + mu relu(eps_k)]``, the
  paper's Lagrangian M_mu, minimised over the net and the slacks eps and maximised over lam;
* ``lagrangian: code``: ``sum_k (L_k + C_k) - sum_k relu(lam_k) relu(eps_k) + mu sum_k relu(eps_k)``, the
  released loss (lam does **not** multiply C_k there; the poster's numbers presumably come from it);
* total ``alpha * OSP + (1 - alpha) * CE(auxiliary linear head on the features)``.

lam is a :class:`modules.constraints.Constraint` in ``learned`` mode (per-class, initialised to mu - 0.5, the
gradient reversed so the shared optimizer ascends it); eps is a learnable per-class slack initialised to 0.5.
Both are in the checkpoint. Prediction: class ``argmax_k p_k``, abstain when ``max_k p_k < t``; the score is
``max_k p_k``.

**Softmax response**: CE training, score = max softmax. **SelectiveNet**: heads f (prediction), g (selection,
sigmoid) and h (auxiliary) on the features; loss ``alpha [r(f, g) + lam_c max(0, c - phi(g))^2] + (1 - alpha)
CE(h)`` with ``r = mean(CE(f) g) / phi``, ``phi = mean g``, score = g. **DeepGamblers**: K+1 outputs, loss
``-log(p_y + p_{K+1} / o)`` after ``gambler_pretrain`` CE epochs, score = ``1 - p_{K+1}``.

Validation and test log the selective metrics (``modules.selective_metrics``) under ``val/`` and ``test/``:
coverage at target errors 2/1/0.5%, error at coverage 100/95/90%, AURC (and, at validation, a risk-coverage plot
to loggers that take images).

The backbone is any ``nn.Module`` classifier whose last ``nn.Linear`` is its output layer (its input is read as
the features), a registry name, or a class_path description; DeepGamblers needs ``num_classes + 1`` outputs.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import lightning.pytorch as pl
from modules.constraints import Constraint, ConstraintError, check_fraction
from modules.selective_metrics import risk_coverage_curve, selective_summary
from modules.net_args import store_net_hparams
from modules.step_logging import log_train_value
from nets.registry import resolve_net
from nets.router import FeatureTap, last_linear

Method = Literal["osp", "softmax_response", "selectivenet", "deepgamblers"]
METHODS = ("osp", "softmax_response", "selectivenet", "deepgamblers")

__all__ = ["SelectiveClassifier", "deepgamblers_loss", "osp_terms", "osp_loss", "selectivenet_loss"]


def osp_terms(logits: Tensor, targets: Tensor, tol: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Per-class ``(L_k, C_k)`` of OSP on softmax one-sided scores (counts + 0.1 as released)."""
    p = F.softmax(logits.float(), dim=1)
    y = F.one_hot(targets, p.shape[1]).float()
    n_pos = y.sum(0) + 0.1
    n_neg = (1 - y).sum(0) + 0.1
    cov = (-y * torch.log(p + tol)).sum(0) / n_pos
    err = (-(1 - y) * torch.log(1 - p + tol)).sum(0) / n_neg
    return cov, err


def osp_loss(logits: Tensor, targets: Tensor, multiplier: Constraint, eps: Tensor, mu: float,
             lagrangian: Literal["paper", "code"] = "paper") -> Tensor:
    """The OSP Lagrangian (see the module doc); ``multiplier`` is the per-class learned Constraint."""
    cov, err = osp_terms(logits, targets)
    slack = F.relu(eps)
    if lagrangian == "paper":
        return cov.sum() + multiplier.penalty(err, bound=slack) + mu * slack.sum()
    # released form: sum(L + C) - sum relu(lam) relu(eps) + mu sum relu(eps) = penalty(0, bound=relu(eps))
    return (cov + err).sum() + multiplier.penalty(torch.zeros_like(err), bound=slack) + mu * slack.sum()


def selectivenet_loss(logits: Tensor, select: Tensor, aux_logits: Tensor, targets: Tensor, coverage: float,
                      lam: float = 32.0, alpha: float = 0.5) -> Tensor:
    """SelectiveNet: ``alpha [mean(CE g)/mean(g) + lam relu(c - mean g)^2] + (1 - alpha) CE(aux)``."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    phi = select.mean()
    risk = (ce * select).mean() / phi.clamp_min(1e-6)
    return alpha * (risk + lam * F.relu(coverage - phi) ** 2) + (1 - alpha) * F.cross_entropy(aux_logits, targets)


def deepgamblers_loss(logits: Tensor, targets: Tensor, reward: float) -> Tensor:
    """DeepGamblers: ``-log(p_y + p_abstain / o)`` on K+1 outputs (the last is abstention)."""
    p = F.softmax(logits.float(), dim=1)
    py = p.gather(1, targets.view(-1, 1)).squeeze(1)
    return -torch.log(py + p[:, -1] / reward + 1e-12).mean()


class SelectiveClassifier(pl.LightningModule):
    """A classifier that may abstain, trained by ``method`` (see the module doc).

    Args:
        net: the backbone: an ``nn.Module`` (``num_classes`` outputs, ``num_classes + 1`` for DeepGamblers), a
            ``{class_path, init_args}`` description or a registry name (built with ``net_kwargs``). A module is not
            stored in the hyperparameters: give it again to ``load_from_checkpoint(path, net=...)``.
        net_kwargs, num_classes, input_shape: the registry net's arguments; class count and input shape (linked
            from the data).
        method: ``osp`` | ``softmax_response`` | ``selectivenet`` | ``deepgamblers``.
        alpha: OSP's weight of the one-sided loss against the auxiliary CE (0.9), or SelectiveNet's (0.5).
        mu: OSP's mu (the runner uses 0.49 and 1.67).
        lagrangian: ``paper`` or ``code`` (OSP).
        multiplier_lr: OSP's multiplier learning rate (its own parameter group, no weight decay; the release
            steps the multipliers with a separate AdamW at 1e-4 against 1e-2 for the net); ``None``: the net's.
        coverage: SelectiveNet's target coverage, in (0, 1].
        selectivenet_lambda: SelectiveNet's penalty weight (32).
        gambler_reward: DeepGamblers' o (> 1, at most the class count).
        gambler_pretrain: DeepGamblers' CE-only epochs.
        target_errors, target_coverages: the operating points logged at validation.
        plot_every: log the risk-coverage plot every this many validation epochs (and at the last).
    """

    def __init__(
        self,
        net: str | nn.Module | None = "resnet32",
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (3, 32, 32),
        net_kwargs: dict[str, Any] | None = None,
        method: Method = "osp",
        alpha: float = 0.9,
        mu: float = 1.67,
        lagrangian: Literal["paper", "code"] = "paper",
        multiplier_lr: float | None = None,
        coverage: float = 0.8,
        selectivenet_lambda: float = 32.0,
        gambler_reward: float = 2.2,
        gambler_pretrain: int = 0,
        target_errors: tuple[float, ...] = (0.02, 0.01, 0.005),
        target_coverages: tuple[float, ...] = (1.0, 0.95, 0.9),
        plot_every: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        store_net_hparams(self, {"net": net})
        if method not in METHODS:
            raise ConstraintError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
        if lagrangian not in ("paper", "code"):
            raise ConstraintError(f"lagrangian must be 'paper' or 'code', got {lagrangian!r}.")
        check_fraction("coverage", coverage, "SelectiveNet's target coverage")
        for c in target_coverages:
            check_fraction("target_coverages", c, "a coverage to report the error at")
        for e in target_errors:
            check_fraction("target_errors", e, "a selective error to report the coverage at")
        if multiplier_lr is not None and not multiplier_lr > 0:
            raise ConstraintError(f"multiplier_lr must be > 0 (or null for the net's learning rate), got "
                                  f"{multiplier_lr}.")
        if not 0.0 <= alpha <= 1.0:
            raise ConstraintError(f"alpha must be in [0, 1], got {alpha}.")
        if method == "deepgamblers" and not 1.0 < gambler_reward <= num_classes:
            raise ConstraintError(f"gambler_reward must be in (1, num_classes={num_classes}], got {gambler_reward}.")
        outputs = num_classes + 1 if method == "deepgamblers" else num_classes
        self.net = resolve_net(net, arg="net", num_classes=outputs, in_channels=input_shape[0], kwargs=net_kwargs,
                               owner="SelectiveClassifier")
        have = last_linear(self.net).out_features
        if have != outputs:
            raise ConstraintError(
                f"SelectiveClassifier(net=...): the net's last nn.Linear has {have} outputs but method {method!r} "
                f"with num_classes={num_classes} needs {outputs}"
                f"{' (one more for abstention)' if method == 'deepgamblers' else ''}; build the net with that many.")
        self.tap = FeatureTap(self.net)
        d = self.tap.dim
        if method == "osp":
            self.aux_head = nn.Linear(d, num_classes)
            self.eps = nn.Parameter(torch.full((num_classes,), 0.5))
            self.multiplier = Constraint("osp_error", mode="learned", shape=(num_classes,), init=mu - 0.5,
                                         hinge=False)
        elif method == "selectivenet":
            self.aux_head = nn.Linear(d, num_classes)
            self.select_head = nn.Sequential(nn.Linear(d, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                             nn.Linear(512, 1))
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, *input_shape)
        self._eval: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (``num_classes``; DeepGamblers' abstention output dropped)."""
        logits = self.net(x)
        return logits[:, : self.hparams.num_classes]

    def predict_with_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(predicted class, selection score)``: abstain where the score is below the chosen threshold."""
        out = self.net(x)
        k = self.hparams.num_classes
        if self.hparams.method == "selectivenet":
            score = torch.sigmoid(self.select_head(self.tap.features)).squeeze(1)
        elif self.hparams.method == "deepgamblers":
            score = 1.0 - F.softmax(out.float(), dim=1)[:, -1]
        else:
            score = F.softmax(out.float(), dim=1).max(1).values
        return out[:, :k].argmax(1), score

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.hparams
        out = self.net(x)
        if h.method == "osp":
            aux = self.aux_head(self.tap.features)
            return h.alpha * osp_loss(out, y, self.multiplier, self.eps, h.mu, h.lagrangian) + \
                (1 - h.alpha) * F.cross_entropy(aux, y)
        if h.method == "selectivenet":
            feats = self.tap.features
            g = torch.sigmoid(self.select_head(feats)).squeeze(1)
            return selectivenet_loss(out, g, self.aux_head(feats), y, h.coverage, h.selectivenet_lambda, h.alpha)
        if h.method == "deepgamblers" and self.current_epoch >= h.gambler_pretrain:
            return deepgamblers_loss(out, y, h.gambler_reward)
        return F.cross_entropy(out[:, : h.num_classes], y)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        loss = self.loss(x, y)
        log_train_value(self, "train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        if self.hparams.method == "osp":
            self.log_dict(self.multiplier.log_dict(), on_step=False, on_epoch=True, batch_size=x.shape[0])
            self.log("constraints/osp_error/eps", F.relu(self.eps.detach()).mean(), on_step=False, on_epoch=True,
                     batch_size=x.shape[0])
        return loss

    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y = batch[0], batch[1]
        pred, score = self.predict_with_score(x)
        self.log(f"{stage}/acc1", (pred == y).float().mean(), on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self._eval[stage].append((score.detach(), (pred == y).detach()))

    def _eval_epoch_end(self, stage: str) -> tuple[Tensor, Tensor] | None:
        """Logs the selective metrics of the epoch under ``stage/`` (gathered over ranks); returns the data."""
        rows, self._eval[stage] = self._eval[stage], []
        if not rows:
            return None
        score = torch.cat([s for s, _ in rows])
        correct = torch.cat([c for _, c in rows])
        if self.trainer.world_size > 1:
            score = self.all_gather(score).flatten()
            correct = self.all_gather(correct.float()).flatten() > 0.5  # gloo gathers no bool tensors
        summary = selective_summary(score, correct, tuple(self.hparams.target_errors),
                                    tuple(self.hparams.target_coverages))
        self.log_dict({f"{stage}/{k}": v for k, v in summary.items()}, sync_dist=False)
        return score, correct

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._eval["val"] = []

    def on_test_epoch_start(self) -> None:
        self._eval["test"] = []

    def on_validation_epoch_end(self) -> None:
        data = self._eval_epoch_end("val")
        if data is None:
            return
        last = self.trainer.max_epochs is not None and self.current_epoch + 1 >= self.trainer.max_epochs
        if not self.trainer.sanity_checking and (last or (self.current_epoch + 1) % self.hparams.plot_every == 0):
            self._plot(*data)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _plot(self, score: Tensor, correct: Tensor) -> None:
        loggers = [lg for lg in self.loggers if hasattr(lg, "log_image")]
        if not loggers or not self.trainer.is_global_zero:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cov, risk, _ = risk_coverage_curve(score, correct)
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(cov.numpy() * 100, risk.numpy() * 100)
        ax.set(xlabel="coverage (%)", ylabel="selective error (%)", title=f"{self.hparams.method}")
        fig.tight_layout()
        for logger in loggers:
            logger.log_image(key="val/risk_coverage", images=[fig], step=self.global_step)
        plt.close(fig)

    def configure_optimizers(self) -> Any:
        def default(params: Any) -> torch.optim.Optimizer:
            return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

        # the OSP slacks and multiplier take no weight decay; the multiplier may step at its own rate
        named = dict(self.named_parameters())
        groups: list[dict[str, Any]] = [{"params": [p for n, p in named.items() if n not in ("eps", "multiplier.lam")]}]
        if "eps" in named:
            groups.append({"params": [named["eps"]], "weight_decay": 0.0})
        if "multiplier.lam" in named:
            lam_group: dict[str, Any] = {"params": [named["multiplier.lam"]], "weight_decay": 0.0}
            if self.hparams.multiplier_lr is not None:
                lam_group["lr"] = self.hparams.multiplier_lr
            groups.append(lam_group)
        optimizer = (self.optimizer_factory or default)(groups)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
