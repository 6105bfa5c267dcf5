"""`python main.py export`: the quickstart checkpoint to ONNX (checked in onnxruntime) and pt2, in one command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import wandb

from main import cli_main

QUICK = "recipes/quickstart.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("export_runs"))
    cli_main(["fit", "--config", QUICK, f"--runs_root={root}", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
              "--model.init_args.log_images=false"])
    wandb.finish()
    return root


def test_export_onnx_of_the_quickstart_run_matches_eager(trained, capsys):
    cli_main(["export", "--config", QUICK, f"--runs_root={trained}", "--ckpt_path=last", "--format=onnx"])
    out = Path(trained) / "quickstart" / "export" / "model.onnx"
    assert out.is_file()
    printed = capsys.readouterr().out
    assert "model.onnx" in printed
    # the artifact runs without this repository: onnxruntime alone, against the checkpoint's eager net
    from modules.image_classifier import ImageClassifier

    model = ImageClassifier.load_from_checkpoint(Path(trained) / "quickstart" / "checkpoints" / "last.ckpt",
                                                 weights_only=True).eval()
    x = torch.randn(4, 1, 8, 8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_export_refuses_an_existing_output_and_an_unknown_format(trained, tmp_path, capsys):
    target = tmp_path / "m.pt2"
    args = ["export", "--config", QUICK, f"--runs_root={trained}", "--ckpt_path=last", "--format=pt2", f"--out={target}"]
    cli_main(args)
    assert target.is_file()
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 1 and str(target) in capsys.readouterr().err
    cli_main([*args, "--overwrite=true"])
    with pytest.raises(SystemExit):
        cli_main(["export", "--config", QUICK, f"--runs_root={trained}", "--ckpt_path=last", "--format=tflite"])
    assert "tflite" in capsys.readouterr().err
