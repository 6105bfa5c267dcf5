"""Someone else's Lightning project, for drop-in tests.

``write_project(root, copy=[...])`` writes a small, ordinary Lightning project into ``root``: its own network
(``MiniVGG``, or torchvision's ``resnet18``), its own ``LitClassifier`` LightningModule and its own
``RandomImages`` DataModule, none of which know anything about this repository. Repository files named in
``copy`` (paths relative to the repository root) are copied flat beside it, the way a user copies one callback
file into their project.

``run_python(root, code)`` runs ``code`` in a fresh interpreter started in ``root`` in which this repository is
NOT importable: ``python -I`` (no user site, no PYTHON* variables, no script directory on ``sys.path``), the
editable install's import hook removed, ``root`` put first on ``sys.path``; the bootstrap checks that none of
the repository's top-level packages can be found before it runs ``code``. W&B is offline and torch uses one
thread. A non-zero exit raises ``AssertionError`` with the tail of stdout and stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPO_PACKAGES = ("benchmarks", "callbacks", "datamodules", "main", "modules", "nets")

PROJECT = '''\
"""A user's own small Lightning project (written by tests/dropin/foreign.py)."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class MiniVGG(nn.Module):
    """A plain VGG-like net: conv+BN+ReLU blocks, max-pooling, a linear head."""

    def __init__(self, num_classes=10, widths=(16, 32, 64)):
        super().__init__()
        layers, cin = [], 3
        for i, w in enumerate(widths):
            layers += _block(cin, w)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def resnet18(num_classes=10):
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


class LitClassifier(L.LightningModule):
    def __init__(self, model, lr=0.05, optimizer="sgd"):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    def forward(self, x):
        return self.model(x)

    def _step(self, batch, stage):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train")
        if stage != "train":
            self.log(f"{stage}_acc", acc, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)}


class RandomImages(L.LightningDataModule):
    """Seeded random images with a faint class signal, built in setup() like most DataModules."""

    def __init__(self, n=64, num_classes=10, size=32, batch_size=16):
        super().__init__()
        self.n, self.num_classes, self.size, self.batch_size = n, num_classes, size, batch_size

    def _make(self, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(self.n) % self.num_classes
        x = torch.randn(self.n, 3, self.size, self.size, generator=g)
        x[:, 0] += (y.float() / self.num_classes - 0.5)[:, None, None]
        return TensorDataset(x, y)

    def setup(self, stage=None):
        self.train_data = self._make(0)
        self.val_data = self._make(1)
        self.test_data = self._make(2)

    def train_dataloader(self):
        return DataLoader(self.train_data, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0))

    def val_dataloader(self):
        return DataLoader(self.val_data, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_data, batch_size=self.batch_size)
'''

BOOTSTRAP = r'''
import importlib.util, os, sys
root = os.getcwd()
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path[:] = [root] + [p for p in sys.path if "__editable__" not in p and p not in ("", ".", root)]
sys.path_importer_cache.clear()
repo = os.path.realpath(REPO)
assert not any(os.path.realpath(p or ".").startswith(repo) for p in sys.path if p != root), sys.path
for name in PACKAGES:
    spec = importlib.util.find_spec(name)
    assert spec is None or (spec.origin or "").startswith(root), f"the repository leaks in: {name} -> {spec}"
import torch
torch.set_num_threads(1)
import warnings
warnings.filterwarnings("ignore")
__name__ = "__main__"
exec(compile(open(os.path.join(root, "_dropin_main.py")).read(), "_dropin_main.py", "exec"))
'''


def write_project(root: Path, copy: list[str] = ()) -> Path:
    """Write ``foreign_project.py`` into ``root`` and copy each repository file in ``copy`` flat beside it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "foreign_project.py").write_text(PROJECT)
    for rel in copy:
        src = REPO / rel
        if not src.is_file():
            raise FileNotFoundError(f"write_project(copy=...): {rel!r} is not a file under {REPO}")
        shutil.copyfile(src, root / src.name)
    return root


def run_python(root: Path, code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``code`` in ``root`` with the repository not importable; raise AssertionError on failure."""
    root = Path(root)
    (root / "_dropin_main.py").write_text(textwrap.dedent(code))
    boot = BOOTSTRAP.replace("REPO", repr(str(REPO))).replace("PACKAGES", repr(REPO_PACKAGES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WANDB_"))}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONSOLE="off", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-I", "-c", boot], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout[-3000:] + "\n--- stderr ---\n" + proc.stderr[-6000:])
        raise AssertionError(f"foreign-project run failed (exit {proc.returncode}) in {root}:\n{tail}")
    return proc
