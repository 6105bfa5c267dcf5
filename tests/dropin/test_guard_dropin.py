"""NonFiniteLossGuard copied alone into a foreign project: a diverging run stops, and every checkpoint on disk is
finite; a healthy run trains, resumes and its checkpoints carry the finiteness record."""

from __future__ import annotations

from tests.dropin.foreign import run_python, write_project

CODE = r'''
import glob, torch, lightning as L
from foreign_project import LitClassifier, MiniVGG, RandomImages
from nonfinite_loss_guard import NonFiniteLossError, NonFiniteLossGuard

def trainer(root, epochs):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True)
    return L.Trainer(max_epochs=epochs, callbacks=[NonFiniteLossGuard(), ckpt], logger=False,
                     enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=2)

# healthy: trains, resumes, and its checkpoint records the check
trainer("ok", 1).fit(LitClassifier(MiniVGG()), datamodule=RandomImages())
assert torch.load("ok/last.ckpt", weights_only=True)["nonfinite_guard"]["finite"] is True
trainer("ok", 2).fit(LitClassifier(MiniVGG()), datamodule=RandomImages(), ckpt_path="ok/last.ckpt")

# diverging: a huge learning rate; the run stops and nothing non-finite reaches disk
try:
    trainer("bad", 4).fit(LitClassifier(MiniVGG(), lr=1e8), datamodule=RandomImages())
    raise SystemExit("the diverging run was not stopped")
except NonFiniteLossError as err:
    print("STOPPED:", err)
for path in glob.glob("bad/*.ckpt"):
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), path
print("OK")
'''


def test_guard_copied_alone_stops_a_diverging_run_and_keeps_disk_finite(tmp_path):
    root = write_project(tmp_path / "project", copy=["callbacks/nonfinite_loss_guard.py"])
    proc = run_python(root, CODE)
    assert "STOPPED:" in proc.stdout and "OK" in proc.stdout
    assert "main.py" not in proc.stdout and "recipe" not in proc.stdout  # the message speaks to this project
