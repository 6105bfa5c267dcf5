"""The LightningModules in someone else's project: ``modules/`` + ``nets/`` copied into a foreign mini-project
(tests/dropin/foreign.py: its own MiniVGG, torchvision's resnet18, its own random-tensor DataModule), run where
this repository is not importable.

For the image classifier, DiSK (with accumulation), the selective classifier, DCL and the hybrid router: the nets
are passed as ``nn.Module`` objects, the module fits, validates, tests, resumes from a checkpoint, and a fresh
process rebuilds it with ``load_from_checkpoint`` (nets passed again) to the same outputs. A checkpoint of a
filter-pruned MiniVGG loads there without the pruning callback. In-process tests check the defining properties
(accumulation = the larger batch, ``test/`` = ``val/`` selective metrics on the same data, weights-only teacher and
student checkpoints, class_path descriptions in the hyperparameters) and the error messages.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modules.disk import DiSK, TeacherCheckpointError
from modules.image_classifier import ImageClassifier
from modules.selective_classifier import SelectiveClassifier
from tests.dropin.foreign import REPO, run_python, write_project

FOREIGN_WORDS = ("main.py", "recipe", "init_from", "REFERENCE")


def _project(root: Path) -> Path:
    write_project(root)
    for pkg in ("modules", "nets"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _foreign(root: Path):
    """The foreign project's module, imported here from its file (to build its nets in this process)."""
    spec = importlib.util.spec_from_file_location("foreign_project_here", root / "foreign_project.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trainer(root: Path, epochs: int = 1, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=str(root),
                      accelerator="cpu", devices=1, **kwargs)


def _write_pruned_checkpoint(root: Path) -> None:
    """An ImageClassifier on the user's MiniVGG, L1-pruned by the callback and trained one epoch; its outputs."""
    from callbacks.l1_filter_pruning import L1FilterPruning

    foreign = _foreign(root)
    pl.seed_everything(0)
    dm = foreign.RandomImages(n=16, num_classes=4, size=16, batch_size=8)
    model = ImageClassifier(net=foreign.MiniVGG(num_classes=4, widths=(8, 16, 16)), num_classes=4,
                            input_shape=(3, 16, 16), log_images=False)
    trainer = _trainer(root, callbacks=[L1FilterPruning(ratios={"features.0": 0.5, "features.4": 0.5})])
    trainer.fit(model, dm)
    assert model.net.features[0].out_channels == 4 and model.net.features[4].out_channels == 8
    trainer.save_checkpoint(root / "pruned.ckpt")
    val = trainer.validate(model, dm, verbose=False)[0]
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model.eval()(x)
    torch.save({"logits": logits, "val_loss": torch.tensor(val["val/loss"])}, root / "pruned_expected.pt")


FIT = '''
import os
import time
import torch
import lightning as L
import modules, nets
root = os.getcwd()
assert os.path.dirname(modules.__file__) == os.path.join(root, "modules"), modules.__file__
assert os.path.dirname(nets.__file__) == os.path.join(root, "nets"), nets.__file__
from foreign_project import MiniVGG, RandomImages, resnet18
from modules.image_classifier import ImageClassifier
from modules.disk import DiSK
from modules.selective_classifier import SelectiveClassifier
from modules.dcl import DCLClassifier
from modules.hybrid_router import HybridModel

SHAPE = dict(num_classes=4, input_shape=(3, 16, 16))
MAKE = {
    "image_classifier": lambda: ImageClassifier(net=resnet18(num_classes=4), log_images=False, **SHAPE),
    "disk": lambda: DiSK(student=MiniVGG(4, (8, 16)), teacher=resnet18(num_classes=4), method="disk", topk=2,
                         guide_warmup=1, student_epochs=1, guide_epochs=1, guide_width=16,
                         accumulate_grad_batches=2, **SHAPE),
    "selective": lambda: SelectiveClassifier(net=MiniVGG(4, (8, 16)), method="osp", **SHAPE),
    "dcl": lambda: DCLClassifier(net=MiniVGG(4, (8, 16)), constraints={"worst_class_loss": {"eps": 0.5}},
                                 log_images=False, **SHAPE),
    "hybrid": lambda: HybridModel(edge=MiniVGG(4, (8, 16)), cloud=MiniVGG(4, (16, 16)), router_hidden=(16, 8),
                                  router_topk=3, eval_coverages=(0.5,), **SHAPE),
}
ONLY = None

def trainer(epochs):
    return L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=root)

x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
expected = {}
for name, make in MAKE.items():
    if ONLY and name not in ONLY:
        continue
    start = time.time()
    L.seed_everything(0)
    dm = RandomImages(n=8, num_classes=4, size=16, batch_size=4)
    model = make()
    t = trainer(1)
    t.fit(model, dm)
    t.save_checkpoint(f"{name}.ckpt")
    ckpt = torch.load(f"{name}.ckpt", weights_only=True)  # nothing but tensors and plain containers
    assert not any(isinstance(v, torch.nn.Module) for v in ckpt["hyper_parameters"].values()), name
    val = t.validate(model, dm, verbose=False)[0]
    test = t.test(model, dm, verbose=False)[0]
    assert any(k.startswith("val/") for k in val) and any(k.startswith("test/") for k in test), (name, val, test)
    resumed = make()
    t2 = trainer(2)
    t2.fit(resumed, dm, ckpt_path=f"{name}.ckpt", weights_only=True)
    assert resumed.current_epoch == 2 and t2.global_step > t.global_step, (name, t.global_step, t2.global_step)
    t2.save_checkpoint(f"{name}_resumed.ckpt")
    with torch.no_grad():
        out = resumed.eval()(x)
    expected[name] = out[0] if isinstance(out, tuple) else out
    print(name, f"{time.time() - start:.1f}s", "steps", t.global_step, t2.global_step, "val", sorted(val)[:3], "test", sorted(test)[:3])
torch.save(expected, "expected.pt")
'''

