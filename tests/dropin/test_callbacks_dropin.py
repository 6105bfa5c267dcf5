"""The callbacks as drop-ins: each file copied ALONE into someone else's Lightning project.

Every scenario runs in a fresh interpreter in which this repository is not importable (tests/dropin/foreign.py):
the user's ``MiniVGG``/``LitClassifier``/``RandomImages`` and one copied callback file. Per callback: fit,
validate, test, a resume from a checkpoint (``ckpt_path``), and ``load_from_checkpoint`` in another fresh
process, each time checking the callback's defining property:

* L1FilterPruning removes exactly the smallest-L1 filters (and the next layer's matching input kernels);
* QuantizedTraining computes with weights on the grid at validation, two instances share one Trainer;
* LossLandscape leaves the weights bit-identical and its surface centre is the model's own loss;
* ChannelsLast trains with NHWC weights, and its checkpoints load into an ordinary NCHW model.

Default tier: one representative per callback; the precision x gradient-accumulation matrix is marked slow.
The tests after the matrices reproduce, one by one, the failures users met with the earlier versions.
"""

from __future__ import annotations

import ast
import json
import pathlib
import sys
from pathlib import Path

import pytest
import torch

from tests.dropin.foreign import REPO, run_python, write_project

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
MATRIX = [(p, a) for p in PRECISIONS for a in (1, 2)]

PRELUDE = '''
import json, math, os, sys, warnings
from pathlib import Path
import torch
import lightning as L
from torch.utils.data import DataLoader
from foreign_project import LitClassifier, MiniVGG, RandomImages

ROOT = Path.cwd()
ARGS = json.loads(Path("_args.json").read_text())
PRECISION, ACCUMULATE = ARGS["precision"], ARGS["accumulate"]


def trainer(callbacks=(), **kw):
    kw = {"max_epochs": 1, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
          "default_root_dir": str(ROOT), "accelerator": "cpu", "precision": PRECISION, **kw}
    return L.Trainer(callbacks=list(callbacks), **kw)


def save(name, value):
    Path(name).write_text(json.dumps(value))


def load(name):
    return json.loads(Path(name).read_text())
'''


def _run(root: Path, code: str, precision: str = "32-true", accumulate: int = 1, **args) -> str:
    (root / "_args.json").write_text(json.dumps({"precision": precision, "accumulate": accumulate, **args}))
    proc = run_python(root, PRELUDE + code, timeout=200)
    return proc.stdout + proc.stderr


# ================================================================================================ L1 pruning
L1_FIT = '''
from l1_filter_pruning import L1FilterPruning, l1_filter_norms

torch.manual_seed(0)
net = MiniVGG()
w0 = {n: net.get_submodule(n).weight.detach().clone() for n in ("features.0", "features.4", "features.8")}
ratios = {"features.0": 0.5, "features.4": 0.25}
expected = {}
for name, ratio in ratios.items():
    norms = l1_filter_norms(net.get_submodule(name))
    expected[name] = sorted(int(i) for i in torch.argsort(norms, stable=True)[: int(len(norms) * ratio)])

def kept(name):
    return [i for i in range(w0[name].shape[0]) if i not in expected[name]]

class Probe(L.Callback):  # the pruned weights before the first step: exactly the kept filters and kernels
    def on_train_start(self, trainer, lit):
        f0, f4, f8 = (lit.model.get_submodule(n).weight for n in ("features.0", "features.4", "features.8"))
        assert torch.equal(f0, w0["features.0"][kept("features.0")].to(f0.dtype))
        assert torch.equal(f4, w0["features.4"][kept("features.4")][:, kept("features.0")].to(f4.dtype))
        assert torch.equal(f8, w0["features.8"][:, kept("features.4")].to(f8.dtype))
        self.seen = True

def make_cb():
    return L1FilterPruning(ratios=ratios, example_input_shape=[1, 3, 32, 32])

dm = RandomImages()
lit = LitClassifier(net)
cb, probe = make_cb(), Probe()
t = trainer([cb, probe], accumulate_grad_batches=ACCUMULATE)
t.fit(lit, datamodule=dm)
assert probe.seen and cb.state["removed"] == expected, (cb.state["removed"], expected)
assert [lit.model.features[i].out_channels for i in (0, 4, 8)] == [8, 24, 64]
assert lit.model.features[1].num_features == 8 and lit.model.features[4].in_channels == 8
val = t.validate(lit, datamodule=dm, verbose=False)[0]
test = t.test(lit, datamodule=dm, verbose=False)[0]
ckpt = t.checkpoint_callback.best_model_path

# the callback in the Trainer: a fresh (unpruned) module validates the pruned checkpoint
again = trainer([make_cb()]).validate(LitClassifier(MiniVGG()), datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
assert math.isclose(again["val_loss"], val["val_loss"], rel_tol=1e-6), (again, val)
# resume: another init, pruned structure and callback state from the checkpoint, never pruned twice
torch.manual_seed(99)
cb2 = make_cb()
t2 = trainer([cb2], max_epochs=2, accumulate_grad_batches=ACCUMULATE,
             default_root_dir=str(ROOT / "resumed"))
resumed = LitClassifier(MiniVGG())
t2.fit(resumed, datamodule=dm, ckpt_path=ckpt)
assert t2.global_step == 2 * t.global_step > 0, (t.global_step, t2.global_step)
assert cb2.state["removed"] == expected and resumed.model.features[0].out_channels == 8
save("l1.json", {"ckpt": ckpt, "val": val["val_loss"], "test": test["test_loss"]})
print("L1 OK")
'''

