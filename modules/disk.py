"""DiSK: selective distillation with a scaffolding guide (Kag, Acar, Gangrade & Saligrama, "Scaffolding a Student
to Instill Knowledge", ICLR 2023; docs/disk.md), with the CE and standard-KD baselines on the same
student.

Equations (docs/disk.md#loss-as-implemented, the released code's form; ``s``, ``t`` student and teacher logits, ``y`` labels, ``g``
the guide's output in [0, 1], K = ``topk``):

* top-K mask ``m_ic = 1`` if c is among the teacher's top-K classes or c = y_i (:func:`topk_mask`);
* masked teacher (not renormalised): ``t~_ic = m_ic * softmax_c(m_ic t_ic / tau_t + (1 - m_ic) min_c' t_ic')``
  (:func:`masked_teacher`);
* scaffolded student (not a distribution): ``z_ic = softmax(s_i / tau_s)_c + g_i m_ic``;
* ``L_DiSK = lambda_nll tau_s tau_t (1/N) sum_i sum_c -t~_ic log z_ic`` (:func:`disk_distill_loss`);
* ``L_aux = lambda_aux CE(s, y)``;
* hardness ``b_i = min(CE(s_i, argmax_c t_ic), max_ce)``; the budget value
  ``B = (1/n_err) sum_i g_i b_i`` with n_err the student's errors in the batch (:func:`budget_value`); the
  penalty ``P = lambda(e) relu(B - delta(e)) + lambda_nll mean_i log(1 + K g_i)`` (:func:`budget_penalty`),
  its multiplier and bound from :class:`modules.constraints.Constraint` in ``scheduled`` mode: lambda a cosine
  from 1 to 5 with period 50 epochs, delta a cosine from 0.6 to 0.4 with period 20 whose maximum shrinks x0.9
  every 20 epochs (CIFAR ``runner.sh``; delta(20) = 0.54). ``budget_form: poster`` uses the poster's
  ``B = -(1/N) sum_i g_i log s_{y_i}`` instead.
* The schedules' "epoch" is the released code's counter (:meth:`DiSK.schedule_epoch`): the warm-up epochs count
  0 .. guide_warmup - 1, then one count per **outer** epoch of ``student_epochs + guide_epochs`` Lightning
  epochs, numbered from 0 (``DiSK.py``'s ``main_train_eval_loop`` passes its outer-loop ``epoch``). Periods 50 and
  20 are outer epochs (300 and 120 Lightning epochs in the CIFAR schedule), not Lightning epochs.
* ``budget_mode: dual_ascent`` (an option, not the published setting) treats the budget as the constraint
  ``B <= delta(e)``: the Lagrangian term ``lambda (B - delta(e))`` with ``lambda <- max(0, lambda + lr (B -
  delta(e)))`` after every guide batch (the shared engine's projected dual ascent), starting from
  ``lambda_min``; ``lr = dual_lr / batches per epoch``, ``dual_lr`` being the step per epoch of violation (the
  released code's own ``dual_update_step`` adds ``rho * mean relu(B - delta)`` once per epoch, ``--rho 2``).
  The scheduled lambda is a penalty weight: nothing makes B reach delta (on the glyph study B stays several times
  above delta, results/hardness_glyphs_c.md).

Training alternates by epoch (manual optimisation, two optimizers): ``guide_warmup`` guide epochs, then cycles of
``student_epochs`` student epochs (guide frozen, P not used) and ``guide_epochs`` guide epochs (student frozen,
loss ``L_DiSK + P``). The teacher is always frozen (eval mode). The guide is discarded at test time.

``method: kd`` trains the student with ``alpha tau^2 KL(softmax(t/tau) || softmax(s/tau)) + (1 - alpha) CE(s, y)``
(Hinton et al. 2015); ``method: ce`` with CE only (no teacher needed).

Student and teacher are any ``nn.Module`` classifiers (their last ``nn.Linear`` is the output layer, whose
input is read as the features), registry names, or class_path descriptions. Pass a trained teacher module, or
give its weights with ``teacher_ckpt: <path>`` (a Lightning checkpoint whose ``state_dict`` holds them under
``net.``, as an ImageClassifier's does; loaded weights-only at fit start; a missing file is an error). In this
project a recipe may also chain from the teacher's run (``restore_structure`` maps its ``net.*`` weights onto
``teacher.*``). Without teacher weights a warning is printed.

Manual optimisation: gradient accumulation is this module's ``accumulate_grad_batches`` (Lightning's Trainer
argument does not apply to manual optimisation): each optimizer step uses the summed gradients of that many
batches, every loss divided by it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

import lightning.pytorch as pl
from modules.constraints import Constraint, ConstraintError, CosineSchedule, check_fraction
from modules.net_args import store_net_hparams
from nets.registry import resolve_net
from nets.router import DiskGuide, FeatureTap, last_linear

__all__ = ["DiSK", "TeacherCheckpointError", "budget_penalty", "budget_value", "disk_distill_loss", "kd_loss",
           "load_net_weights", "masked_teacher", "topk_mask"]


class TeacherCheckpointError(FileNotFoundError):
    """A teacher/student/edge/cloud checkpoint is missing or does not fit (one paragraph naming the argument)."""

    user_facing = True

    def __str__(self) -> str:
        return self.args[0]


# ------------------------------------------------------------------------------------------------ equations
def topk_mask(teacher_logits: Tensor, targets: Tensor, k: int) -> Tensor:
    """``m_ic``: 1 for the teacher's top-``k`` classes of each row and for the label, 0 elsewhere (float)."""
    k = min(int(k), teacher_logits.shape[1])
    m = torch.zeros_like(teacher_logits, dtype=torch.float32)
    m.scatter_(1, teacher_logits.topk(k, dim=1).indices, 1.0)
    m.scatter_(1, targets.view(-1, 1), 1.0)
    return m


