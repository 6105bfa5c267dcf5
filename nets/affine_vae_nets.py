"""Encoders and decoders of the Affine VAE (Bidart and Wong 2019; docs/affine_vae.md#architectures-and-settings), 2D and 3D.

2D (after Schott et al. 2018, the authors' ``model/model.py`` layout): conv 32 (k5, s1) -> 32 (k4, s2) -> 64 (k3, s2)
-> 16 (k5, s1), unpadded, ELU + BatchNorm after the first three, then linear layers to the mean and the log-variance
of q(z|x). The decoder mirrors the encoder with transposed convs (16 -> 64 (k5) -> 32 (k3, s2) -> 32 (k4, s2) -> C (k5))
with ``output_padding`` chosen so it returns exactly the input size, and a sigmoid output (pixels in [0, 1]).
The authors' decoder (FC -> 16x10x10 and fixed transposed convs) only fits 40x40 MNIST; the mirror is the project's
choice, so the same net serves the 32x32 glyphs and the 40x40 padded MNIST.

3D (the thesis-era ``models/avae.py``): Conv3d 16 (k3) -> 16 (k5, s2) -> 32 (k5, s2) -> 8 (k3, s2), "same" padding,
ELU + BatchNorm, then linear 8 * 6^3 = 1728 -> L for a 48^3 input; the decoder is the mirror with ConvTranspose3d and
a sigmoid output (occupancy probabilities).

``width`` scales every channel count (1.0 = the published nets); the CPU-scale studies use smaller widths.
``VAENet(input_shape, latent_dim)`` picks 2D or 3D from ``len(input_shape)`` and raises
:class:`InputShapeError` for an input it cannot take.
"""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, kernel, stride, padding)
LAYERS_2D = ((32, 5, 1, 0), (32, 4, 2, 0), (64, 3, 2, 0), (16, 5, 1, 0))
LAYERS_3D = ((16, 3, 1, 1), (16, 5, 2, 2), (32, 5, 2, 2), (8, 3, 2, 1))


class InputShapeError(ValueError):
    """An input whose size or number of dimensions does not fit the net."""

    user_facing = True


def _out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


class VAENet(nn.Module):
    """Convolutional VAE encoder + decoder for ``input_shape`` = (C, H, W) or (C, D, H, W).

    ``encode(x) -> (mu, logvar)``, ``decode(z) -> x_hat`` in [0, 1] (sigmoid), same shape as the input.
    """

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 8, width: float = 1.0) -> None:
        super().__init__()
        input_shape = tuple(int(v) for v in input_shape)
        if len(input_shape) not in (3, 4):
            raise InputShapeError(
                f"VAENet: input_shape must be (C, H, W) for images or (C, D, H, W) for voxel grids, got {input_shape}"
            )
        if latent_dim < 1:
            raise InputShapeError(f"VAENet: latent_dim must be >= 1, got {latent_dim}")
        if width <= 0:
            raise InputShapeError(f"VAENet: width must be > 0, got {width}")
        self.input_shape, self.latent_dim = input_shape, int(latent_dim)
        dims = len(input_shape) - 1
        self.spatial_dims = dims
        conv, convt, bn = ((nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d) if dims == 2
                           else (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d))
        layers = LAYERS_2D if dims == 2 else LAYERS_3D
        channels = [input_shape[0]] + [max(1, round(c * width)) for c, *_ in layers]
        sizes = [list(input_shape[1:])]
        for _, k, s, p in layers:
            sizes.append([_out_size(n, k, s, p) for n in sizes[-1]])
        if min(sizes[-1]) < 1:
            min_side = 24 if dims == 2 else 8
            raise InputShapeError(
                f"VAENet: the {dims}D encoder needs inputs of at least about {min_side} per side; "
                f"input_shape {input_shape} shrinks to {sizes[-1]}. Pad the data (e.g. MNIST to 40x40, voxels to 48^3)"
            )
        self.sizes = [tuple(s) for s in sizes]
        enc: list[nn.Module] = []
        for i, (_, k, s, p) in enumerate(layers):
            enc.append(conv(channels[i], channels[i + 1], k, s, p))
            if i < len(layers) - 1 or dims == 3:
                enc += [nn.ELU(), bn(channels[i + 1])]
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * int(torch.tensor(sizes[-1]).prod())
        self.flat_shape = (channels[-1], *sizes[-1])
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = [nn.ELU()]
        for i in reversed(range(len(layers))):
            _, k, s, p = layers[i]
            target, source = sizes[i], sizes[i + 1]
            out_pad = [t - ((n - 1) * s - 2 * p + k) for t, n in zip(target, source)]
            dec.append(convt(channels[i + 1], channels[i], k, s, p, output_padding=tuple(out_pad)))
            if i > 0:
                dec += [nn.ELU(), bn(channels[i])]
        self.decoder = nn.Sequential(*dec)

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputShapeError(
                f"VAENet was built for inputs of shape {self.input_shape} (channels first, no batch) but got a batch "
                f"of shape {tuple(x.shape)}; build it with input_shape equal to the data's (channels, height, width) or "
                f"resize/pad the data"
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.flatten(self.encoder(x), 1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc_dec(z).reshape(z.shape[0], *self.flat_shape)
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deterministic pass (z = mu): (reconstruction, mu, logvar)."""
        self.check_input(x)
        mu, logvar = self.encode(x)
        return self.decode(mu), mu, logvar