LOAD = '''
import os
import torch
import lightning as L
import modules
assert os.path.dirname(modules.__file__) == os.path.join(os.getcwd(), "modules"), modules.__file__
from foreign_project import MiniVGG, RandomImages, resnet18
from modules.image_classifier import ImageClassifier
from modules.disk import DiSK
from modules.selective_classifier import SelectiveClassifier
from modules.dcl import DCLClassifier
from modules.hybrid_router import HybridModel

NETS = {
    "image_classifier": (ImageClassifier, lambda: dict(net=resnet18(num_classes=4))),
    "disk": (DiSK, lambda: dict(student=MiniVGG(4, (8, 16)), teacher=resnet18(num_classes=4))),
    "selective": (SelectiveClassifier, lambda: dict(net=MiniVGG(4, (8, 16)))),
    "dcl": (DCLClassifier, lambda: dict(net=MiniVGG(4, (8, 16)))),
    "hybrid": (HybridModel, lambda: dict(edge=MiniVGG(4, (8, 16)), cloud=MiniVGG(4, (16, 16)))),
}
x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
expected = torch.load("expected.pt", weights_only=True)
for name, want in expected.items():
    cls, nets = NETS[name]
    model = cls.load_from_checkpoint(f"{name}_resumed.ckpt", **nets()).eval()
    with torch.no_grad():
        out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6, msg=name)
    print(name, "reloaded")

# without the net again: one clear paragraph naming the argument
try:
    ImageClassifier.load_from_checkpoint("image_classifier_resumed.ckpt")
except ValueError as err:
    msg = str(err)
    assert "net=" in msg and "load_from_checkpoint" in msg and "\\n" not in msg, msg
    assert not any(w in msg for w in ("main.py", "recipe", "init_from", "REFERENCE")), msg
else:
    raise AssertionError("loading without the net should fail")

# a filter-pruned MiniVGG, without the pruning callback (not even importable here)
import importlib.util
assert importlib.util.find_spec("callbacks") is None
pruned = torch.load("pruned_expected.pt", weights_only=True)
model = ImageClassifier.load_from_checkpoint("pruned.ckpt", net=MiniVGG(4, (8, 16, 16))).eval()
assert model.net.features[0].out_channels == 4 and model.net.features[4].out_channels == 8
with torch.no_grad():
    torch.testing.assert_close(model(x), pruned["logits"], rtol=1e-5, atol=1e-6)
fresh = ImageClassifier(net=MiniVGG(4, (8, 16, 16)), num_classes=4, input_shape=(3, 16, 16), log_images=False)
trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=".")
val = trainer.validate(fresh, RandomImages(n=16, num_classes=4, size=16, batch_size=8), ckpt_path="pruned.ckpt",
                       weights_only=True, verbose=False)[0]
assert abs(val["val/loss"] - float(pruned["val_loss"])) < 1e-5, (val, pruned)
print("pruned reloaded")
'''


