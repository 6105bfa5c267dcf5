"""QuantizedTraining (R, SR, BC; Li et al., NeurIPS 2017): the defining properties of the three training rules,
grids, export, resume and bad input."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from callbacks.efficiency_report import EfficiencyReport, serialized_size
from callbacks.quantized_training import (
    QuantizedTraining,
    load_export,
    make_grid,
    pack_codes,
    quantize_codes,
    quantize_nearest,
    quantize_stochastic,
    unpack_codes,
    unpack_export,
)


# ---------------------------------------------------------------------------------------------- helpers
def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )


class Tiny(pl.LightningModule):
    def __init__(self, optimizer: str = "sgd", lr: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = tiny_net()
        self.optimizer, self.lr = optimizer, lr
        self.example_input_array = torch.zeros(1, 1, 6, 6)
        self.forward_weights: list[dict[str, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(n: int = 32, batch: int = 8, seed: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def trainer(callbacks, tmp_path=None, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    if tmp_path is not None:
        args["default_root_dir"] = str(tmp_path)
    args.update(kw)
    return pl.Trainer(callbacks=callbacks, **args)


def fit(model, callbacks, tmp_path=None, **kw) -> pl.Trainer:
    t = trainer(callbacks, tmp_path, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(model, train_dataloaders=loader(), val_dataloaders=loader(16) if kw.get("limit_val_batches") else None)
    return t


def f32(*values: float) -> set[float]:
    """The float32 numbers closest to ``values`` (what a float32 weight holds)."""
    return set(torch.tensor(values).tolist())


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


# ---------------------------------------------------------------------------------------------- quantizers
@pytest.mark.parametrize("grid, bits", [("binary", None), ("ternary", None), ("uniform", 3), ("uniform", 8)])
def test_stochastic_rounding_is_unbiased(grid, bits):
    g = make_grid(grid, 0.5, bits)
    w = torch.linspace(g.low, g.high, 41)
    draws = 20000
    gen = torch.Generator().manual_seed(0)
    mean = quantize_stochastic(w.expand(draws, -1).contiguous(), g, gen).mean(0)
    # per coordinate the draw has variance <= step^2 / 4: 5 standard errors of the mean
    assert (mean - w).abs().max() < 5 * g.step / 2 / math.sqrt(draws)
    levels = (torch.arange(g.q_min, g.q_max + 1, dtype=torch.float32) + g.offset) * g.step
    assert set(quantize_stochastic(w, g, gen).tolist()) <= set(levels.tolist())


def test_deterministic_rounding_is_the_nearest_grid_point():
    g = make_grid("uniform", 1.0, 4, step=0.1)  # 0.1 * {-7, ..., 7}
    w = torch.randn(5000) * 0.4
    expected = 0.1 * torch.sign(w) * torch.floor(w.abs() / 0.1 + 0.5)
    assert torch.allclose(quantize_nearest(w, g), expected.clamp(-0.7, 0.7), atol=1e-6)
    b = make_grid("binary", 0.25)
    assert torch.equal(quantize_nearest(torch.tensor([-3.0, -1e-6, 0.0, 0.2]), b),
                       torch.tensor([-0.25, -0.25, 0.25, 0.25]))
    t = make_grid("ternary", 2.0)
    assert quantize_nearest(torch.tensor([-1.2, -0.9, 0.5, 1.1, 5.0]), t).tolist() == [-2.0, 0.0, 0.0, 2.0, 2.0]


def test_stochastic_binarisation_is_a_hard_sigmoid():
    g = make_grid("binary", 1.0)
    gen = torch.Generator().manual_seed(0)
    w = torch.full((100000,), 0.5)  # P(+1) = (0.5 + 1) / 2 = 0.75
    assert abs((quantize_stochastic(w, g, gen) > 0).float().mean().item() - 0.75) < 0.01


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_pack_unpack_roundtrip_and_size(bits):
    codes = torch.randint(0, 2**bits, (1001,))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, 1001), codes)


# ---------------------------------------------------------------------------------------------- training rules
def test_bc_step_updates_float_buffer_with_gradient_at_quantized_weights():
    """After one SGD step: buffer = clip(w - lr * grad F(Q(w)), -d, d), BN and biases in full precision."""
    lr, d = 0.05, 0.2
    model = Tiny(lr=lr)
    w0 = weights(model)
    # reference: a plain copy of the net whose weights are Q(w0), gradient of the same first batch
    ref = copy.deepcopy(model.net)
    g = make_grid("binary", d)
    with torch.no_grad():
        for n, m in ref.named_modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(quantize_nearest(m.weight, g))
    x, y = next(iter(loader()))
    F.cross_entropy(ref(x), y).backward()
    grads = {f"net.{n}": m.weight.grad.clone() for n, m in ref.named_modules()
             if isinstance(m, nn.Conv2d | nn.Linear)}

    cb = QuantizedTraining(method="bc", grid="binary", delta=d)
    fit(model, [cb], max_steps=1)
    after = weights(model)
    for name in w0:  # the buffer starts clipped to [-d, d] (Q(w0) is the same either way)
        expected = (w0[name].clamp(-d, d) - lr * grads[name]).clamp(-d, d)
        assert torch.allclose(after[name], expected, atol=1e-6), name
    assert any(((w0[n].clamp(-d, d) - lr * grads[n]).abs() > d).any() for n in w0)  # the clip was exercised
    assert any((after[n].abs() < d).any() for n in after)  # a real float buffer, not binary values


def test_bc_buffer_stays_in_range_and_forward_uses_two_values_with_adam():
    model = Tiny(optimizer="adam", lr=0.05)
    seen: list[torch.Tensor] = []
    model.net[0].register_forward_hook(lambda m, i, o: seen.append(m.weight.detach().clone()))
    cb = QuantizedTraining(method="bc", delta=0.1)
    fit(model, [cb], max_epochs=2)
    for w in weights(model).values():
        assert w.abs().max() <= 0.1 + 1e-7
    assert len(seen) == 8
    for w in seen:  # the forward (hence the backward) runs at binary weights
        assert set(w.unique().tolist()) == f32(-0.1, 0.1)
    assert isinstance(model.net[0].weight, nn.Parameter)  # the float Parameter is back after every forward


def test_r_leaves_weights_unchanged_when_steps_are_below_half_a_grid_step():
    """R: w <- Q_d(w - lr g). With lr * max|g| < step / 2 every coordinate rounds back to its grid point."""
    step = 0.1
    small = Tiny(lr=1e-4)
    cb = QuantizedTraining(method="r", grid="uniform", bits=8, step=step)
    cb.attach(small)
    start = weights(small)
    opt = torch.optim.SGD(small.parameters(), lr=1e-4)
    cb.watch_optimizer(opt)
    for x, y in loader():
        opt.zero_grad()
        F.cross_entropy(small(x), y).backward()
        assert max(1e-4 * m.weight.grad.abs().max().item() for m in small.modules()
                   if isinstance(m, nn.Conv2d | nn.Linear)) < step / 2
        opt.step()
    assert all(torch.equal(start[n], w) for n, w in weights(small).items())
    # the same run with a large learning rate moves the weights, on the grid
    big = Tiny(lr=5.0)
    cb2 = QuantizedTraining(method="r", grid="uniform", bits=8, step=step)
    fit(big, [cb2], max_epochs=1)
    moved = weights(big)
    assert any(not torch.equal(start[n], moved[n]) for n in start)
    for w in moved.values():
        assert torch.allclose(w / step, (w / step).round(), atol=1e-4)


@pytest.mark.parametrize("method", ["r", "sr"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_r_and_sr_store_only_grid_values(method, optimizer):
    """Binary R/SR layers hold exactly two values after every step, with SGD and with Adam (R-/SR-ADAM)."""
    model = Tiny(optimizer=optimizer, lr=50.0 if optimizer == "sgd" else 0.3)
    after_step: list[set] = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            after_step.append({v for w in weights(pl_module).values() for v in w.unique().tolist()})

    cb = QuantizedTraining(method=method, delta=0.5)
    start = weights(model)
    fit(model, [cb, Spy()], max_epochs=2)
    assert len(after_step) == 8 and all(s == {-0.5, 0.5} for s in after_step)
    for w in weights(model).values():
        assert set(w.unique().tolist()) == {-0.5, 0.5}
    if method == "sr" or optimizer == "sgd":  # R-ADAM with steps of ~lr < delta freezes; the others move
        assert any(not torch.equal(quantize_nearest(start[n], make_grid("binary", 0.5)), w)
                   for n, w in weights(model).items())


def test_r_adam_freezes_below_half_a_grid_step():
    model = Tiny(optimizer="adam", lr=1e-3)  # Adam moves each weight by ~lr << delta
    start = {n: quantize_nearest(w, make_grid("binary", 1.0)) for n, w in weights(model).items()}
    fit(model, [QuantizedTraining(method="r")], max_epochs=2)
    assert all(torch.equal(start[n], w) for n, w in weights(model).items())


def test_sr_moves_with_probability_proportional_to_the_step():
    """SR from the grid point 0 of a ternary grid: P(move) = lr |g| / d for a constant gradient."""
    lin = nn.Linear(200, 1, bias=False)
    cb = QuantizedTraining(method="sr", grid="ternary", delta=1.0, seed=3)
    nn.init.zeros_(lin.weight)
    cb.attach(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=0.25)
    cb.watch_optimizer(opt)
    moves = 0
    for _ in range(50):
        with torch.no_grad():
            lin.weight.zero_()
        opt.zero_grad()
        lin(torch.ones(1, 200)).sum().backward()  # gradient 1 for every weight: lr |g| / d = 0.25
        opt.step()
        moves += int((lin.weight != 0).sum())
        assert set(lin.weight.unique().tolist()) <= {-1.0, 0.0}
    assert abs(moves / (50 * 200) - 0.25) < 0.03


def test_validation_and_export_use_quantized_weights(tmp_path):
    model = Tiny(optimizer="adam", lr=0.05)
    cb = QuantizedTraining(method="bc", delta=0.3, export_path=str(tmp_path / "q.pt"))
    fit(model, [cb], max_epochs=1)
    x = torch.randn(5, 1, 6, 6)
    model.eval()
    with torch.no_grad():
        out = model(x)
    plain = load_export(Tiny(seed=1), tmp_path / "q.pt").eval()  # a plain module, no callback
    with torch.no_grad():
        assert torch.equal(plain(x), out)
    for n, m in plain.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            assert set(m.weight.unique().tolist()) == f32(-0.3, 0.3)
    # the float buffer differs from what the model computes with
    assert any(not torch.equal(w, q) for w, q in zip(weights(model).values(), cb.quantized_weights().values()))


def test_export_is_packed_and_the_efficiency_report_sees_it(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    model.net[7] = nn.Linear(144, 640)  # make the quantized weights dominate the size
    cb = QuantizedTraining(method="sr")
    report = EfficiencyReport(latency_repeats=0, measure_memory=False)
    t = trainer([cb, report], tmp_path, max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(model, train_dataloaders=DataLoader(TensorDataset(torch.randn(8, 1, 6, 6),
                                                                torch.randint(0, 640, (8,))), batch_size=8))
    sizes = cb.export_sizes(model)
    n = sum(w.numel() for w in weights(model).values())
    assert sizes["quantized_float_bytes"] == 4 * n
    assert sizes["quantized_packed_bytes"] == sum(math.ceil(w.numel() / 8) for w in weights(model).values())
    assert sizes["quantized_packed_bytes"] <= sizes["quantized_float_bytes"] / 32 + len(weights(model))
    exported = cb.export_state_dict(model)
    assert report.end.export_bytes == serialized_size(exported)
    plain_bytes = serialized_size(model.state_dict())
    assert report.end.export_bytes < plain_bytes / 10
    assert set(unpack_export(exported)) == set(model.state_dict())


@pytest.mark.parametrize("grid, bits, values", [("ternary", None, 3), ("uniform", 3, 7)])
def test_other_grids_export_and_reload(grid, bits, values):
    model = Tiny(optimizer="adam", lr=0.05)
    cb = QuantizedTraining(method="sr", grid=grid, bits=bits, delta=0.5)
    fit(model, [cb], max_epochs=1)
    exported = cb.export_state_dict(model)
    state = unpack_export(exported)
    for key in ("net.0.weight", "net.3.weight", "net.7.weight"):
        assert torch.equal(state[key], model.state_dict()[key])
        assert len(state[key].unique()) <= values
    assert exported["packed"].numel() == sum(math.ceil(w.numel() * (bits or 2) / 8) for w in weights(model).values())


def test_checkpoint_keeps_model_keys_and_float_buffer(tmp_path):
    model = Tiny(optimizer="adam", lr=0.05)
    cb = QuantizedTraining(method="bc", delta=1.0, seed=7)
    t = fit(model, [cb], tmp_path, max_epochs=1)
    path = tmp_path / "bc.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["state_dict"]) == set(Tiny().state_dict())
    assert torch.equal(ckpt["state_dict"]["net.0.weight"], model.net[0].weight.detach())
    assert len(ckpt["state_dict"]["net.0.weight"].unique()) > 2  # the float buffer, not the binary weights
    state = ckpt["callbacks"][cb.state_key]
    assert state["settings"]["method"] == "bc" and state["layers"] == ["net.0", "net.3", "net.7"]
    Tiny().load_state_dict(ckpt["state_dict"])  # loads into a plain model


def test_resume_continues_sr_exactly(tmp_path):
    """Stopping and resuming (ckpt_path) gives the same weights as an uninterrupted run: the callback saves and
    restores its generator state; Adam's state and the data order are restored by Lightning."""
    full = Tiny(optimizer="adam", lr=0.2)
    fit(full, [QuantizedTraining(method="sr", seed=5)], max_epochs=2)

    first = Tiny(optimizer="adam", lr=0.2)
    t1 = fit(first, [QuantizedTraining(method="sr", seed=5)], tmp_path, max_epochs=1)
    t1.save_checkpoint(tmp_path / "e1.ckpt")
    resumed = Tiny(optimizer="adam", lr=0.2, seed=99)  # other init: everything must come from the checkpoint
    cb = QuantizedTraining(method="sr", seed=5)
    t2 = trainer([cb], tmp_path, max_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t2.fit(resumed, train_dataloaders=loader(), ckpt_path=str(tmp_path / "e1.ckpt"))
    assert t2.global_step == 8
    for n, w in weights(full).items():
        assert torch.equal(w, weights(resumed)[n]), n

    # resuming with other quantization settings is refused with a clear message
    other = trainer([QuantizedTraining(method="r", seed=5)], tmp_path, max_epochs=2)
    with pytest.raises(ValueError, match="other quantization settings"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other.fit(Tiny(optimizer="adam"), train_dataloaders=loader(), ckpt_path=str(tmp_path / "e1.ckpt"))


def test_gradient_accumulation_projects_after_optimizer_steps_only():
    model = Tiny(lr=0.5)
    cb = QuantizedTraining(method="sr", delta=0.5)
    calls = []
    original = cb.apply_update_rule
    cb.apply_update_rule = lambda: (calls.append(1), original())[1]
    t = fit(model, [cb], max_epochs=1, accumulate_grad_batches=2)
    assert t.global_step == 2 and len(calls) == 2
    assert all(set(w.unique().tolist()) == {-0.5, 0.5} for w in weights(model).values())


# ---------------------------------------------------------------------------------------------- layers
def test_layer_selection_first_last_and_patterns():
    model = Tiny()
    assert [n for n, _ in QuantizedTraining().select_layers(model)] == ["net.0", "net.3", "net.7"]
    assert [n for n, _ in QuantizedTraining(quantize_first=False, quantize_last=False).select_layers(model)] == [
        "net.3"]
    assert [n for n, _ in QuantizedTraining(layers=["net.[07]"]).select_layers(model)] == ["net.0", "net.7"]
    assert [n for n, _ in QuantizedTraining(exclude=["*.7"]).select_layers(model)] == ["net.0", "net.3"]
    # unquantized layers stay in full precision under R
    cb = QuantizedTraining(method="r", quantize_last=False, delta=0.5)
    fit(model, [cb], max_epochs=1)
    assert len(model.net[7].weight.unique()) > 2 and set(model.net[0].weight.unique().tolist()) == {-0.5, 0.5}


def test_layers_confine_first_and_last_to_one_submodule():
    """A distillation module: ``layers: ["student.*"]`` quantizes the student only, and quantize_first/last drop
    the student's own first/last layers, never a frozen teacher's (registered after the student here)."""
    class Distill(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                                         nn.Linear(4, 2))
            self.teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8, 2))

    model = Distill()
    names = lambda cb: [n for n, _ in cb.select_layers(model)]  # noqa: E731
    assert names(QuantizedTraining(layers=["student.*"])) == ["student.0", "student.2", "student.4"]
    assert names(QuantizedTraining(layers=["student.*"], quantize_last=False)) == ["student.0", "student.2"]
    assert names(QuantizedTraining(layers=["student.*"], quantize_first=False)) == ["student.2", "student.4"]
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    cb = QuantizedTraining(method="r", delta=0.5, layers=["student.*"])
    cb.attach(model)  # R puts the student's weights on the grid at once
    assert set(model.student[0].weight.unique().tolist()) <= {-0.5, 0.5}
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in teacher.items())