L1_LOAD = '''
from l1_filter_pruning import rebuild_pruned_model, restore_pruned_widths

saved = load("l1.json")

class Lit(LitClassifier):  # the documented one-liner
    def on_load_checkpoint(self, checkpoint):
        restore_pruned_widths(self, checkpoint)

lit = Lit.load_from_checkpoint(saved["ckpt"], model=MiniVGG())
assert lit.model.features[0].out_channels == 8 and lit.model.features[4].in_channels == 8
dm = RandomImages()
val = trainer().validate(lit, datamodule=dm, verbose=False)[0]  # no callback anywhere
assert math.isclose(val["val_loss"], saved["val"], rel_tol=1e-6), (val, saved)
test = trainer().test(Lit(MiniVGG()), datamodule=dm, ckpt_path=saved["ckpt"], verbose=False)[0]
assert math.isclose(test["test_loss"], saved["test"], rel_tol=1e-6), (test, saved)
# the plain net, without the LightningModule: same outputs
net = rebuild_pruned_model(MiniVGG(), saved["ckpt"]).eval()
x = torch.randn(4, 3, 32, 32)
with torch.no_grad():
    assert torch.equal(net(x), lit.model.float().eval()(x))
print("L1 LOAD OK")
'''


def _l1(tmp_path: Path, precision: str, accumulate: int) -> None:
    root = write_project(tmp_path, copy=["callbacks/l1_filter_pruning.py"])
    assert "L1 OK" in _run(root, L1_FIT, precision, accumulate)
    assert "L1 LOAD OK" in _run(root, L1_LOAD, precision, accumulate)


def test_l1_filter_pruning_dropin(tmp_path):
    _l1(tmp_path, "32-true", 2)


@pytest.mark.slow
@pytest.mark.parametrize("precision,accumulate", MATRIX)
def test_l1_filter_pruning_dropin_matrix(tmp_path, precision, accumulate):
    _l1(tmp_path, precision, accumulate)