def masked_teacher(teacher_logits: Tensor, mask: Tensor, tau_t: float) -> Tensor:
    """``t~ = m * softmax(m t / tau_t + (1 - m) min_c t)``: masked-out logits replaced by the row's minimum raw
    logit before the softmax, then zeroed; **not** renormalised (as released)."""
    t = teacher_logits.float()
    row_min = t.min(dim=1, keepdim=True).values
    return mask * F.softmax(mask * t / tau_t + (1.0 - mask) * row_min, dim=1)


def disk_distill_loss(student_logits: Tensor, teacher_logits: Tensor, guide: Tensor, mask: Tensor,
                      tau_s: float = 3.5, tau_t: float = 4.0, lambda_nll: float = 0.9) -> Tensor:
    """``L_DiSK = lambda_nll tau_s tau_t mean_i sum_c -t~_ic log(softmax(s_i/tau_s)_c + g_i m_ic)``."""
    t_tilde = masked_teacher(teacher_logits, mask, tau_t)
    z = F.softmax(student_logits.float() / tau_s, dim=1) + guide.view(-1, 1) * mask
    return lambda_nll * tau_s * tau_t * (-(t_tilde * torch.log(z.clamp_min(1e-12))).sum(1)).mean()


def budget_value(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, guide: Tensor,
                 max_ce: float = 5.0, form: Literal["code", "poster"] = "code") -> Tensor:
    """The guide's budget use B.

    ``code``: ``(1/n_err) sum_i g_i min(CE(s_i, argmax t_i), max_ce)``, n_err = number of student errors
    (``argmax s != y``; at least 1). ``poster``: ``-(1/N) sum_i g_i log softmax(s_i)_{y_i}``.
    """
    s = student_logits.float()
    if form == "poster":
        return -(guide * F.log_softmax(s, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)).mean()
    hard = F.cross_entropy(s, teacher_logits.argmax(1), reduction="none").clamp(max=max_ce)
    n_err = (s.argmax(1) != targets).sum().clamp_min(1).float()
    return (guide * hard).sum() / n_err


def budget_penalty(constraint: Constraint, value: Tensor, guide: Tensor, k: int, lambda_nll: float) -> Tensor:
    """``P = constraint.penalty(B)`` (``lambda(e) relu(B - delta(e))`` in scheduled mode) ``+ lambda_nll mean
    log(1 + K g)``."""
    return constraint.penalty(value) + lambda_nll * torch.log1p(k * guide.float()).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, tau: float = 4.0,
            alpha: float = 0.9) -> Tensor:
    """Standard KD: ``alpha tau^2 KL(softmax(t/tau) || softmax(s/tau)) + (1 - alpha) CE(s, y)``."""
    kl = F.kl_div(F.log_softmax(student_logits.float() / tau, 1), F.log_softmax(teacher_logits.float() / tau, 1),
                  reduction="batchmean", log_target=True)
    return alpha * tau * tau * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