def test_modules_fit_resume_and_reload_in_a_foreign_project(tmp_path):
    """The modules/ + nets/ copy is the whole unit: nets passed as nn.Modules fit, validate, test and resume, a
    fresh process reloads every module with load_from_checkpoint (and the pruned checkpoint without the
    callback). Fails on the old code: ``'MiniVGG' object has no attribute 'startswith'``."""
    root = _project(tmp_path / "proj")
    _write_pruned_checkpoint(root)
    print(run_python(root, FIT, timeout=200).stdout)
    print(run_python(root, LOAD, timeout=120).stdout)


# ---------------------------------------------------------------------------------------------- in process
def _plain_net(num_classes: int = 4, width: int = 6, seed: int = 0) -> nn.Module:
    """A BatchNorm-free net, so a batch split in two gives exactly the same gradients."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def _images(n: int = 32, classes: int = 4, size: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % classes)


def _disk(accumulate: int, **kwargs) -> DiSK:
    return DiSK(student=_plain_net(seed=1), teacher=_plain_net(width=8, seed=2), num_classes=4,
                input_shape=(3, 8, 8), method="kd", accumulate_grad_batches=accumulate,
                optimizer=lambda p: torch.optim.SGD(p, lr=0.5), **kwargs)


def test_disk_accumulation_equals_the_larger_batch(tmp_path):
    """DiSK (manual optimisation) with accumulate_grad_batches=2 on batches of 4 takes the same optimizer steps
    as batches of 8 without accumulation; batches of 4 without it do not."""
    data = _images()

    def fit(batch: int, accumulate: int) -> tuple[dict[str, torch.Tensor], int]:
        model = _disk(accumulate)
        trainer = _trainer(tmp_path, limit_val_batches=0)
        trainer.fit(model, DataLoader(data, batch_size=batch))
        return {k: v.detach().clone() for k, v in model.student.state_dict().items()}, trainer.global_step

    big, big_steps = fit(8, 1)
    accumulated, acc_steps = fit(4, 2)
    small, small_steps = fit(4, 1)
    assert big_steps == acc_steps == 4 and small_steps == 8
    for k in big:
        torch.testing.assert_close(accumulated[k], big[k], rtol=1e-5, atol=1e-6)
    assert not all(torch.allclose(small[k], big[k], atol=1e-4) for k in big)


def test_disk_accumulate_grad_batches_is_checked():
    with pytest.raises(ValueError, match="accumulate_grad_batches must be an integer >= 1"):
        _disk(0)


def test_selective_test_step_reports_the_validation_metrics(tmp_path):
    """SelectiveClassifier.test logs the same selective metrics as validation, under test/."""
    pl.seed_everything(0)
    model = SelectiveClassifier(net="small_cnn", net_kwargs={"widths": [4, 8]}, num_classes=4, input_shape=(3, 8, 8),
                                method="osp")
    loader = DataLoader(_images(n=24), batch_size=8)
    trainer = _trainer(tmp_path)
    val = trainer.validate(model, loader, verbose=False)[0]
    test = trainer.test(model, loader, verbose=False)[0]
    assert {"aurc", "cov@err2", "err@cov95", "acc1"} <= {k[len("val/"):] for k in val}
    assert {k[len("val/"):] for k in val} == {k[len("test/"):] for k in test}
    for k, v in val.items():
        assert test["test/" + k[len("val/"):]] == pytest.approx(v, abs=1e-6), k


def test_student_and_teacher_checkpoints_load_weights_only(tmp_path):
    """student_ckpt/teacher_ckpt read Lightning checkpoints with torch.load(weights_only=True); a file holding
    pickled objects is refused with an error naming the argument."""
    pl.seed_everything(0)
    small = {"net": "small_cnn", "net_kwargs": {"widths": [4, 8]}}
    student = ImageClassifier(**small, num_classes=4, input_shape=(3, 8, 8), log_images=False)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(student, DataLoader(_images(), batch_size=8))
    trainer.save_checkpoint(tmp_path / "student.ckpt")  # a real Lightning checkpoint: hparams, loops, optimizer

    def disk(**kwargs) -> DiSK:
        return DiSK(student="small_cnn", teacher="small_cnn", student_kwargs={"widths": [4, 8]},
                    teacher_kwargs={"widths": [4, 8]}, num_classes=4, input_shape=(3, 8, 8), method="kd", **kwargs)

    model = disk(student_ckpt=str(tmp_path / "student.ckpt"), teacher_ckpt=str(tmp_path / "student.ckpt"))
    model.setup("fit")
    for k, v in student.net.state_dict().items():
        torch.testing.assert_close(model.student.state_dict()[k], v)
        torch.testing.assert_close(model.teacher.state_dict()[k], v)
    torch.save({"state_dict": student.state_dict(), "net": student.net}, tmp_path / "pickled.ckpt")
    with pytest.raises(TeacherCheckpointError, match="student_ckpt.*weights-only") as err:
        disk(student_ckpt=str(tmp_path / "pickled.ckpt")).setup("fit")
    assert not any(w in str(err.value) for w in FOREIGN_WORDS)


def test_pruned_registry_net_loads_without_the_callback(tmp_path, monkeypatch):
    """A pruned checkpoint of a registry net that cannot state its widths in net_kwargs (small_cnn) loads through
    load_from_checkpoint and trainer.validate(ckpt_path=) while the callbacks package cannot be imported."""
    import sys

    from callbacks.l1_filter_pruning import L1FilterPruning

    pl.seed_everything(0)
    small = {"net": "small_cnn", "net_kwargs": {"widths": [8, 8]}, "num_classes": 4, "input_shape": (3, 8, 8),
             "log_images": False}
    model = ImageClassifier(**small)
    loader = DataLoader(_images(n=16), batch_size=8)
    trainer = _trainer(tmp_path, callbacks=[L1FilterPruning(ratios={"features.0": 0.5})], limit_val_batches=0)
    trainer.fit(model, loader)
    trainer.save_checkpoint(tmp_path / "pruned.ckpt")
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = model.eval()(x)
    want_loss = _trainer(tmp_path).validate(model, loader, verbose=False)[0]["val/loss"]
    for name in [n for n in sys.modules if n == "callbacks" or n.startswith("callbacks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "callbacks", None)  # `import callbacks...` now raises ImportError
    loaded = ImageClassifier.load_from_checkpoint(tmp_path / "pruned.ckpt").eval()
    assert loaded.net.features[0].out_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want)
    val = _trainer(tmp_path).validate(ImageClassifier(**small), loader, ckpt_path=tmp_path / "pruned.ckpt",
                                      weights_only=True, verbose=False)[0]
    assert val["val/loss"] == pytest.approx(want_loss, abs=1e-6)
    monkeypatch.undo()
    # fine-tuning the reloaded module with the pruning callback in the Trainer does not prune it a second time
    trainer = _trainer(tmp_path, callbacks=[L1FilterPruning(ratios={"features.0": 0.5})], limit_val_batches=0)
    trainer.fit(loaded.train(), loader)
    assert loaded.net.features[0].out_channels == 4


class TinyNet(nn.Module):
    """A user's net that LightningCLI builds from ``class_path``/``init_args``."""

    def __init__(self, num_classes: int = 4, width: int = 6) -> None:
        super().__init__()
        self.body = _plain_net(num_classes, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TinyData(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_images(n=16), batch_size=8)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_images(n=8, seed=1), batch_size=8)