# ================================================================================================ quantized training
QT_FIT = '''
from quantized_training import QuantizedTraining, load_export

def make_cbs(export=None):  # binary convs (BC, per-layer scale) and an 8-bit linear (R) in one Trainer
    convs = QuantizedTraining(method="bc", grid="binary", scale="per_layer", layers=["model.features.*"],
                              export_path=export)
    linear = QuantizedTraining(method="r", grid="uniform", bits=8, delta=127 / 128, layers=["model.classifier"])
    return convs, linear

class OnGrid(L.Callback):  # the weights each layer computes with during validation
    def on_validation_start(self, trainer, lit):
        self.handles, self.checked = [], 0
        for name, m in lit.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                self.handles.append(m.register_forward_pre_hook(lambda m, a, name=name: self.check(name, m)))

    def check(self, name, m):
        w = m.weight.detach()
        if name == "model.classifier":  # step 1/128, |q| <= 127
            assert torch.equal(w.float() * 128, (w.float() * 128).round()) and w.abs().max() <= 127 / 128, name
        else:
            d = self.convs.layers[name].grid.step / 2
            allowed = torch.tensor([-d, d], dtype=w.dtype)
            assert torch.isin(w, allowed).all(), (name, w.unique()[:5], allowed)
        self.checked += 1

    def on_validation_end(self, trainer, lit):
        for h in self.handles:
            h.remove()

torch.manual_seed(0)
dm = RandomImages()
lit = LitClassifier(MiniVGG())
convs, linear = make_cbs(export=str(ROOT / "export.pt"))
probe = OnGrid()
probe.convs = convs
t = trainer([convs, linear, probe], max_epochs=2, accumulate_grad_batches=ACCUMULATE)
t.fit(lit, datamodule=dm)
assert probe.checked > 0 and convs.state_key != linear.state_key
assert len(lit.model.features[0].weight.unique()) > 2  # BC keeps the float buffer
val = t.validate(lit, datamodule=dm, verbose=False)[0]
test = t.test(lit, datamodule=dm, verbose=False)[0]
ckpt = t.checkpoint_callback.best_model_path
states = torch.load(ckpt, weights_only=True)["callbacks"]
assert {convs.state_key, linear.state_key} <= set(states)

# the export loads into the plain net and gives the quantized model's validation loss
net = load_export(MiniVGG(), ROOT / "export.pt")
assert set(net.features[0].weight.unique().tolist()) <= {-convs.layers["model.features.0"].grid.step / 2,
                                                           convs.layers["model.features.0"].grid.step / 2}
plain = trainer().validate(LitClassifier(net), datamodule=dm, verbose=False)[0]
if PRECISION == "32-true":
    assert math.isclose(plain["val_loss"], val["val_loss"], rel_tol=1e-5), (plain, val)

# resume: both instances get their own state back (BC's per-layer scales are the saved ones, not recomputed)
torch.manual_seed(5)
convs2, linear2 = make_cbs()
probe2 = OnGrid()
probe2.convs = convs2
t2 = trainer([convs2, linear2, probe2], max_epochs=3, accumulate_grad_batches=ACCUMULATE,
             default_root_dir=str(ROOT / "resumed"))
t2.fit(LitClassifier(MiniVGG()), datamodule=dm, ckpt_path=ckpt)
saved = states[convs.state_key]["layer_grids"]
assert {n: l.grid.step for n, l in convs2.layers.items()} == {n: g["step"] for n, g in saved.items()}
assert list(linear2.layers) == ["model.classifier"] and probe2.checked > 0
save("qt.json", {"ckpt": ckpt, "val": val["val_loss"], "test": test["test_loss"]})
print("QT OK")
'''

QT_LOAD = '''
from quantized_training import QuantizedTraining

saved = load("qt.json")
lit = LitClassifier.load_from_checkpoint(saved["ckpt"], model=MiniVGG())
convs = QuantizedTraining(method="bc", grid="binary", scale="per_layer", layers=["model.features.*"])
linear = QuantizedTraining(method="r", grid="uniform", bits=8, delta=127 / 128, layers=["model.classifier"])
dm = RandomImages()
# the float buffers of the checkpoint with the callbacks: the per-layer scales come from the checkpoint
val = trainer([convs, linear]).validate(lit, datamodule=dm, ckpt_path=saved["ckpt"], verbose=False)[0]
test = trainer([convs, linear]).test(lit, datamodule=dm, verbose=False)[0]
if PRECISION == "32-true":
    assert math.isclose(test["test_loss"], saved["test"], rel_tol=1e-5), (test, saved)
print("QT LOAD OK")
'''