# ------------------------------------------------------------------------------------------------ checkpoints
def _net_state(checkpoint: dict[str, Any], prefix: str | tuple[str, ...] = "net.") -> dict[str, Tensor]:
    """The sub-state under the first of ``prefix`` that the checkpoint has (else the whole state)."""
    state = checkpoint.get("state_dict", checkpoint)
    for p in (prefix,) if isinstance(prefix, str) else prefix:
        sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        if sub:
            return sub
    return dict(state)


def load_net_weights(net: nn.Module, source: str | Path | dict[str, Any], role: str, key: str,
                     prefix: str | tuple[str, ...] = "net.") -> None:
    """Copy the ``net.*`` weights of an ImageClassifier checkpoint (a path or a loaded dict) into ``net``; with a
    tuple ``prefix``, the first prefix the checkpoint has is used.

    Files are read with ``torch.load(..., weights_only=True)``. Raises :class:`TeacherCheckpointError` naming
    ``key`` (the argument) when the file is missing, holds more than tensors and plain containers, or the weights
    belong to another architecture / class count.
    """
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise TeacherCheckpointError(
                f"{key}: the {role} checkpoint {str(path)!r} does not exist. Train the {role} first and set {key} "
                f"to its checkpoint file (a Lightning .ckpt, or a file saved with torch.save holding a state_dict)."
            )
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - pickle errors of many kinds
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TeacherCheckpointError(
                f"{key}: the {role} checkpoint {str(path)!r} cannot be loaded weights-only (it holds objects other "
                f"than tensors and plain containers: {first[:300]}). Save only the weights, e.g. "
                f"torch.save({{'state_dict': model.state_dict()}}, path), and set {key} to that file."
            ) from None
    state = _net_state(source, prefix)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " | ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())[:400]
        raise TeacherCheckpointError(
            f"{key}: the {role} checkpoint does not fit the {role} net given (another architecture or class "
            f"count). Use the checkpoint of the run that trained this {role} net. Details: {detail}"
        ) from None


def check_same_classes(a: nn.Module, b: nn.Module, names: tuple[str, str]) -> None:
    """Teacher and student (or edge and cloud) must predict the same number of classes."""
    na, nb = last_linear(a).out_features, last_linear(b).out_features
    if na != nb:
        raise ConstraintError(
            f"{names[0]} predicts {na} classes but {names[1]} predicts {nb}: both must have the dataset's class "
            f"count. Build both nets for the same number of classes (for registry names: {names[0]}_kwargs/"
            f"{names[1]}_kwargs and num_classes)."
        )


