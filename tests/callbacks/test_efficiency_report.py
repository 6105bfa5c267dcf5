"""EfficiencyReport: counting conventions against published numbers, memory, latency, export size."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import lightning.pytorch as pl
from callbacks.efficiency_report import (
    EfficiencyReport,
    count_flops,
    count_macs,
    count_params,
    measure_latency,
    measure_training_memory,
)


def test_resnet18_is_1_81_gmacs_under_all():
    model = torchvision.models.resnet18()
    macs = count_macs(model, torch.zeros(1, 3, 224, 224), "all")
    assert abs(macs / 1.81e9 - 1) < 0.01


def test_resnet34_matches_pruning_paper_under_li2017():
    model = torchvision.models.resnet34()
    x = torch.zeros(1, 3, 224, 224)
    assert float(f"{count_macs(model, x, 'li2017'):.3g}") == 3.64e9
    assert float(f"{count_params(model, 'li2017'):.3g}") == 2.16e7
    # the projection shortcuts are what `li2017` leaves out
    assert count_macs(model, x, "all") > count_macs(model, x, "li2017")


def test_li2017_counts_conv_and_linear_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )
    x = torch.zeros(2, 3, 8, 8)  # batch 2: the count is per input
    expected = 8 * 3 * 9 * 8 * 8 + 8 * (8 // 2) * 9 * 4 * 4 + 128 * 10
    assert count_macs(model, x, "li2017") == expected
    assert count_params(model, "li2017") == 8 * 3 * 9 + 8 * 4 * 9 + 128 * 10
    assert count_flops(model, x) == 2 * expected  # BN/ReLU/pool/bias cost no FLOPs in the torch counter


class _Attention(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return (q @ k.transpose(1, 2)).softmax(-1) @ v


def test_all_convention_counts_attention_matmuls():
    model, tokens, d = _Attention(16), 10, 16
    x = torch.zeros(1, tokens, d)
    li = count_macs(model, x, "li2017")
    assert li == tokens * d * 3 * d
    assert count_macs(model, x, "all") == li + 2 * tokens * tokens * d


class _Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], layers: int = 1, bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = cell(3, 8, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(8 * (2 if bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("cell,gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_all_convention_counts_recurrent_layers_at_every_step(cell, gates):
    """torch's flop counter sees nothing inside nn.LSTM/GRU/RNN; the count adds gates x hidden x (input + hidden)
    per time step, layer and direction, per input."""
    steps, head = 20, 8 * 5
    x = torch.zeros(2, steps, 3)
    assert count_macs(_Recurrent(cell), x, "all") == steps * gates * 8 * (3 + 8) + head
    # two layers, both directions: the second layer reads both directions' outputs
    both = count_macs(_Recurrent(cell, layers=2, bidirectional=True), x, "all")
    assert both == steps * 2 * gates * 8 * ((3 + 8) + (16 + 8)) + 2 * head


def test_training_memory_scales_with_batch_and_leaves_model_untouched():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 16 * 16, 10))
    x = torch.randn(1, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = measure_training_memory(model, x, 1)["saved_tensor_bytes"]
    large = measure_training_memory(model, x, 64)["saved_tensor_bytes"]
    activation = 16 * 16 * 16 * 4  # one float32 conv output map per input
    assert small > activation and large - small >= 63 * activation  # grows with the batch
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats restored
    assert all(p.grad is None for p in model.parameters())


def test_latency_is_positive():
    model = nn.Linear(8, 8)
    assert measure_latency(model, torch.zeros(1, 8), batch_size=4, repeats=3) > 0


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(32, 4)
        self.example_input_array = torch.zeros(1, 32)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        ds = torch.utils.data.TensorDataset(torch.randn(8, 32))
        return torch.utils.data.DataLoader(ds, batch_size=4)


class _HalfExport(pl.Callback):
    """A technique that exports fp16 weights overrides the exported form."""

    def export_state_dict(self, pl_module):
        return {k: v.half() for k, v in pl_module.state_dict().items()}


def test_report_tables_at_fit_start_and_end_and_export_override(tmp_path, capsys):
    report = EfficiencyReport(convention="all", batch_size=4, latency_repeats=2)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[report, _HalfExport()])
    trainer.fit(_Tiny())
    out = capsys.readouterr().out
    assert "Efficiency report (fit_start)" in out and "Efficiency report (fit_end)" in out
    assert report.end.params == 32 * 4 + 4
    assert report.end.macs == 32 * 4
    plain = EfficiencyReport().export_size(None, _Tiny())
    assert report.end.export_bytes < plain  # the fp16 export is smaller than the float32 state_dict
    assert report.end.checkpoint_bytes and report.end.checkpoint_bytes > 0


class _TinyConv(pl.LightningModule):
    """A conv net with BatchNorm (what breaks when the example input's dtype differs from the weights')."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        self.example_input_array = torch.zeros(1, 3, 8, 8)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).float().square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        ds = torch.utils.data.TensorDataset(torch.randn(8, 3, 8, 8))
        return torch.utils.data.DataLoader(ds, batch_size=4)