def _qt(tmp_path: Path, precision: str, accumulate: int) -> None:
    root = write_project(tmp_path, copy=["callbacks/quantized_training.py"])
    assert "QT OK" in _run(root, QT_FIT, precision, accumulate)
    assert "QT LOAD OK" in _run(root, QT_LOAD, precision, accumulate)


def test_quantized_training_dropin(tmp_path):
    _qt(tmp_path, "32-true", 1)


@pytest.mark.slow
@pytest.mark.parametrize("precision,accumulate", MATRIX)
def test_quantized_training_dropin_matrix(tmp_path, precision, accumulate):
    _qt(tmp_path, precision, accumulate)


# ================================================================================================ loss landscape
LL_FIT = '''
from loss_landscape import LandscapeError, LossLandscape, make_eval_data, evaluate

class Snapshot(L.Callback):  # the weights just before the landscape runs (it is later in the callback list)
    def on_train_end(self, trainer, lit):
        self.state = {k: v.detach().clone() for k, v in lit.state_dict().items()}

def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

torch.manual_seed(0)
dm = RandomImages()  # a standard DataModule: splits built in setup(), no train_set attribute
lit = LitClassifier(MiniVGG())
snap = Snapshot()
cb = LossLandscape(x_grid="-0.5:0.5:5", max_samples=32, plot=ARGS["plot"])
t = trainer([snap, cb], accumulate_grad_batches=ACCUMULATE)
t.fit(lit, datamodule=dm)
assert same(snap.state, {k: v for k, v in lit.state_dict().items()}), "the landscape changed the weights"
out = cb.last_out_dir
files = sorted(p.name for p in out.iterdir())
assert "surface_1d.npz" in files and ("surface_1d.png" in files) == bool(ARGS["pngs"]), files
import numpy as np
s1 = np.load(out / "surface_1d.npz")
assert s1["loss"][2] == cb.summary["center_loss"]  # x = 0 is the model itself

# validate (landscape at validate end, on the DataModule's train_dataloader()), test, resume
before = {k: v.detach().clone() for k, v in lit.state_dict().items()}
val = t.validate(lit, datamodule=dm, verbose=False)[0]
assert same(before, lit.state_dict()) and cb.summary["stage"] == "validate"
t.test(lit, datamodule=dm, verbose=False)
ckpt = t.checkpoint_callback.best_model_path
cb2 = LossLandscape(x_grid="-0.5:0.5:3", split="val", plot=False)
t2 = trainer([cb2], max_epochs=2, accumulate_grad_batches=ACCUMULATE,
             default_root_dir=str(ROOT / "resumed"))
t2.fit(LitClassifier(MiniVGG()), datamodule=dm, ckpt_path=ckpt)
assert cb2.summary["global_step"] == t2.global_step == 2 * t.global_step
save("ll.json", {"ckpt": ckpt, "val": val["val_loss"]})
print("LL OK")
'''

LL_LOAD = '''
from loss_landscape import LossLandscape

saved = load("ll.json")
lit = LitClassifier.load_from_checkpoint(saved["ckpt"], model=MiniVGG())
dm = RandomImages()
dm.setup()
val_loader = DataLoader(dm.val_data, batch_size=16)
# plain DataLoaders, no DataModule: the centre of the surface is the model's own validation loss
cb = LossLandscape(x_grid="-1:1:3", split="val", plot=False)
val = trainer([cb]).validate(lit, dataloaders=val_loader, verbose=False)[0]
if PRECISION == "32-true":
    assert math.isclose(cb.summary["center_loss"], val["val_loss"], rel_tol=1e-5), (cb.summary, val)
    assert math.isclose(val["val_loss"], saved["val"], rel_tol=1e-6)
# an explicit dataset
cb = LossLandscape(x_grid="-1:1:3", data=dm.test_data, plot=False)
trainer([cb]).validate(lit, dataloaders=val_loader, verbose=False)
assert cb.summary["num_samples"] == len(dm.test_data)
print("LL LOAD OK")
'''


