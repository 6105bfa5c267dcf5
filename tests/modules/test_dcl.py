"""DCL (modules/dcl.py, modules/dcl_constraints.py): each constraint's value and gradient on hand-built batches,
the running estimates, the multipliers' dual ascent (rise while violated, decay to zero once satisfied), the
checkpointed state, DDP rank agreement and the bad-input errors."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from modules.dcl import DCLClassifier
from modules.dcl_constraints import (CalibrationGap, DCLConfigError, LabelPriorKL, LossCVaR, LossFloor,
                                     WorstClassLoss, build_constraint)


def _grad(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(value, x)
    return g


# ------------------------------------------------------------------------------------------ values and gradients
def test_worst_class_loss_is_the_max_class_mean_with_its_gradient():
    losses = torch.tensor([1.0, 2.0, 3.0, 5.0], requires_grad=True)
    targets = torch.tensor([0, 0, 1, 1])
    c = WorstClassLoss(eps=1.0, num_classes=3, tau=0.0)
    g = c(torch.zeros(4, 3), targets, losses)
    assert g.item() == pytest.approx(4.0)  # class 1: (3 + 5) / 2; class 2 absent
    assert _grad(g, losses).tolist() == [0.0, 0.0, 0.5, 0.5]
    soft = WorstClassLoss(eps=1.0, num_classes=3, tau=1.0)
    g = soft(torch.zeros(4, 3), targets, losses)
    assert g.item() == pytest.approx(4.0)  # the value is the max; the gradient is the softmax-weighted one
    w1 = math.exp(4.0) / (math.exp(1.5) + math.exp(4.0))  # classes present: means 1.5 and 4.0
    assert _grad(g, losses).tolist() == pytest.approx([(1 - w1) / 2, (1 - w1) / 2, w1 / 2, w1 / 2])


def test_cvar_is_the_mean_of_the_worst_alpha_share():
    losses = torch.tensor([1.0, 4.0, 2.0, 3.0], requires_grad=True)
    c = LossCVaR(eps=1.0, alpha=0.5)
    g = c(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), losses)
    assert g.item() == pytest.approx(3.5)
    assert _grad(g, losses).tolist() == [0.0, 0.5, 0.0, 0.5]


def test_label_prior_kl_equals_the_formula_and_its_autograd():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0], [1.0, -2.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 0, 1, 2])
    for prior, pi in (("uniform", torch.full((3,), 1 / 3)), ("labels", torch.tensor([0.5, 0.25, 0.25])),
                      ([2.0, 1.0, 1.0], torch.tensor([0.5, 0.25, 0.25]))):
        c = LabelPriorKL(eps=0.1, num_classes=3, prior=prior)
        g = c(logits, targets, torch.zeros(4))
        p = logits.softmax(-1).mean(0)
        expected = (p * (p / pi).log()).sum()
        assert g.item() == pytest.approx(expected.item(), rel=1e-4)
        assert torch.allclose(_grad(g, logits), _grad(expected, logits), atol=1e-5)


def test_calibration_gap_is_the_binned_ece_with_gradient_through_confidence():
    # confidences 0.9 (correct), 0.9 (wrong) in bin 9 of 10; 0.6 (correct) in bin 6
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])).requires_grad_(True)
    targets = torch.tensor([0, 1, 0])
    c = CalibrationGap(eps=0.05, bins=10)
    g = c(logits, targets, torch.zeros(3))
    expected_value = (2 / 3) * abs(0.9 - 0.5) + (1 / 3) * abs(0.6 - 1.0)
    assert g.item() == pytest.approx(expected_value, abs=1e-5)
    conf = logits.softmax(-1).max(-1).values
    by_hand = (2 / 3) * ((conf[0] + conf[1]) / 2 - 0.5).abs() + (1 / 3) * (conf[2] - 1.0).abs()
    assert torch.allclose(_grad(g, logits), _grad(by_hand, logits), atol=1e-6)


def test_loss_floor_is_the_floor_minus_the_running_mean_loss_with_gradient_minus_one_over_n():
    losses = torch.tensor([0.2, 0.4, 0.6, 1.0], requires_grad=True)
    c = build_constraint("loss_floor", 10, {"floor": 0.85, "eps": 0.05, "momentum": 0.5})
    assert isinstance(c, LossFloor) and c.floor == 0.85 and c.eps == 0.05
    g = c(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long), losses)
    assert g.item() == pytest.approx(0.85 - 0.55)  # first batch: its mean loss
    assert _grad(g, losses).tolist() == pytest.approx([-0.25] * 4)
    # second batch: running mean = EMA(loss sums) / EMA(counts) = (0.5 * 2.2 + 0.5 * 4) / (0.5 * 4 + 0.5 * 2)
    losses = torch.tensor([1.0, 3.0], requires_grad=True)
    g = c(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long), losses)
    assert g.item() == pytest.approx(0.85 - 3.1 / 3.0)
    assert _grad(g, losses).tolist() == pytest.approx([-0.5, -0.5])  # straight-through: this batch's mean
    c.eval()
    assert c(torch.zeros(1, 10), torch.zeros(1, dtype=torch.long), torch.tensor([9.0])).item() == \
        pytest.approx(0.85 - 3.1 / 3.0)  # evaluation does not move the running mean


def test_running_estimate_averages_batches_and_differentiates_the_current_one():
    c = LossCVaR(eps=1.0, alpha=1.0, momentum=0.75)
    c(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([2.0, 2.0]))  # first batch: mean 2
    losses = torch.tensor([6.0, 6.0], requires_grad=True)
    g = c(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), losses)
    assert g.item() == pytest.approx(0.75 * 2.0 + 0.25 * 6.0)
    assert _grad(g, losses).tolist() == [0.5, 0.5]  # d mean / d loss_i of this batch
    c.eval()  # evaluation does not move the running statistics
    c(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([100.0, 100.0]))
    assert float(c.running_tail_sum / c.running_batches) == pytest.approx(3.0)


def test_worst_class_uses_running_means_across_batches():
    c = WorstClassLoss(eps=1.0, num_classes=2, momentum=0.5, tau=0.0)
    c(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([4.0, 1.0]))  # class 0 is the worst so far
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    g = c(torch.zeros(2, 2), torch.tensor([0, 1]), losses)
    # running class means (EMA of sums / EMA of counts): class 0 (4+1)/2 = 2.5, class 1 (1+2)/2 = 1.5
    assert g.item() == pytest.approx(2.5)
    assert _grad(g, losses).tolist() == [1.0, 0.0]


# ------------------------------------------------------------------------------------------------- multipliers
def _module(**kwargs):
    return DCLClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), net_kwargs={"widths": [4, 8]},
                         log_images=False, **kwargs)


def test_multiplier_rises_while_violated_and_decays_to_zero_once_satisfied():
    torch.manual_seed(0)
    m = _module(constraints={"cvar": {"eps": 1e-3, "alpha": 0.5}}, dual_lr=0.1)
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    lam = m.multipliers["cvar"]
    history = []
    for step in range(5):
        m.training_step(batch, step)
        g = float(m._last_values["cvar"])
        before = float(lam.multiplier)
        m.on_train_batch_end(None, batch, step)
        assert float(lam.multiplier) == pytest.approx(max(0.0, before + 0.1 * (g - 1e-3)), rel=1e-6)
        history.append(float(lam.multiplier))
    assert history == sorted(history) and history[-1] > 0.4  # violated: rises every step
    lam.bound = 50.0  # now the constraint holds by a wide margin
    m.dcl_constraints["cvar"].eps = 50.0
    for step in range(5, 15):
        m.training_step(batch, step)
        m.on_train_batch_end(None, batch, step)
    assert float(lam.multiplier) == 0.0  # decayed to zero and clamped there


def test_loss_floor_multiplier_rises_below_the_floor_and_then_pushes_the_loss_up():
    torch.manual_seed(0)
    m = _module(constraints={"loss_floor": {"floor": 5.0, "eps": 0.1}}, dual_lr=0.1, normalize_lagrangian=False)
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    lam = m.multipliers["loss_floor"]
    history = []
    for step in range(4):  # 3 classes: the loss (about ln 3) is far below the floor 5 - 0.1
        m.training_step(batch, step)
        g = float(m._last_values["loss_floor"])
        before = float(lam.multiplier)
        m.on_train_batch_end(None, batch, step)
        assert g > 0.1 and float(lam.multiplier) == pytest.approx(before + 0.1 * (g - 0.1), rel=1e-6)
        history.append(float(lam.multiplier))
    assert history == sorted(history) and history[0] > 0
    # with lambda = 3 the Lagrangian is (1 - 3) * mean loss + const: its gradient is -2 times the loss's (ascent)
    lam.lam.fill_(3.0)
    params = [p for p in m.parameters() if p.requires_grad]
    grad_lagrangian = torch.autograd.grad(m.training_step(batch, 4), params)
    grad_loss = torch.autograd.grad(F.cross_entropy(m(batch[0]), batch[1]), params)
    for a, b in zip(grad_lagrangian, grad_loss, strict=True):
        assert torch.allclose(a, -2.0 * b, atol=1e-6)
    # a floor the loss stays above: satisfied, the multiplier decays to zero
    m.dcl_constraints["loss_floor"].floor = 0.2
    for step in range(5, 40):
        m.training_step(batch, step)
        m.on_train_batch_end(None, batch, step)
    assert float(lam.multiplier) == 0.0


def test_penalty_adds_lambda_times_violation_to_the_loss():
    torch.manual_seed(0)
    m = _module(constraints={"worst_class_loss": {"eps": 0.5, "tau": 0.0}})
    m.multipliers["worst_class_loss"].lam.fill_(2.0)
    batch = (torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    lagrangian = m.training_step(batch, 0)
    losses = F.cross_entropy(m(batch[0]), batch[1], reduction="none")
    worst = max(losses[batch[1] == k].mean() for k in range(3))
    assert lagrangian.item() == pytest.approx((losses.mean() + 2.0 * (worst - 0.5)).item() / 3.0, rel=1e-5)
    m.hparams.normalize_lagrangian = False
    assert m.training_step(batch, 1).item() == pytest.approx((losses.mean() + 2.0 * (worst - 0.5)).item(), rel=1e-5)


def test_no_constraints_trains_like_the_plain_classifier():
    from modules.image_classifier import ImageClassifier

    torch.manual_seed(0)
    a = _module(constraints={})
    b = ImageClassifier(net="small_cnn", num_classes=3, input_shape=(1, 8, 8), net_kwargs={"widths": [4, 8]},
                        log_images=False)
    b.load_state_dict(a.state_dict(), strict=False)
    batch = (torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert a.training_step(batch, 0).item() == pytest.approx(b.training_step(batch, 0).item())


# ------------------------------------------------------------------------------------------ checkpoint and DDP
def test_running_statistics_and_multipliers_survive_a_checkpoint(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    m = _module(constraints={"worst_class_loss": {"eps": 0.1}, "calibration_gap": {"eps": 0.01}})
    data = DataLoader(TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))), batch_size=8)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(m, data)
    path = tmp_path / "dcl.ckpt"
    trainer.save_checkpoint(path)
    loaded = DCLClassifier.load_from_checkpoint(path)
    assert float(m.multipliers["worst_class_loss"].multiplier) > 0
    for key, value in m.state_dict().items():
        if key.startswith(("dcl_constraints", "multipliers")):
            assert torch.equal(loaded.state_dict()[key], value), key


class RankState(pl.Callback):
    """Test probe: each rank writes its multipliers and running statistics at the end of training."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import os

        os.makedirs(self.out_dir, exist_ok=True)
        state = {k: v.tolist() for k, v in pl_module.state_dict().items()
                 if k.startswith(("dcl_constraints", "multipliers"))}
        with open(f"{self.out_dir}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"step": trainer.global_step, "state": state}, f)


def test_ddp_ranks_keep_identical_multipliers_and_statistics(tmp_path):
    from tests.ddp import run_ddp

    out = tmp_path / "probe"
    run_ddp(["fit", "--config", "recipes/dcl_vgg9_glyphs_imbalanced.yaml", "--trainer.max_epochs=1",
             "--trainer.logger=false", "--model.init_args.log_images=false", "--trainer.callbacks=[]",
             "--data.init_args.train_size=256", "--data.init_args.test_size=32", "--data.init_args.batch_size=16",
             "--trainer.callbacks+=tests.modules.test_dcl.RankState", f"--trainer.callbacks.init_args.out_dir={out}"],
            tmp_path / "runs")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] > 1
    assert ranks[0]["state"] == ranks[1]["state"]
    assert any(v != 0 for k, v in ranks[0]["state"].items() if k.endswith(".lam"))


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("eps", [0, -0.1, float("nan")])
def test_eps_must_be_positive(eps):
    with pytest.raises(DCLConfigError, match="eps must be a number > 0"):
        build_constraint("cvar", 10, {"eps": eps})