def test_per_layer_scale_option():
    model = Tiny()
    scales = {n: float(w.abs().mean()) for n, w in weights(model).items()}
    cb = QuantizedTraining(method="r", scale="per_layer")
    fit(model, [cb], max_epochs=1)
    for n, w in weights(model).items():
        assert torch.allclose(w.abs(), torch.full_like(w, scales[n]))
        assert len(w.unique()) == 2


def test_layers_are_found_at_fit_start_after_another_callback_changed_the_model():
    class Narrow(pl.Callback):
        """Stands in for a structural callback: replaces layers in setup (before optimizers are built)."""

        def setup(self, trainer, pl_module, stage):
            pl_module.net[3] = nn.Conv2d(4, 2, 3, padding=1, bias=False)
            pl_module.net[4] = nn.BatchNorm2d(2)
            pl_module.net[7] = nn.Linear(2 * 6 * 6, 3)

    model = Tiny(lr=0.5)
    cb = QuantizedTraining(method="sr", delta=0.5)
    fit(model, [Narrow(), cb], max_epochs=1)
    assert cb.layers["net.3"].module is model.net[3] and model.net[3].out_channels == 2
    for w in weights(model).values():
        assert set(w.unique().tolist()) == {-0.5, 0.5}


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"grid": "uniform", "bits": 1}, "unsupported bit width 1"),
    ({"grid": "uniform", "bits": 9}, "unsupported bit width 9"),
    ({"grid": "uniform"}, "unsupported bit width None"),
    ({"grid": "binary", "bits": 2}, "unsupported bit width 2"),
    ({"grid": "ternary", "bits": 3}, "unsupported bit width 3"),
    ({"grid": "uniform", "bits": 4, "step": 0.0}, "step must be a finite number > 0"),
    ({"grid": "uniform", "bits": 4, "step": -0.1}, "step must be a finite number > 0"),
    ({"delta": 0.0}, "delta must be a finite number > 0"),
    ({"delta": -1.0}, "delta must be a finite number > 0"),
    ({"method": "xnor"}, "method must be one of"),
    ({"grid": "octal"}, "grid must be one of"),
    ({"method": "r", "stochastic": True}, "stochastic applies to method bc only"),
])
def test_bad_settings_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizedTraining(**kwargs)