def _ll(tmp_path: Path, precision: str, accumulate: int, plots: bool = False, reload: bool = True) -> None:
    copy = ["callbacks/loss_landscape.py"] + (["callbacks/loss_landscape_plots.py"] if plots else [])
    root = write_project(tmp_path, copy=copy)
    out = _run(root, LL_FIT, precision, accumulate, plot=True if plots else None, pngs=plots)
    assert "LL OK" in out
    if reload:
        assert "LL LOAD OK" in _run(root, LL_LOAD, precision, accumulate)


def test_loss_landscape_dropin_alone_saves_npz_and_says_why_no_pngs(tmp_path):
    root = write_project(tmp_path, copy=["callbacks/loss_landscape.py"])
    out = _run(root, LL_FIT, "bf16-mixed", 2, plot=None, pngs=False)
    assert "LL OK" in out and "no PNG plots: they need loss_landscape_plots.py" in out
    assert "LL LOAD OK" in _run(root, LL_LOAD, "bf16-mixed", 2)


@pytest.mark.slow
@pytest.mark.parametrize("precision,accumulate", MATRIX)
def test_loss_landscape_dropin_matrix(tmp_path, precision, accumulate):
    _ll(tmp_path, precision, accumulate, plots=precision == "32-true")


LL_EARLY = '''
from loss_landscape import LandscapeError, LossLandscape

class Steps(L.Callback):
    steps = 0
    def on_train_batch_end(self, *args):
        Steps.steps += 1

def refused(cb, **fit):
    try:
        trainer([cb, Steps()], max_epochs=5).fit(LitClassifier(MiniVGG()), **fit)
    except LandscapeError as err:
        assert Steps.steps == 0, "refused only after training"
        return str(err)
    raise AssertionError("not refused")

dm = RandomImages()
msgs = [refused(LossLandscape(plot=True), datamodule=dm)]
if ARGS["block_scipy"]:
    sys.modules["scipy"] = None  # as if scipy were not installed
    msgs.append(refused(LossLandscape(hessian_grid="-1:1:3", plot=False), datamodule=dm))
dm.setup()
msgs.append(refused(LossLandscape(split="test", plot=False), train_dataloaders=DataLoader(dm.train_data)))
save("early.json", msgs)
'''


def test_loss_landscape_refuses_at_fit_start_naming_what_is_missing(tmp_path):
    """Missing plots file (plot=True), missing scipy (hessian_grid) and a split the run does not have: each is
    refused before the first training step, and the message names the file/package and the argument."""
    root = write_project(tmp_path, copy=["callbacks/loss_landscape.py"])
    _run(root, LL_EARLY, block_scipy=True)
    plots, scipy, split = json.loads((root / "early.json").read_text())
    assert "loss_landscape_plots.py" in plots and "plot=False" in plots
    assert "scipy" in scipy and "hessian_grid" in scipy
    assert "split='test'" in split and "data=" in split


def test_loss_landscape_with_the_plots_file_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    _ll(tmp_path, "32-true", 1, plots=True, reload=False)  # plot=True: the plots file is required and used


# ================================================================================================ channels last
CL_FIT = '''
from channels_last import ChannelsLast

class NHWC(L.Callback):
    batches = 0
    def on_train_batch_end(self, trainer, lit, *args):
        for n, p in lit.named_parameters():
            if p.dim() == 4:
                assert p.is_contiguous(memory_format=torch.channels_last), n
        NHWC.batches += 1

def run(callbacks, seed=0):
    torch.manual_seed(seed)
    lit = LitClassifier(MiniVGG())
    t = trainer(callbacks, accumulate_grad_batches=ACCUMULATE)
    t.fit(lit, datamodule=RandomImages())
    return t, lit

dm = RandomImages()
t, lit = run([ChannelsLast(), NHWC()])
assert NHWC.batches > 0
_, plain = run([])
for (n, a), b in zip(lit.state_dict().items(), plain.state_dict().values()):
    tol = 1e-4 if PRECISION == "32-true" else 5e-2
    assert torch.allclose(a.float(), b.float(), atol=tol), n  # the same training, in another memory layout
val = t.validate(lit, datamodule=dm, verbose=False)[0]
t.test(lit, datamodule=dm, verbose=False)
ckpt = t.checkpoint_callback.best_model_path
t2 = trainer([ChannelsLast(), NHWC()], max_epochs=2, accumulate_grad_batches=ACCUMULATE,
             default_root_dir=str(ROOT / "resumed"))
t2.fit(LitClassifier(MiniVGG()), datamodule=dm, ckpt_path=ckpt)
assert t2.global_step == 2 * t.global_step
save("cl.json", {"ckpt": ckpt, "val": val["val_loss"]})
print("CL OK")
'''

