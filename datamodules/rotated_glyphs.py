"""Rotated glyphs: the platform's procedural glyph images (datamodules/glyphs.py) at controlled rotation, the
embedded default data of the Affine VAE studies (docs/affine_vae.md; the paper uses rotated MNIST).

Glyphs are rendered by :func:`datamodules.glyphs.generate_glyphs` with small nuisance variation (scale 0.95-1.05, no
translation, no clutter, no stroke noise by default) and a rotation drawn uniformly from +-``rotation`` degrees
(0 = one orientation, 180 = every orientation); the rotation is applied to the glyph template before rendering, so
it costs no extra resampling blur. ``test_rotation`` sets the test split's range (default: the same as training).
Images are (1, ``image_size``, ``image_size``) with ``image_size >= 32`` (zero padding around the 32x32 render),
pixels in [0, 1] with background 0 -- what a sigmoid decoder and a zero-padding affine resampler need. Each sample
is ``(image, label, angle_radians)``. Deterministic by ``data_seed`` (default ``seed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from datamodules.base import BaseDataModule
from datamodules.glyphs import GLYPH_CHARS, IMAGE_SIZE, GlyphConfig, derive_seed, generate_glyphs


class RotatedGlyphsDataModule(BaseDataModule):
    """Procedural glyphs with uniform rotations in +-``rotation`` degrees (train) / +-``test_rotation`` (test).

    Validation uses the test split. ``num_classes`` glyph classes (labels are returned but a VAE ignores them).
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        num_classes: int = 10,
        rotation: float = 180.0,
        test_rotation: float | None = None,
        train_size: int = 4000,
        test_size: int = 1000,
        image_size: int = 32,
        scale_range: tuple[float, float] = (0.95, 1.05),
        max_translation: float = 0.0,
        stroke_noise: float = 0.0,
        data_seed: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if not 2 <= num_classes <= len(GLYPH_CHARS):
            raise ValueError(f"num_classes must be in [2, {len(GLYPH_CHARS)}], got {num_classes}")
        for name, value in (("rotation", rotation), ("test_rotation", test_rotation)):
            if value is not None and not 0.0 <= value <= 180.0:
                raise ValueError(f"{name} must be in [0, 180] degrees, got {value}")
        if image_size < IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {IMAGE_SIZE} (the glyphs are rendered at 32x32), got {image_size}")
        if train_size < 1 or test_size < 1:
            raise ValueError(f"train_size and test_size must be >= 1, got {train_size}, {test_size}")
        self.num_classes = int(num_classes)
        self.rotation = float(rotation)
        self.test_rotation = self.rotation if test_rotation is None else float(test_rotation)
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.image_size = int(image_size)
        self.input_shape = (1, self.image_size, self.image_size)
        self.scale_range = tuple(float(v) for v in scale_range)
        self.max_translation, self.stroke_noise = float(max_translation), float(stroke_noise)
        self.data_seed = self.seed if data_seed is None else int(data_seed)
        self.train_images = self.test_images = self.train_angles = self.test_angles = None

    def _config(self, rotation: float) -> GlyphConfig:
        return GlyphConfig(max_rotation=rotation, scale_range=self.scale_range, max_translation=self.max_translation,
                           stroke_noise=self.stroke_noise, clutter=0.0)

    def generate(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(float images in [0, 1] [n, 1, S, S], labels, angles in radians) of one split."""
        n, rot = (self.train_size, self.rotation) if split == "train" else (self.test_size, self.test_rotation)
        x, y, a = generate_glyphs(n, self.num_classes, derive_seed(self.data_seed, f"rotated-{split}"),
                                  self._config(rot))
        x = x.float().div_(255.0)
        pad = self.image_size - IMAGE_SIZE
        if pad:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return x, y, a

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tr, te = self.generate("train"), self.generate("test")
        self.train_images, _, self.train_angles = tr
        self.test_images, _, self.test_angles = te
        self.train_set = TensorDataset(*tr)
        self.test_set = self.val_set = TensorDataset(*te)