# ------------------------------------------------------------------------------------------------ module
class DiSK(pl.LightningModule):
    """Student distilled from a frozen teacher with DiSK's guide (``method: disk``), standard KD or CE.

    Args:
        student, teacher: the nets: ``nn.Module`` classifiers, ``{class_path, init_args}`` descriptions or registry
            names (built with ``student_kwargs``/``teacher_kwargs``). Modules are not stored in the
            hyperparameters: give them again to ``load_from_checkpoint(path, student=..., teacher=...)``.
        num_classes, input_shape: linked from the datamodule.
        method: ``disk`` | ``kd`` | ``ce``.
        teacher_ckpt: a checkpoint with the teacher's weights under ``net.`` (e.g. an ImageClassifier's).
        student_ckpt: a checkpoint of the CE-trained student (an ImageClassifier run, keys ``net.*``, or a
            ``method: ce`` run of this module, keys ``student.*``): the student starts from it at ``fit``, as the
            released CIFAR runner does (``--model_ckpt``, the CE student trained for 200 epochs). ``None``: from
            scratch. A resumed run (``--ckpt_path``) overwrites it with the checkpoint's student.
        teacher_num_classes: the teacher's class count if it differs (it must not: a clear error).
        topk, tau_s, tau_t, lambda_aux, lambda_nll, max_ce: DiSK's loss settings (CIFAR defaults).
        lambda_min, lambda_max, lambda_period: the cosine multiplier schedule of the budget.
        delta_max, delta_min, delta_period, delta_decay, delta_decay_every: the cosine budget schedule.
        budget_form: ``code`` (default) or ``poster`` (see :func:`budget_value`).
        budget_mode: ``scheduled`` (published: lambda follows its cosine) or ``dual_ascent`` (B <= delta enforced
            by projected dual ascent from ``lambda_min``, step ``dual_lr`` per epoch of violation).
        guide_warmup, student_epochs, guide_epochs: the epoch alternation.
        kd_tau, kd_alpha: standard KD's temperature and weight.
        optimizer, guide_optimizer, lr_scheduler: factories (the scheduler applies to the student).
        accumulate_grad_batches: batches whose gradients are summed per optimizer step (losses divided by it); the
            last batches of an epoch step with what they have.
    """

    # training-only parts: the deployed net is the student (`main.py report` leaves these out of its counts)
    not_deployed = ("teacher", "guide")

    def __init__(
        self,
        student: str | nn.Module | None = "resnet10_s",
        teacher: str | nn.Module | None = "resnet10_l",
        num_classes: int = 100,
        input_shape: tuple[int, ...] = (3, 32, 32),
        student_kwargs: dict[str, Any] | None = None,
        teacher_kwargs: dict[str, Any] | None = None,
        method: Literal["disk", "kd", "ce"] = "disk",
        teacher_ckpt: str | None = None,
        student_ckpt: str | None = None,
        teacher_num_classes: int | None = None,
        topk: int = 10,
        tau_s: float = 3.5,
        tau_t: float = 4.0,
        lambda_aux: float = 0.1,
        lambda_nll: float = 0.9,
        max_ce: float = 5.0,
        lambda_min: float = 1.0,
        lambda_max: float = 5.0,
        lambda_period: int = 50,
        delta_max: float = 0.6,
        delta_min: float = 0.4,
        delta_period: int = 20,
        delta_decay: float = 0.9,
        delta_decay_every: int = 20,
        budget_form: Literal["code", "poster"] = "code",
        budget_mode: Literal["scheduled", "dual_ascent"] = "scheduled",
        dual_lr: float = 2.0,
        guide_warmup: int = 5,
        student_epochs: int = 3,
        guide_epochs: int = 3,
        kd_tau: float = 4.0,
        kd_alpha: float = 0.9,
        guide_width: int = 256,
        optimizer: OptimizerCallable | None = None,
        guide_optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher", "optimizer", "guide_optimizer", "lr_scheduler"])
        store_net_hparams(self, {"student": student, "teacher": teacher})
        if isinstance(accumulate_grad_batches, bool) or not isinstance(accumulate_grad_batches, int) \
                or accumulate_grad_batches < 1:
            raise ConstraintError(f"DiSK: accumulate_grad_batches must be an integer >= 1, got "
                                  f"{accumulate_grad_batches!r}.")
        if method not in ("disk", "kd", "ce"):
            raise ConstraintError(f"method must be disk, kd or ce, got {method!r}.")
        check_fraction("delta_max", delta_max, "DiSK's budget on the guide")
        check_fraction("delta_min", delta_min, "DiSK's budget on the guide")
        if delta_min > delta_max:
            raise ConstraintError(f"the DiSK budget needs delta_min <= delta_max, got {delta_min} > {delta_max}.")
        if int(topk) < 1:
            raise ConstraintError(f"topk must be >= 1, got {topk}.")
        in_ch = input_shape[0]
        self.student = resolve_net(student, arg="student", num_classes=num_classes, in_channels=in_ch,
                                   kwargs=student_kwargs, owner="DiSK")
        t_classes = num_classes if teacher_num_classes is None else int(teacher_num_classes)
        self.teacher = resolve_net(teacher, arg="teacher", num_classes=t_classes, in_channels=in_ch,
                                   kwargs=teacher_kwargs, owner="DiSK")
        check_same_classes(self.teacher, self.student, ("teacher", "student"))
        self.teacher.requires_grad_(False)
        self.teacher_tap = FeatureTap(self.teacher)
        self.guide = DiskGuide(self.teacher_tap.dim, num_classes, guide_width) if method == "disk" else None
        if budget_mode not in ("scheduled", "dual_ascent"):
            raise ConstraintError(f"budget_mode must be scheduled or dual_ascent, got {budget_mode!r}.")
        delta = CosineSchedule(delta_max, delta_min, period=delta_period, decay=delta_decay,
                               decay_every=delta_decay_every, decay_start=True)
        if budget_mode == "scheduled":
            self.budget = Constraint("disk_budget", mode="scheduled",
                                     schedule=CosineSchedule(lambda_min, lambda_max, period=lambda_period), bound=delta)
        else:
            self.budget = Constraint("disk_budget", mode="dual_ascent", init=lambda_min, bound=delta, lr=dual_lr)
        self.teacher_loaded = isinstance(teacher, nn.Module)  # a module passed in is taken as trained
        self.optimizer_factory = optimizer
        self.guide_optimizer_factory = guide_optimizer
        self.scheduler_factory = lr_scheduler
        self.automatic_optimization = False
        self.example_input_array = torch.zeros(1, *input_shape)
        # training batches skip torchmetrics' input checks: they read the device (torch.unique) on every step
        self.metrics = nn.ModuleDict({f"{s}_acc": MulticlassAccuracy(num_classes=num_classes, average="micro",
                                                                    validate_args=s != "train")
                                      for s in ("train", "val", "test")})

    # -------------------------------------------------------------------------------------- teacher weights
    def restore_structure(self, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Chaining hook (this project's entry point calls it with an earlier run's checkpoint before a strict
        load): a teacher checkpoint (keys ``net.*``) becomes ``teacher.*`` weights and the rest of this module's
        state is kept. A checkpoint of this module itself (keys ``student.*``) is left untouched."""
        state = checkpoint["state_dict"]
        if any(k.startswith("student.") for k in state):
            self.teacher_loaded = True
            return
        load_net_weights(self.teacher, checkpoint, "teacher", "the chained teacher checkpoint")
        checkpoint["state_dict"] = self.state_dict()
        self.teacher_loaded = True

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of a run that pruned the student (``L1FilterPruning`` with ``target: student``) narrows the
        student to its saved widths before the weights are loaded, so ``DiSK.load_from_checkpoint`` and a Trainer
        without the pruning callback load it; any other checkpoint is left alone (the teacher is never pruned)."""
        state = checkpoint.get("l1_filter_pruning")
        if isinstance(state, dict) and state.get("pruned") and state.get("target") == "student":
            from callbacks.l1_filter_pruning import restore_pruned_widths

            restore_pruned_widths(self, checkpoint)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.student_ckpt:
            load_net_weights(self.student, self.hparams.student_ckpt, "student", "student_ckpt",
                             prefix=("student.", "net."))
        if stage != "fit" or self.hparams.method == "ce":
            return
        if self.hparams.teacher_ckpt:
            load_net_weights(self.teacher, self.hparams.teacher_ckpt, "teacher", "teacher_ckpt")
            self.teacher_loaded = True
        if not self.teacher_loaded:
            warnings.warn("DiSK: no teacher weights were loaded (teacher_ckpt is not set and no checkpoint was "
                          "chained): the teacher is as built. Pass a trained teacher or set teacher_ckpt.",
                          stacklevel=1)

    def schedule_epoch(self, epoch: int) -> int:
        """The budget schedules' epoch for Lightning epoch ``epoch``: ``epoch`` during the guide warm-up, then the
        outer-epoch index ``(epoch - guide_warmup) // (student_epochs + guide_epochs)`` (released code)."""
        h = self.hparams
        if h.method != "disk" or epoch < h.guide_warmup:
            return int(epoch)
        return (int(epoch) - h.guide_warmup) // (h.student_epochs + h.guide_epochs)

    def _advance_budget(self) -> None:
        e = self.schedule_epoch(self.current_epoch)
        if self.hparams.budget_mode == "scheduled":
            self.budget.update(epoch=e)
        else:
            self.budget.set_epoch(e)

    def on_fit_start(self) -> None:
        self._advance_budget()

    def on_train_epoch_start(self) -> None:
        if self.hparams.budget_mode == "dual_ascent":  # dual_lr per epoch, spread over the epoch's batches
            batches = self.trainer.num_training_batches
            batches = int(batches) if isinstance(batches, int | float) and 0 < batches < float("inf") else 1
            self.budget.lr = float(self.hparams.dual_lr) / batches
        self._advance_budget()

    def phase(self, epoch: int) -> str:
        """``student`` or ``guide``: which part trains in ``epoch`` (always ``student`` for kd/ce)."""
        h = self.hparams
        if h.method != "disk":
            return "student"
        if epoch < h.guide_warmup:
            return "guide"
        return "student" if (epoch - h.guide_warmup) % (h.student_epochs + h.guide_epochs) < h.student_epochs \
            else "guide"

    def losses(self, x: Tensor, y: Tensor, phase: str) -> dict[str, Tensor]:
        """All loss terms for one batch (exposed for tests and the glyph study)."""
        h = self.hparams
        self.teacher.eval()
        with torch.no_grad():
            t = self.teacher(x) if h.method != "ce" else None
            feats = self.teacher_tap.features if t is not None else None
        if phase == "guide":
            with torch.no_grad():
                s = self.student(x)
        else:
            s = self.student(x)
        out: dict[str, Tensor] = {"student_logits": s}
        if h.method == "ce":
            out["loss"] = F.cross_entropy(s, y)
            return out
        if h.method == "kd":
            out["loss"] = kd_loss(s, t, y, h.kd_tau, h.kd_alpha)
            return out
        g = self.guide(feats, t)
        if phase == "student":
            g = g.detach()
        m = topk_mask(t, y, h.topk)
        out["distill"] = disk_distill_loss(s, t, g, m, h.tau_s, h.tau_t, h.lambda_nll)
        out["guide_mean"] = g.detach().mean()
        if phase == "student":
            out["aux"] = h.lambda_aux * F.cross_entropy(s, y)
            out["loss"] = out["distill"] + out["aux"]
        else:
            b = budget_value(s, t, y, g, h.max_ce, h.budget_form)
            out["budget"] = b.detach()
            out["penalty"] = budget_penalty(self.budget, b, g, h.topk, h.lambda_nll)
            out["loss"] = out["distill"] + out["penalty"]
        return out

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        phase = self.phase(self.current_epoch)
        if phase == "guide":
            self.student.eval()
        else:
            self.student.train()
        if self.guide is not None:
            self.guide.train(phase == "guide")
        out = self.losses(x, y, phase)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        opt = opts[1] if phase == "guide" else opts[0]
        accumulate = int(self.hparams.get("accumulate_grad_batches", 1))
        if batch_idx % accumulate == 0:
            opt.zero_grad()
        self.manual_backward(out["loss"] / accumulate)
        if (batch_idx + 1) % accumulate == 0 or self.trainer.is_last_batch:
            opt.step()
        if phase == "guide" and self.hparams.method == "disk" and self.hparams.budget_mode == "dual_ascent":
            # one multiplier on every rank: the batch budget value averaged over ranks
            self.budget.update(value=self.trainer.strategy.reduce(out["budget"], reduce_op="mean"))
        bs = x.shape[0]
        self.log(f"train/loss_{phase}", out["loss"].detach(), on_step=True, on_epoch=True, batch_size=bs)
        for key in ("distill", "aux", "penalty", "guide_mean"):
            if key in out:
                self.log(f"train/{key}", out[key].detach(), on_step=False, on_epoch=True, batch_size=bs)
        if phase == "student":
            self.metrics["train_acc"].update(out["student_logits"].detach(), y)
            self.log("train/acc1", self.metrics["train_acc"], on_step=False, on_epoch=True, batch_size=bs)
        if self.hparams.method == "disk" and phase == "guide":
            self.log_dict(self.budget.log_dict(), on_step=False, on_epoch=True, batch_size=bs)
        return out["loss"].detach()

    def on_train_epoch_end(self) -> None:
        sch = self.lr_schedulers()
        if sch is not None and self.phase(self.current_epoch) == "student":
            sch.step()

    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y = batch[0], batch[1]
        s = self.student(x)
        self.metrics[f"{stage}_acc"].update(s, y)
        self.log(f"{stage}/loss", F.cross_entropy(s, y), on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.log(f"{stage}/acc1", self.metrics[f"{stage}_acc"], on_epoch=True, prog_bar=True, batch_size=x.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> Any:
        def default(params: Any) -> torch.optim.Optimizer:
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)

        student_opt = (self.optimizer_factory or default)(self.student.parameters())
        opts = [student_opt]
        if self.guide is not None:
            opts.append((self.guide_optimizer_factory or default)(self.guide.parameters()))
        if self.scheduler_factory is None:
            return opts
        return opts, [self.scheduler_factory(student_opt)]