def test_cli_class_path_net_is_described_in_hparams_and_rebuilt_on_load(tmp_path):
    """LightningCLI builds the net from class_path/init_args; the hyperparameters keep that description (not the
    module), so load_from_checkpoint rebuilds the net without it being passed."""
    from lightning.pytorch.cli import LightningCLI

    net = {"class_path": f"{__name__}.TinyNet", "init_args": {"num_classes": 4, "width": 5}}
    cli = LightningCLI(ImageClassifier, TinyData, run=False, save_config_callback=None, args={
        "model": {"net": net, "num_classes": 4, "input_shape": [3, 8, 8], "log_images": False},
        "trainer": {"max_steps": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path), "accelerator": "cpu"}})
    assert isinstance(cli.model.net, TinyNet) and cli.model.net.body[0].out_channels == 5
    assert cli.model.hparams["net"]["class_path"] == net["class_path"]
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.save_checkpoint(tmp_path / "cli.ckpt")
    hparams = torch.load(tmp_path / "cli.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["net"]["init_args"]["width"] == 5
    loaded = ImageClassifier.load_from_checkpoint(tmp_path / "cli.ckpt").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), cli.model.eval()(x))
    # the description alone (what hparams hold) builds the module too, without LightningCLI
    again = ImageClassifier(net=hparams["net"], num_classes=4, input_shape=(3, 8, 8))
    assert isinstance(again.net, TinyNet) and again.hparams["net"] == hparams["net"]