CL_LOAD = '''
import importlib.util  # the user's interpreter: this repository is not importable, the copied file is
assert all(importlib.util.find_spec(n) is None for n in ("callbacks", "modules", "nets", "datamodules", "main"))
assert importlib.util.find_spec("channels_last").origin == str(ROOT / "channels_last.py")
saved = load("cl.json")
lit = LitClassifier.load_from_checkpoint(saved["ckpt"], model=MiniVGG())  # an ordinary NCHW model
assert all(p.is_contiguous() for p in lit.parameters())
val = trainer().validate(lit, datamodule=RandomImages(), verbose=False)[0]
tol = 1e-4 if PRECISION == "32-true" else 2e-2  # NHWC and NCHW kernels round differently
assert math.isclose(val["val_loss"], saved["val"], rel_tol=tol, abs_tol=tol), (val, saved)
print("CL LOAD OK")
'''


def _cl(tmp_path: Path, precision: str, accumulate: int) -> None:
    root = write_project(tmp_path, copy=["callbacks/channels_last.py"])
    assert "CL OK" in _run(root, CL_FIT, precision, accumulate)
    assert "CL LOAD OK" in _run(root, CL_LOAD, precision, accumulate)


def test_channels_last_dropin(tmp_path):
    _cl(tmp_path, "bf16-mixed", 1)


@pytest.mark.slow
@pytest.mark.parametrize("precision,accumulate", MATRIX)
def test_channels_last_dropin_matrix(tmp_path, precision, accumulate):
    _cl(tmp_path, precision, accumulate)


# ================================================================================================ the reported failures
def _foreign(tmp_path: Path):
    """The foreign project imported in this process (for the quick reproductions below)."""
    root = write_project(tmp_path / "project")
    sys.path.insert(0, str(root))
    try:
        import importlib

        sys.modules.pop("foreign_project", None)
        return importlib.import_module("foreign_project")
    finally:
        sys.path.remove(str(root))


def _trainer(tmp_path: Path, callbacks=(), **kw):
    import lightning.pytorch as pl

    kw = {"max_epochs": 1, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
          "default_root_dir": str(tmp_path), "accelerator": "cpu", **kw}
    return pl.Trainer(callbacks=list(callbacks), **kw)


def test_landscape_on_plain_dataloaders_and_a_standard_datamodule(tmp_path):
    from torch.utils.data import DataLoader

    from callbacks.loss_landscape import LossLandscape

    fp = _foreign(tmp_path)
    dm = fp.RandomImages(n=32)
    cb = LossLandscape(x_grid="-1:1:3", plot=False)
    _trainer(tmp_path, [cb]).fit(fp.LitClassifier(fp.MiniVGG()), datamodule=dm)  # was: "no 'train_set'"
    assert cb.summary["num_samples"] == 32 and "RandomImages.train_dataloader()" in cb._source[0]
    dm.setup()
    cb = LossLandscape(x_grid="-1:1:3", plot=False)  # was: "needs a LightningDataModule"
    _trainer(tmp_path, [cb]).fit(fp.LitClassifier(fp.MiniVGG()), DataLoader(dm.train_data, batch_size=8,
                                                                             shuffle=True))
    assert cb.summary["num_samples"] == 32 and cb._source[0] == "trainer.train_dataloader"