@pytest.mark.parametrize("options", [{}, {"floor": 0}, {"floor": -0.5}, {"floor": float("nan")}, {"floor": "high"},
                                     {"floor": True}])
def test_loss_floor_needs_a_positive_floor(options):
    with pytest.raises(DCLConfigError, match="loss_floor': floor must be a number > 0"):
        build_constraint("loss_floor", 10, {"eps": 0.05, **options})


def test_loss_floor_eps_must_be_below_the_floor():
    with pytest.raises(DCLConfigError, match="must be below floor"):
        build_constraint("loss_floor", 10, {"eps": 1.0, "floor": 0.8})


def test_unknown_constraint_names_the_close_match():
    with pytest.raises(DCLConfigError, match="Did you mean 'worst_class_loss'"):
        _module(constraints={"worst_class_los": {"eps": 1.0}})


def test_missing_eps_and_bad_options_are_clear():
    with pytest.raises(DCLConfigError, match="needs a bound"):
        build_constraint("cvar", 10, {"alpha": 0.1})
    with pytest.raises(DCLConfigError, match="bad options"):
        build_constraint("cvar", 10, {"eps": 1.0, "tail": 0.1})
    with pytest.raises(DCLConfigError, match="alpha"):
        build_constraint("cvar", 10, {"eps": 1.0, "alpha": 0.0})
    assert math.isclose(build_constraint("cvar", 10, {"eps": 2}).eps, 2.0)


def test_cli_prints_the_bad_constraint_as_one_paragraph(capsys):
    from main import cli_main

    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", "recipes/dcl_vgg9_glyphs_imbalanced.yaml",
                  "--model.init_args.constraints={'worst_class_loss': {'eps': -1}}", "--trainer.max_epochs=0"])
    err = capsys.readouterr().err
    assert "eps must be a number > 0" in err and "Traceback" not in err


def test_dcl_glyph_recipe_runs_with_a_logger(tmp_path):
    """DCLClassifier's arguments and GlyphsDataModule's must not share a name with different values: with any
    logger attached Lightning merges both hyperparameter sets and refuses a clash (the recipe smoke harness runs
    without a logger, so it would not see it)."""
    import wandb

    from main import cli_main

    cli = cli_main(["fit", "--config", "recipes/dcl_vgg9_glyphs_imbalanced.yaml", f"--runs_root={tmp_path}",
                    "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                    "--data.init_args.train_size=64", "--data.init_args.test_size=32",
                    "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"])
    assert cli.trainer.global_step == 1 and wandb.run is not None
    wandb.finish()