def test_a_module_is_not_stored_and_a_name_is():
    by_module = ImageClassifier(net=_plain_net(), num_classes=4, input_shape=(3, 8, 8))
    assert by_module.hparams["net"] is None and by_module.hparams_initial["net"] is None
    by_name = ImageClassifier(net="small_cnn", num_classes=4, input_shape=(1, 8, 8), net_kwargs={"widths": [4, 8]})
    assert by_name.hparams["net"] == "small_cnn"
    disk = _disk(1)
    assert disk.hparams["student"] is None and disk.hparams["teacher"] is None


@pytest.mark.parametrize("build, pattern", [
    (lambda: ImageClassifier(net=_plain_net(), net_kwargs={"widths": [4]}, num_classes=4),
     r"ImageClassifier\(net=\.\.\.\): net is an nn.Module .* net_kwargs"),
    (lambda: ImageClassifier(net="my_minivgg", num_classes=4), r"Unknown network 'my_minivgg'.*nn.Module"),
    (lambda: ImageClassifier(net=None, num_classes=4), r"net is None.*load_from_checkpoint\(path, net="),
    (lambda: ImageClassifier(net=42, num_classes=4), r"net must be an nn.Module, a registry name"),
    (lambda: DiSK(student=_plain_net(), teacher="nope_net", num_classes=4), r"DiSK\(teacher=\.\.\.\)"),
    (lambda: SelectiveClassifier(net=_plain_net(num_classes=4), num_classes=4, method="deepgamblers"),
     r"needs 5 .*one more for abstention"),
])
def test_errors_name_the_argument(build, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern) as err:
        build()
    msg = str(err.value)
    assert "\n" not in msg and not any(w in msg for w in FOREIGN_WORDS), msg


def test_registry_names_still_build():
    """Recipes keep their registry names; torchvision names too."""
    model = ImageClassifier(net="torchvision.resnet18", num_classes=3, input_shape=(1, 16, 16), log_images=False)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    json.dumps(dict(model.hparams))  # plain data


# ---------------------------------------------------------------------------------------------- resume matrix
MATRIX = [pytest.param(which, accumulate, precision, id=f"{which}-acc{accumulate}-{precision}",
                       marks=() if (which, accumulate, precision) == ("disk", 2, "32-true") else pytest.mark.slow)
          for which in ("image_classifier", "disk") for accumulate in (1, 2)
          for precision in ("32-true", "bf16-mixed", "bf16-true")]


@pytest.mark.parametrize("which, accumulate, precision", MATRIX)
def test_resume_matches_the_uninterrupted_run(tmp_path, which, accumulate, precision):
    """Three epochs in one go and one epoch + resume from its checkpoint end with the same weights, for every
    precision and accumulation (DiSK: its own accumulate_grad_batches; the classifier: the Trainer's). The
    default run keeps DiSK with accumulation in fp32; the rest is slow."""
    data = _images(n=24)

    def make() -> pl.LightningModule:
        if which == "disk":
            return DiSK(student=_plain_net(seed=1), teacher=_plain_net(width=8, seed=2), num_classes=4,
                        input_shape=(3, 8, 8), method="disk", topk=2, guide_warmup=1, student_epochs=1,
                        guide_epochs=1, guide_width=8, accumulate_grad_batches=accumulate)
        return ImageClassifier(net=_plain_net(seed=1), num_classes=4, input_shape=(3, 8, 8), log_images=False)

    def trainer(epochs: int) -> pl.Trainer:
        extra = {} if which == "disk" else {"accumulate_grad_batches": accumulate}
        return _trainer(tmp_path, epochs, precision=precision, limit_val_batches=0, **extra)

    def loader() -> DataLoader:
        return DataLoader(data, batch_size=4)

    pl.seed_everything(0)
    full = make()
    trainer(3).fit(full, loader())
    pl.seed_everything(0)
    first = make()
    t1 = trainer(1)
    t1.fit(first, loader())
    t1.save_checkpoint(tmp_path / "one.ckpt")
    pl.seed_everything(0)
    resumed = make()
    trainer(3).fit(resumed, loader(), ckpt_path=tmp_path / "one.ckpt")
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "32-true" else {"rtol": 2e-2, "atol": 2e-2}
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k].float(), v.float(), **tol, msg=k)