def test_pruned_checkpoint_loads_into_the_users_module_and_plain_net(tmp_path):
    from callbacks.l1_filter_pruning import L1FilterPruning, rebuild_pruned_model, restore_pruned_widths

    fp = _foreign(tmp_path)
    dm = fp.RandomImages(n=32)
    lit = fp.LitClassifier(fp.MiniVGG())
    t = _trainer(tmp_path, [L1FilterPruning(ratios={"features.4": 0.5}, example_input_shape=[1, 3, 32, 32])])
    with pytest.warns(UserWarning, match=r"restore_pruned_widths\(self, checkpoint\)"):
        t.fit(lit, datamodule=dm)
    ckpt = t.checkpoint_callback.best_model_path
    with pytest.raises(RuntimeError, match="size mismatch"):  # what the warning above explains
        fp.LitClassifier.load_from_checkpoint(ckpt, model=fp.MiniVGG())

    class Lit(fp.LitClassifier):
        def on_load_checkpoint(self, checkpoint):
            restore_pruned_widths(self, checkpoint)

    loaded = Lit.load_from_checkpoint(ckpt, model=fp.MiniVGG())
    assert loaded.model.features[4].out_channels == 16 and loaded.model.features[8].in_channels == 16
    _trainer(tmp_path).validate(Lit(fp.MiniVGG()), datamodule=dm, ckpt_path=ckpt, verbose=False)
    net = rebuild_pruned_model(fp.MiniVGG(), ckpt)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), lit.model.state_dict().values()))
    assert not restore_pruned_widths(fp.MiniVGG(), {"state_dict": {}})  # not a pruning checkpoint: no-op


def test_load_export_into_the_plain_net_and_the_lightning_module(tmp_path):
    from callbacks.quantized_training import QuantizedTraining, load_export

    fp = _foreign(tmp_path)
    lit = fp.LitClassifier(fp.MiniVGG())
    cb = QuantizedTraining(method="bc", export_path=str(tmp_path / "q.pt"))
    _trainer(tmp_path, [cb]).fit(lit, datamodule=fp.RandomImages(n=32))
    net = load_export(fp.MiniVGG(), tmp_path / "q.pt")  # was: unexpected keys "model.features.0.weight"...
    assert set(net.features[0].weight.unique().tolist()) == {-1.0, 1.0}
    lit2 = load_export(fp.LitClassifier(fp.MiniVGG()), tmp_path / "q.pt")
    assert torch.equal(lit2.model.classifier.weight, net.classifier.weight)
    load_export(net, cb.export_state_dict(fp.LitClassifier(net)))  # the dict works too


def test_two_quantized_training_instances_keep_their_own_state_and_overlaps_are_refused(tmp_path):
    from callbacks.quantized_training import QuantizedTraining

    fp = _foreign(tmp_path)
    a = QuantizedTraining(method="bc", layers=["model.features.*"])
    b = QuantizedTraining(method="r", grid="uniform", bits=8, layers=["model.classifier"])
    assert a.state_key != b.state_key  # was: both "QuantizedTraining", one state lost on save
    t = _trainer(tmp_path, [a, b])
    t.fit(fp.LitClassifier(fp.MiniVGG()), datamodule=fp.RandomImages(n=32))
    ckpt = torch.load(t.checkpoint_callback.best_model_path, weights_only=True)
    assert ckpt["callbacks"][a.state_key]["layers"] == ["model.features.0", "model.features.4", "model.features.8"]
    assert ckpt["callbacks"][b.state_key]["layers"] == ["model.classifier"]
    both = _trainer(tmp_path, [QuantizedTraining(method="bc"), QuantizedTraining(method="r", layers=["*classifier"])])
    with pytest.raises(ValueError, match="both quantize model.classifier.*layers / exclude"):
        both.fit(fp.LitClassifier(fp.MiniVGG()), datamodule=fp.RandomImages(n=32))
    # a checkpoint written under the old constant key still resumes a single instance
    ckpt["callbacks"] = {"QuantizedTraining": ckpt["callbacks"][a.state_key]}
    torch.save(ckpt, tmp_path / "old.ckpt")
    c = QuantizedTraining(method="bc", layers=["model.features.*"], scale="per_layer")
    with pytest.raises(ValueError, match="other quantization settings.*scale"):
        _trainer(tmp_path, [c], max_epochs=2).fit(fp.LitClassifier(fp.MiniVGG()), datamodule=fp.RandomImages(n=32),
                                                  ckpt_path=tmp_path / "old.ckpt")


