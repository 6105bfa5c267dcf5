"""Encoders/decoders of the Affine VAE (nets/affine_vae_nets.py): the published layouts and sizes, bad shapes."""

from __future__ import annotations

import pytest
import torch

from nets.affine_vae_nets import InputShapeError, VAENet


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 40, 40), (3, 36, 44)])
def test_2d_decoder_returns_the_input_size(shape):
    net = VAENet(shape, latent_dim=5, width=0.5)
    x_hat, mu, logvar = net(torch.rand(2, *shape))
    assert x_hat.shape == (2, *shape) and mu.shape == logvar.shape == (2, 5)
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1  # sigmoid output


def test_2d_encoder_is_the_published_layout_on_40x40():
    net = VAENet((1, 40, 40), latent_dim=8)
    convs = [m for m in net.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [(32, 5, 1), (32, 4, 2), (64, 3, 2),
                                                                                (16, 5, 1)]
    assert net.sizes == [(40, 40), (36, 36), (17, 17), (8, 8), (4, 4)]
    assert net.fc_mu.in_features == 16 * 4 * 4


def test_3d_net_on_48_cubed_has_the_1728_feature_bottleneck():
    net = VAENet((1, 48, 48, 48), latent_dim=16, width=0.25)
    assert net.sizes[-1] == (6, 6, 6)
    full = VAENet((1, 48, 48, 48), latent_dim=16)
    assert full.fc_mu.in_features == 1728  # 8 x 6^3, as in the thesis code
    x_hat, mu, _ = net(torch.rand(1, 1, 48, 48, 48))
    assert x_hat.shape == (1, 1, 48, 48, 48) and mu.shape == (1, 16)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(InputShapeError, match="at least"):
        VAENet((1, 16, 16))
    with pytest.raises(InputShapeError, match=r"\(C, H, W\)"):
        VAENet((32, 32))
    net = VAENet((1, 32, 32), width=0.25)
    with pytest.raises(InputShapeError, match=r"built for inputs of shape \(1, 32, 32\).*\(2, 1, 40, 40\)"):
        net(torch.rand(2, 1, 40, 40))
    assert InputShapeError.user_facing