# on a CPU machine Lightning runs "16-mixed" as "bf16-mixed" (it warns); "16-true" covers float16 weights there
@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed", "16-mixed", "16-true"])
def test_report_under_reduced_precision(tmp_path, precision):
    report = EfficiencyReport(convention="all", batch_size=4, latency_repeats=1)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[report], precision=precision)
    model = _TinyConv()
    trainer.fit(model)
    if precision.endswith("-true"):  # the report ran on the reduced-precision weights
        assert next(model.parameters()).dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float16)
    # the counts are those of the float32 model: precision changes no MAC
    assert report.end.macs == count_macs(_TinyConv().net, torch.zeros(1, 3, 8, 8), "all")
    assert report.end.latency_batch1_s > 0 and report.end.latency_batch_s > 0
    assert report.end.saved_tensor_bytes > 0


def test_deployed_latency_is_onnxruntime_timed_and_reported(capsys):
    from callbacks.efficiency_report import format_table

    report = EfficiencyReport(convention="all", batch_size=4, latency_repeats=1, measure_memory=False,
                              deployed_latency=True, deployed_threads=1, deployed_repeats=3, deployed_warmup=1)
    model = _TinyConv().to(torch.bfloat16)  # as under precision="bf16-true": a float32 copy is exported
    numbers = report.measure(model)
    assert next(model.parameters()).dtype == torch.bfloat16 and model.training  # the model is left as it was
    assert numbers.deployed_threads == 1 and numbers.deployed_bytes > 4 * (8 * 3 * 9 + 8 * 4)  # float32 weights
    for median, (q25, q75) in ((numbers.deployed_latency_batch1_s, numbers.deployed_latency_iqr_batch1_s),
                               (numbers.deployed_latency_batch_s, numbers.deployed_latency_iqr_batch_s)):
        assert 0 < q25 <= median <= q75
    table = format_table(numbers)
    assert "onnxruntime CPU latency, batch 1, 1 thread" in table and "onnxruntime CPU latency, batch 4" in table
    # off by default: no ONNX row
    assert "onnxruntime" not in format_table(EfficiencyReport(latency_repeats=1, measure_memory=False).measure(model))


def test_time_calls_counts_and_orders_its_statistics():
    from callbacks.efficiency_report import time_calls

    calls = []
    stats = time_calls(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and stats["n"] == 5
    assert 0 <= stats["min"] <= stats["q25"] <= stats["median"] <= stats["q75"]
    with pytest.raises(ValueError, match="repeats"):
        time_calls(lambda: None, repeats=0)



DROPIN_DEPLOYED = '''
import sys
import torch
from efficiency_report import EfficiencyReport
from foreign_project import LitClassifier, MiniVGG

EfficiencyReport(convention="all")
assert "onnxruntime" not in sys.modules and "onnx" not in sys.modules, "imported without deployed_latency"
model = LitClassifier(MiniVGG(num_classes=10, widths=(8, 16)))
model.example_input_array = torch.zeros(1, 3, 16, 16)
report = EfficiencyReport(convention="all", batch_size=2, latency_repeats=1, measure_memory=False,
                          deployed_latency=True, deployed_repeats=2, deployed_warmup=1)
numbers = report.measure(model)
assert numbers.deployed_latency_batch1_s > 0 and numbers.deployed_latency_batch_s > 0 and numbers.deployed_bytes > 0
print("deployed ok", numbers.deployed_threads)
'''


@pytest.mark.slow  # a fresh interpreter plus an ONNX export: the in-process test above is the default tier's
def test_deployed_latency_works_with_the_file_copied_alone(tmp_path):
    from tests.dropin.foreign import run_python, write_project

    root = write_project(tmp_path, copy=["callbacks/efficiency_report.py"])
    proc = run_python(root, DROPIN_DEPLOYED, timeout=200)
    assert "deployed ok 1" in proc.stdout