def _string_constants(node: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


OWNED = ["callbacks/l1_filter_pruning.py", "callbacks/loss_landscape.py", "callbacks/loss_landscape_plots.py",
         "callbacks/quantized_training.py", "callbacks/channels_last.py"]


@pytest.mark.parametrize("path", OWNED)
def test_messages_name_arguments_not_this_projects_concepts(path):
    """Everything a callback raises, warns or prints makes sense in someone else's project."""
    tree = ast.parse((REPO / path).read_text())
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            texts.append(_string_constants(node.exc))
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("warn", "rank_zero_warn", "rank_zero_info", "print", "PruningError", "LandscapeError"):
                texts.append(_string_constants(node))
    text = " ".join(texts)
    for banned in ("main.py", "init_from", "docs/README.md", "recipe", "--ckpt_path", "net_kwargs) the"):
        assert banned not in text, f"{path}: a message mentions {banned!r}"


@pytest.mark.parametrize("path", OWNED)
def test_every_torch_load_is_weights_only_unless_the_caller_trusts_the_file(path):
    tree = ast.parse((REPO / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and getattr(
                node.func.value, "id", None) == "torch":
            kw = {k.arg: k.value for k in node.keywords}
            value = kw.get("weights_only")
            assert value is not None, f"{path}:{node.lineno}: torch.load without weights_only"
            if isinstance(value, ast.Constant) and value.value is False:
                src = ast.get_source_segment((REPO / path).read_text(), node)
                assert src is not None  # a literal False only in the branch of an explicit trust argument
                lines = (REPO / path).read_text().splitlines()[max(0, node.lineno - 4):node.lineno]
                assert any("trust" in line for line in lines), f"{path}:{node.lineno}: weights_only=False"


def test_untrusted_files_are_refused_with_the_path_the_object_and_the_opt_in(tmp_path):
    from callbacks.l1_filter_pruning import L1FilterPruning, PruningError, rebuild_pruned_model
    from callbacks.loss_landscape import LandscapeError, load_state_dict_file
    from callbacks.quantized_training import QuantizedTraining, load_export

    fp = _foreign(tmp_path)
    lit = fp.LitClassifier(fp.MiniVGG())
    t = _trainer(tmp_path, [L1FilterPruning(ratios={"features.0": 0.5}, example_input_shape=[1, 3, 32, 32])])
    t.fit(lit, datamodule=fp.RandomImages(n=16))
    ckpt = torch.load(t.checkpoint_callback.best_model_path, weights_only=True)
    ckpt["made_by"] = pathlib.PurePosixPath("/somewhere")  # any object outside torch's safe list
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(PruningError, match=rf"{bad}.*pathlib.PurePosixPath.*trust_checkpoint=True"):
        rebuild_pruned_model(fp.MiniVGG(), bad)
    rebuild_pruned_model(fp.MiniVGG(), bad, trust_checkpoint=True)
    targets = dict(lit.named_parameters())
    with pytest.raises(LandscapeError, match=rf"{bad}.*pathlib.PurePosixPath.*trust_checkpoint=True"):
        load_state_dict_file(bad, targets)
    assert load_state_dict_file(bad, targets, trust_checkpoint=True).keys() == targets.keys()
    export = QuantizedTraining(method="bc").export_state_dict(lit)
    export["note"] = pathlib.PurePosixPath("/x")
    torch.save(export, tmp_path / "q.pt")
    with pytest.raises(ValueError, match=r"q.pt.*pathlib.PurePosixPath.*trust_file=True"):
        load_export(fp.MiniVGG(), tmp_path / "q.pt")
