"""TextClassifier: the warm-up/polynomial schedule, fine-tuning a cut encoder, the architecture surviving
checkpoints, init_from a search checkpoint (subnet weights = filtered supernet weights), and the max-length error."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch

from datamodules.text import GlueDataModule
from modules.text_classifier import TextClassifier, polynomial_warmup
from modules.transformer_search import TransformerSearch
from nets.searchable_encoder import EncoderLoadError
from tests.recipes.smoke_data_text import write_glue, write_tiny_bert

ARCH = {"layers": [0, 2, 3], "downsample": {"0": ["topk", 0.5], "2": ["pool", 0.5]}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    return {"model": write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=4, hidden=32),
            "glue": write_glue(tmp_path_factory.mktemp("glue"), rows=16)}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


def test_polynomial_warmup_schedule():
    assert [polynomial_warmup(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert polynomial_warmup(2, 10, 2) == 1.0 and polynomial_warmup(6, 10, 2) == 0.5
    assert polynomial_warmup(10, 10, 2) == 0.0 and polynomial_warmup(6, 10, 2, power=2.0) == 0.25
    assert polynomial_warmup(5, 10, 0, power=0.0) == 1.0


def test_fine_tunes_and_checkpoint_rebuilds_the_architecture(tiny, tmp_path):
    pl.seed_everything(0)
    dm = GlueDataModule(task="sst2", data_dir=tiny["glue"], tokenizer=tiny["model"], max_length=16, batch_size=4,
                        cache_dir="")
    model = TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,), arch=ARCH,
                           optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("downsamplers.0.ops.topk.scorer" in k for k in changed)  # the scorer is trained by the task loss
    assert any(k.startswith("net.layers.3.") for k in changed) and "net.classifier.weight" in changed
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = TextClassifier.load_from_checkpoint(ckpt).eval()
    assert loaded.arch.key() == model.arch.key()
    # resume (--ckpt_path) into a module built with the full architecture: on_load_checkpoint rebuilds the cut one
    full = TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,))
    state = torch.load(ckpt, weights_only=False)
    full.on_load_checkpoint(state)
    full.load_state_dict(state["state_dict"], strict=True)
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.allclose(full.eval()(ids, mask), model.eval()(ids, mask), atol=1e-6)


def test_init_from_a_search_checkpoint_takes_the_chosen_subnet(tiny, tmp_path):
    torch.manual_seed(0)
    search = TransformerSearch(model_path=tiny["model"], num_classes=2, input_shape=(16,)).eval()
    with torch.no_grad():
        for p in search.net.downsamplers.parameters():
            p.normal_()
    checkpoint = {"state_dict": search.state_dict(), "searched_arch": ARCH}
    model = TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,))
    model.restore_structure(model, checkpoint)  # what main.py's init_from calls before the strict load
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    assert model.arch.to_dict() == {"layers": [0, 2, 3], "downsample": {"0": ["topk", 0.5], "2": ["pool", 0.5]}}
    assert sorted(model.net.layers) == ["0", "2", "3"]
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids, mask), search.net(ids, mask, arch=model.arch), atol=1e-6)
    # an explicit architecture in the recipe wins over the checkpoint's choice
    other = TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,), arch={"layers": [1]})
    other.restore_structure(other, {"state_dict": search.state_dict(), "searched_arch": ARCH})
    assert other.arch.layers == [1]
    # a checkpoint of another architecture: a clear error
    small = TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,), arch={"layers": [0]})
    with pytest.raises(EncoderLoadError, match="lacks"):
        model.restore_structure(model, {"state_dict": small.state_dict()})


def test_arch_file(tiny, tmp_path):
    path = tmp_path / "searched_arch.json"
    path.write_text(json.dumps({"arch": ARCH, "front": []}))
    model = TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,), arch_file=str(path))
    assert model.arch.layers == [0, 2, 3]
    with pytest.raises(EncoderLoadError, match="run the search first"):
        TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(16,), arch_file=str(tmp_path / "x.json"))


def test_max_length_above_the_model_limit(tiny):
    with pytest.raises(EncoderLoadError) as err:
        TextClassifier(model_path=tiny["model"], num_classes=2, input_shape=(128,))  # the tiny BERT has 64 positions
    assert "128" in str(err.value) and "64" in str(err.value) and err.value.user_facing


def test_a_loaded_encoder_module_instead_of_a_path(tiny, tmp_path):
    """TextClassifier takes an already loaded encoder nn.Module; it is not stored in the hyperparameters (they
    hold no model_path for it either), so load_from_checkpoint takes it again and rebuilds the cut network."""
    from nets.searchable_encoder import load_pretrained_encoder

    torch.manual_seed(0)
    model = TextClassifier(encoder=load_pretrained_encoder(tiny["model"]), num_classes=2, input_shape=(16,),
                           arch=ARCH)
    assert model.hparams["model_path"] is None and "encoder" not in model.hparams
    assert sorted(model.net.layers) == ["0", "2", "3"]
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "enc.ckpt")
    assert "encoder" not in torch.load(tmp_path / "enc.ckpt", weights_only=True)["hyper_parameters"]
    with pytest.raises(EncoderLoadError, match=r"load_from_checkpoint\(path, encoder="):
        TextClassifier.load_from_checkpoint(tmp_path / "enc.ckpt")
    loaded = TextClassifier.load_from_checkpoint(tmp_path / "enc.ckpt",
                                                 encoder=load_pretrained_encoder(tiny["model"])).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model.eval()(ids, mask))
    with pytest.raises(EncoderLoadError, match="above the limit of the encoder given"):
        TextClassifier(encoder=load_pretrained_encoder(tiny["model"]), num_classes=2, input_shape=(128,))