def test_model_without_quantizable_layer_gives_clear_error():
    class NoLayers(Tiny):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.ReLU())
            self.bias = nn.Parameter(torch.zeros(36))

        def forward(self, x):
            return self.net(x) + self.bias

    with pytest.raises(ValueError, match="no quantizable layer"):
        QuantizedTraining().attach(NoLayers())
    with pytest.raises(ValueError, match="no quantizable layer"):
        QuantizedTraining(layers=["nothing*"]).attach(Tiny())


def test_quantize_codes_match_values():
    g = make_grid("uniform", 1.0, 3)
    w = torch.randn(100)
    codes = quantize_codes(w, g)
    assert codes.min() >= 0 and codes.max() <= 6
    assert torch.allclose((codes.float() + g.q_min) * g.step, quantize_nearest(w, g))


# ---------------------------------------------------------------------------------------------- composition
class ResumeProbe(pl.Callback):
    """Records, when training starts (after every callback's on_fit_start and the checkpoint restore), the
    step, the conv shapes and the weights; used through main.py's --trainer.callbacks+=."""

    def on_train_start(self, trainer, pl_module):
        self.global_step = trainer.global_step
        self.shapes = {n: tuple(m.weight.shape) for n, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)}
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_pruned_bc_recipe_stops_and_resumes_with_pruned_structure_and_float_buffers(tmp_path):
    """recipes/quant_bc_resnet20_glyphs_l1pruned.yaml: L1-pruned ResNet-20 trained by BC, stopped after one epoch
    and resumed with --ckpt_path last: the resumed run continues (not restarts) on the pruned widths, from the
    checkpoint's float buffers, with the same quantized layers."""
    import wandb

    from callbacks.quantized_training import QuantizedTraining as QT
    from main import cli_main
    from modules.image_classifier import ImageClassifier

    args = ["fit", "--config", "recipes/quant_bc_resnet20_glyphs_l1pruned.yaml", "--init_from=null",
            f"--runs_root={tmp_path}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--data.init_args.train_size=64", "--data.init_args.test_size=32", "--data.init_args.batch_size=32",
            # the recipe's last callback is the EfficiencyReport: counts only, no timing
            "--trainer.callbacks.init_args.latency_repeats=0", "--trainer.callbacks.init_args.measure_memory=false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = cli_main([*args, "--trainer.max_epochs=1"])
        wandb.finish()
        ckpt = torch.load(tmp_path / "quant_bc_resnet20_glyphs_l1pruned" / "checkpoints" / "last.ckpt",
                          weights_only=False)
        resumed = cli_main([*args, "--trainer.max_epochs=2", "--ckpt_path=last",
                            "--trainer.callbacks+=tests.callbacks.test_quantized_training.ResumeProbe"])
    probe = next(c for c in resumed.trainer.callbacks if isinstance(c, ResumeProbe))
    quant = next(c for c in resumed.trainer.callbacks if isinstance(c, QT))
    sd = ckpt["state_dict"]
    assert sd["net.layer1.0.conv1.weight"].shape[0] == 8 and sd["net.layer3.2.conv1.weight"].shape[0] == 32
    assert probe.global_step == first.trainer.global_step == 2  # continued after epoch 1
    assert resumed.trainer.global_step == 4
    for name, shape in probe.shapes.items():
        assert tuple(sd[f"{name}.weight"].shape) == shape, name
    layer_names = next(v for k, v in ckpt["callbacks"].items() if k.startswith("QuantizedTraining"))["layers"]
    assert list(quant.layers) == layer_names and len(layer_names) == 20  # 19 convs + fc
    for name in layer_names:  # the float buffers came back intact
        key = f"{name}.weight"
        assert torch.equal(probe.state[key], sd[key]), key
        assert len(sd[key].unique()) > 2 and sd[key].abs().max() <= 1.0
    # the exported 1-bit model loads into a plain pruned net rebuilt from the hyperparameters
    export = tmp_path / "quant_bc_resnet20_glyphs_l1pruned" / "export" / "quantized.pt"
    hparams = {k: v for k, v in resumed.model.hparams.items() if not k.startswith("_")}
    plain = load_export(ImageClassifier(**hparams), export)
    assert set(plain.net.layer2[1].conv1.weight.unique().tolist()) == {-1.0, 1.0}


# ---------------------------------------------------------------------------------------------- DDP
class RankWeights(pl.Callback):
    """Under DDP: each rank writes a digest of its weights and the values of its first quantized layer."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module) -> None:
        import json
        import os

        from tests.probes import params_digest

        os.makedirs(self.out_dir, exist_ok=True)
        first = pl_module.net.conv1.weight
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"digest": params_digest(pl_module.net), "step": trainer.global_step,
                       "values": sorted(set(first.detach().unique().tolist()))}, f)


def test_sr_under_ddp_keeps_ranks_identical(tmp_path):
    """2 CPU ranks (gloo, tests/ddp.py): the same SR draws on every rank, so the binary weights stay identical
    (about 10 s on an idle 2-core machine)."""
    import json

    from tests.ddp import run_ddp

    out = tmp_path / "probe"
    run_ddp(["fit", "--config", "recipes/quant_fp_resnet20_glyphs.yaml", "--trainer.max_epochs=1",
             "--trainer.logger=false", "--model.init_args.log_images=false",
             "--data.init_args.train_size=128", "--data.init_args.test_size=32", "--data.init_args.batch_size=16",
             "--trainer.callbacks.init_args.latency_repeats=0", "--trainer.callbacks.init_args.measure_memory=false",
             "--trainer.callbacks+=callbacks.quantized_training.QuantizedTraining",
             "--trainer.callbacks.init_args.method=sr", "--trainer.callbacks.init_args.delta=0.5",
             "--trainer.callbacks+=tests.callbacks.test_quantized_training.RankWeights",
             f"--trainer.callbacks.init_args.out_dir={out}"], tmp_path / "runs")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4  # 128 images / 2 ranks / 16
    assert ranks[0]["values"] == ranks[1]["values"] == [-0.5, 0.5]
    assert ranks[0]["digest"] == ranks[1]["digest"]
