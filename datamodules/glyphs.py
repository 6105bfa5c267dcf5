"""Procedural glyph images (characters rendered from matplotlib's bundled TTF fonts) for CPU-scale studies.

Each (character, font) pair is rendered once with PIL at 4x resolution and area-downsampled to an
anti-aliased 32x32 template. Samples are then produced in batches: a random affine map (rotation, scale,
translation) applied with ``grid_sample`` (an ``affine_grid`` built by broadcasting, which is faster on CPU),
optional clutter (a fragment of another glyph near the border, random line segments), random stroke
thickening/thinning (grey-scale dilation/erosion blended by a per-sample amount) and Gaussian pixel noise.
Images are stored 8-bit-quantised; a given seed gives bit-identical tensors, and 25k images take about a
second or two of CPU time.

Pixel convention: background 0, ink 1. Angles are in radians, positive = counter-clockwise as displayed.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from datamodules.base import BaseDataModule, stratified_split
from datamodules.errors import dataset_not_found

GLYPH_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: too close to 1/0
DEFAULT_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)
IMAGE_SIZE = 32
_RENDER_OVERSAMPLE = 4  # PIL renders at 128x128, area-downsampled to the 32x32 templates
_CAP_HEIGHT = 0.55  # height of "H" as a fraction of the canvas at scale 1
_CHUNK = 1024  # fixed chunk size: the random stream does not depend on anything else
_VERSION = 1  # bump when the generator changes so cached files are not reused


@dataclass(frozen=True)
class GlyphConfig:
    """Resolved generation parameters (see :class:`GlyphsDataModule` for their meaning)."""

    max_rotation: float
    scale_range: tuple[float, float]
    max_translation: float
    stroke_noise: float
    clutter: float

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.max_rotation < 0 or self.max_translation < 0:
            raise ValueError("max_rotation and max_translation must be >= 0")
        if not (0 <= self.stroke_noise <= 1 and 0 <= self.clutter <= 1):
            raise ValueError(f"stroke_noise and clutter must be in [0, 1], got {self.stroke_noise}, {self.clutter}")


def difficulty_defaults(difficulty: float) -> GlyphConfig:
    """Default augmentation strengths for ``difficulty`` in [0, 1] (linear in it)."""
    d = float(difficulty)
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    return GlyphConfig(
        max_rotation=5.0 + 40.0 * d,
        scale_range=(0.95 - 0.35 * d, 1.05 + 0.1 * d),
        max_translation=0.03 + 0.12 * d,
        stroke_noise=0.05 + 0.45 * d,
        clutter=0.6 * d,
    )


def font_paths(fonts: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Absolute paths of the requested matplotlib TTF fonts (file names under ``mpl-data/fonts/ttf``)."""
    import matplotlib

    font_dir = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    available = {os.path.basename(p): p for p in glob.glob(os.path.join(font_dir, "*.ttf"))}
    wanted = DEFAULT_FONTS if fonts is None else tuple(fonts)
    paths = tuple(available[f] for f in wanted if f in available)
    missing = [f for f in wanted if f not in available]
    if (fonts is not None and missing) or not paths:
        raise dataset_not_found(
            "Glyph fonts", font_dir, "TrueType files such as DejaVuSans.ttf in matplotlib's mpl-data/fonts/ttf",
            "reinstall matplotlib (the fonts ship with it) or pass fonts= with names from that folder",
            missing=missing or list(wanted),
        )
    return paths


@functools.lru_cache(maxsize=4)
def glyph_templates(chars: str, fonts: tuple[str, ...]) -> torch.Tensor:
    """Render every (char, font) once: float tensor [len(chars) * len(fonts), 1, 32, 32] in [0, 1].

    Row ``c * len(fonts) + f`` holds char ``c`` in font ``f``, centred on its bounding box, with the cap
    height at ``_CAP_HEIGHT`` of the canvas; rendered at 4x and area-downsampled for clean anti-aliasing.
    """
    from PIL import Image, ImageDraw, ImageFont

    hi = _RENDER_OVERSAMPLE
    big = IMAGE_SIZE * hi
    out = np.zeros((len(chars), len(fonts), big, big), dtype=np.uint8)
    for j, path in enumerate(fonts):
        probe = ImageFont.truetype(path, 100)
        _, top, _, bottom = probe.getbbox("H")
        font = ImageFont.truetype(path, max(8, round(100 * _CAP_HEIGHT * big / (bottom - top))))
        for i, ch in enumerate(chars):
            left, top, right, bottom = font.getbbox(ch)
            img = Image.new("L", (big, big), 0)
            ImageDraw.Draw(img).text((big / 2 - (left + right) / 2, big / 2 - (top + bottom) / 2), ch, fill=255,
                                     font=font)
            out[i, j] = np.asarray(img)
    t = torch.from_numpy(out).reshape(-1, 1, big, big).float().div_(255.0)
    return F.avg_pool2d(t, hi)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _affine_theta(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """``affine_grid`` matrices (output -> input coords) for: rotate CCW by ``angle``, scale, then translate."""
    c, s = torch.cos(angle), torch.sin(angle)
    # Forward map in image coords (y down), CCW as displayed: x_out = scale * [[c, s], [-s, c]] x_in + t.
    inv = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2) / scale[:, None, None]
    t = torch.stack([tx, ty], -1)
    return torch.cat([inv, -(inv @ t[:, :, None])], dim=2)


def _warp(src: torch.Tensor, theta: torch.Tensor, res: int) -> torch.Tensor:
    """``grid_sample`` with the sampling grid built by broadcasting (much faster on CPU than ``affine_grid``)."""
    coords = (torch.arange(res, dtype=torch.float32) * 2 + 1) / res - 1  # pixel centres, align_corners=False
    x, y = coords[None, None, :], coords[None, :, None]
    a = theta[:, :, :, None, None]
    grid = torch.stack([a[:, 0, 0] * x + a[:, 0, 1] * y + a[:, 0, 2], a[:, 1, 0] * x + a[:, 1, 1] * y + a[:, 1, 2]], -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3 grey-scale dilation (max filter) via separable shifted maxima; zero padding."""
    p = F.pad(x, (1, 1, 0, 0))
    h = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    p = F.pad(h, (0, 0, 1, 1))
    return torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])


def _erode(x: torch.Tensor) -> torch.Tensor:
    """3x3 grey-scale erosion (min filter); outside the image counts as background (0)."""
    p = F.pad(x, (1, 1, 0, 0))
    h = torch.minimum(torch.minimum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    p = F.pad(h, (0, 0, 1, 1))
    return torch.minimum(torch.minimum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])


def _segments(n_pix: int, p0: torch.Tensor, p1: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased line segments [m, 1, n_pix, n_pix]; endpoints in normalised coords, width in pixels."""
    coords = (torch.arange(n_pix, dtype=torch.float32) + 0.5) / n_pix * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    p = torch.stack([xx, yy], -1).reshape(1, -1, 2)  # [1, P, 2]
    a, d = p0[:, None, :], (p1 - p0)[:, None, :]
    t = (((p - a) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-8)).clamp(0, 1)
    dist = (p - (a + t[..., None] * d)).norm(dim=-1) * (n_pix / 2)  # in pixels
    return (width[:, None] / 2 + 0.5 - dist).clamp(0, 1).reshape(-1, 1, n_pix, n_pix)


@contextlib.contextmanager
def _one_thread():
    """Run the generator single-threaded: its ops are small (1M elements), so intra-op threading buys little,
    and on a busy machine OpenMP barriers made it 5-10x slower. Also keeps results thread-count independent."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generate_glyphs(
    n: int,
    num_classes: int,
    seed: int,
    config: GlyphConfig,
    fonts: tuple[str, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` glyph images: (uint8 images [n, 1, 32, 32], int64 labels [n], float32 angles [n]).

    Classes are exactly balanced (``arange(n) % num_classes``, shuffled). Same arguments -> identical tensors.
    """
    with _one_thread():
        return _generate(n, num_classes, seed, config, fonts)


def _generate(n: int, num_classes: int, seed: int, config: GlyphConfig, fonts: tuple[str, ...] | None):
    if not 1 <= num_classes <= len(GLYPH_CHARS):
        raise ValueError(f"num_classes must be in [1, {len(GLYPH_CHARS)}], got {num_classes}")
    lo, hi = config.scale_range
    paths = font_paths(fonts)
    templates = glyph_templates(GLYPH_CHARS[:num_classes], paths)
    n_fonts = len(paths)
    g = torch.Generator().manual_seed(int(seed))

    # Per-sample parameters for all n samples up front (the stream never depends on which samples use them).
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    font = torch.randint(n_fonts, (n,), generator=g)
    max_rot = np.deg2rad(config.max_rotation)
    angle = _uniform(n, -max_rot, max_rot, g)
    scale = _uniform(n, lo, hi, g)
    shift = _uniform(2 * n, -2 * config.max_translation, 2 * config.max_translation, g).reshape(n, 2)
    thick = _uniform(n, -1.0, 1.0, g) * config.stroke_noise  # >0: dilate by up to 1 px; <0: erode by up to 0.5 px
    # Clutter: one fragment of another glyph near the border + up to two line segments, each with prob `clutter`.
    use = torch.rand(n, 3, generator=g) < config.clutter
    frag_label = (labels + torch.randint(1, max(num_classes, 2), (n,), generator=g)) % num_classes
    frag_font = torch.randint(n_fonts, (n,), generator=g)
    frag_angle = _uniform(n, -np.pi, np.pi, g)
    frag_scale = _uniform(n, 0.7, 1.1, g)
    frag_r, frag_phi = _uniform(n, 0.75, 1.05, g), _uniform(n, 0, 2 * np.pi, g)
    frag_level = _uniform(n, 0.5, 1.0, g)
    line_c = _uniform(4 * n, -0.8, 0.8, g).reshape(n, 2, 2)
    line_len, line_dir = _uniform(2 * n, 0.3, 0.9, g).reshape(n, 2), _uniform(2 * n, 0, np.pi, g).reshape(n, 2)
    line_w, line_level = _uniform(2 * n, 0.6, 1.4, g).reshape(n, 2), _uniform(2 * n, 0.4, 1.0, g).reshape(n, 2)
    sigma = 0.15 * config.stroke_noise

    images = torch.empty(n, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        x = _warp(templates[labels[sl] * n_fonts + font[sl]],
                  _affine_theta(angle[sl], scale[sl], shift[sl, 0], shift[sl, 1]), IMAGE_SIZE)
        sel = use[sl, 0].nonzero().squeeze(1)
        if sel.numel():
            k = sel + start
            r, phi = frag_r[k], frag_phi[k]
            frag = _warp(templates[frag_label[k] * n_fonts + frag_font[k]],
                         _affine_theta(frag_angle[k], frag_scale[k], r * torch.cos(phi), r * torch.sin(phi)),
                         IMAGE_SIZE)
            x[sel] = torch.maximum(x[sel], frag * frag_level[k, None, None, None])
        if config.stroke_noise > 0:  # grey-scale erosion/dilation blended by the per-sample thickness offset
            t = thick[sl, None, None, None]
            x = x + t.clamp(min=0) * (_dilate(x) - x) + 0.5 * (-t).clamp(min=0) * (_erode(x) - x)
        for j in (0, 1):
            sel = use[sl, 1 + j].nonzero().squeeze(1)
            if sel.numel():
                k = sel + start
                direction = torch.stack([torch.cos(line_dir[k, j]), torch.sin(line_dir[k, j])], -1)
                half = 0.5 * line_len[k, j, None] * direction
                seg = _segments(IMAGE_SIZE, line_c[k, j] - half, line_c[k, j] + half, line_w[k, j])
                x[sel] = torch.maximum(x[sel], seg * line_level[k, j, None, None, None])
        noise = torch.randn(m, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
        if sigma > 0:
            x = x + sigma * noise
        images[sl] = x.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images, labels, angle


def derive_seed(seed: int, split: str) -> int:
    """Independent 32-bit seed for one split (``train``/``test``) from the user seed."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode())]).generate_state(1)[0])


class GlyphsDataModule(BaseDataModule):
    """Rendered characters 0-9, A-Z (minus I and O) as 32x32 grayscale images, input (1, 32, 32), balanced.

    Augmentation strengths default from ``difficulty`` in [0, 1] (see :func:`difficulty_defaults`); any
    explicitly given one overrides it: ``max_rotation`` (degrees, uniform in +-), ``scale_range`` (glyph scale,
    1 = cap height 55% of the image), ``max_translation`` (fraction of the image side, per axis),
    ``stroke_noise`` in [0, 1] (stroke thickening/thinning and Gaussian pixel noise of std 0.15 * it),
    ``clutter`` in [0, 1] (probability of each of: a fragment of another glyph, line segment 1, segment 2).

    Train and test sets are generated from different seeds derived from ``data_seed`` (default: ``seed``).
    Validation: ``val_fraction = 0`` (default) uses the test set for validation; ``val_fraction > 0`` holds out
    a stratified part of the generated training set instead. Pixels are in [0, 1] unless ``normalize`` (then
    standardised with the training set's scalar mean/std). With ``return_angle`` each sample is
    ``(image, label, angle_radians)``; the angles are also in ``train_angles``/``val_angles``/``test_angles``.
    With ``cache_dir`` the generated tensors are stored there as a .pt file keyed by all generation parameters.

    Distribution shifts of the training split only (validation held out by ``val_fraction`` and the test set
    stay balanced and clean; both are seeded by ``data_seed``):

    * ``imbalance`` = r >= 1: a long-tailed training split, class k keeping the share ``r ** (-k / (C - 1))`` of
      its images (class 0 all, class C-1 a fraction 1/r), as in the CIFAR-LT benchmarks.
    * ``label_noise`` = p in [0, 1): the label of a random share p of the training images is replaced by a
      different class drawn uniformly (symmetric noise); the true labels stay in ``train_clean_labels``.
    """

    input_shape = (1, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        num_classes: int = 10,
        difficulty: float = 0.5,
        max_rotation: float | None = None,
        scale_range: tuple[float, float] | None = None,
        max_translation: float | None = None,
        stroke_noise: float | None = None,
        clutter: float | None = None,
        train_size: int = 20000,
        test_size: int = 5000,
        val_fraction: float = 0.0,
        return_angle: bool = False,
        normalize: bool = False,
        data_seed: int | None = None,
        fonts: list[str] | None = None,
        cache_dir: str | None = None,
        imbalance: float = 1.0,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pin_memory)
        self.save_hyperparameters()
        if not 2 <= num_classes <= len(GLYPH_CHARS):
            raise ValueError(f"num_classes must be in [2, {len(GLYPH_CHARS)}], got {num_classes}")
        if not float(imbalance) >= 1.0:
            raise ValueError(f"data.init_args.imbalance must be >= 1 (largest / smallest class size of the training "
                             f"split; 1 = balanced), got {imbalance}")
        if not 0.0 <= float(label_noise) < 1.0:
            raise ValueError(f"data.init_args.label_noise must be in [0, 1) (share of training labels replaced by "
                             f"another class), got {label_noise}")
        self.imbalance, self.label_noise = float(imbalance), float(label_noise)
        self.train_clean_labels: torch.Tensor | None = None
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        base = difficulty_defaults(difficulty)
        self.config = GlyphConfig(
            max_rotation=float(base.max_rotation if max_rotation is None else max_rotation),
            scale_range=tuple(float(v) for v in (base.scale_range if scale_range is None else scale_range)),
            max_translation=float(base.max_translation if max_translation is None else max_translation),
            stroke_noise=float(base.stroke_noise if stroke_noise is None else stroke_noise),
            clutter=float(base.clutter if clutter is None else clutter),
        )
        self.num_classes = int(num_classes)
        self.classes = list(GLYPH_CHARS[: self.num_classes])
        self.difficulty = float(difficulty)
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.val_fraction = float(val_fraction)
        self.return_angle = bool(return_angle)
        self.normalize = bool(normalize)
        self.data_seed = self.seed if data_seed is None else int(data_seed)
        self.fonts = None if fonts is None else tuple(fonts)
        self.cache_dir = cache_dir
        self.mean: float | None = None
        self.std: float | None = None
        for split in ("train", "val", "test"):
            for what in ("images", "labels", "angles"):
                setattr(self, f"{split}_{what}", None)

    # -- generation -------------------------------------------------------------------------------------------
    def _spec(self) -> dict:
        return {"version": _VERSION, "num_classes": self.num_classes, "train_size": self.train_size,
                "test_size": self.test_size, "data_seed": self.data_seed, "fonts": self.fonts, **asdict(self.config)}

    def generate(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Generate (or load from ``cache_dir``) raw train/test tensors: uint8 images, labels, angles."""
        path = None
        if self.cache_dir:
            key = hashlib.sha1(json.dumps(self._spec(), sort_keys=True).encode()).hexdigest()[:16]
            path = os.path.join(self.cache_dir, f"glyphs-{key}.pt")
            if os.path.isfile(path):
                return torch.load(path, weights_only=True)
        out = {
            split: generate_glyphs(size, self.num_classes, derive_seed(self.data_seed, split), self.config, self.fonts)
            for split, size in (("train", self.train_size), ("test", self.test_size))
        }
        if path is not None:
            os.makedirs(self.cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            torch.save(out, tmp)
            os.replace(tmp, path)
        return out

    def prepare_data(self) -> None:
        if self.cache_dir:  # fill the cache once per node; setup() then only loads it
            self.generate()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self.generate()
        tr_x, tr_y, tr_a = data["train"]
        te_x, te_y, te_a = data["test"]
        tr_x, te_x = tr_x.float().div_(255.0), te_x.float().div_(255.0)
        if self.val_fraction > 0:
            tr_idx, va_idx = stratified_split(tr_y.numpy(), self.val_fraction, self.data_seed)
            tr_idx, va_idx = torch.as_tensor(tr_idx), torch.as_tensor(va_idx)
            va_x, va_y, va_a = tr_x[va_idx], tr_y[va_idx], tr_a[va_idx]
            tr_x, tr_y, tr_a = tr_x[tr_idx], tr_y[tr_idx], tr_a[tr_idx]
        else:
            va_x, va_y, va_a = te_x, te_y, te_a
        tr_x, tr_y, tr_a, clean = self._shift_training_split(tr_x, tr_y, tr_a)
        self.train_clean_labels = clean
        if self.normalize:
            self.mean, self.std = float(tr_x.mean()), float(tr_x.std())
            val_is_test = va_x is te_x
            tr_x, te_x = (tr_x - self.mean) / self.std, (te_x - self.mean) / self.std
            va_x = te_x if val_is_test else (va_x - self.mean) / self.std
        self.train_images, self.train_labels, self.train_angles = tr_x, tr_y, tr_a
        self.val_images, self.val_labels, self.val_angles = va_x, va_y, va_a
        self.test_images, self.test_labels, self.test_angles = te_x, te_y, te_a
        self.train_set = self._dataset(tr_x, tr_y, tr_a)
        self.test_set = self._dataset(te_x, te_y, te_a)
        self.val_set = self.test_set if self.val_fraction == 0 else self._dataset(va_x, va_y, va_a)

    def _shift_training_split(self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor):
        """Apply ``imbalance`` (subsample classes) then ``label_noise`` (flip labels); returns x, y, a, clean y."""
        g = torch.Generator().manual_seed(derive_seed(self.data_seed, "shift"))
        if self.imbalance > 1.0:
            keep = []
            for k in range(self.num_classes):
                idx = (y == k).nonzero().flatten()
                share = self.imbalance ** (-k / (self.num_classes - 1))
                n = max(1, int(round(share * len(idx))))
                keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
            order = torch.cat(keep).sort().values
            x, y, a = x[order], y[order], a[order]
        clean = y.clone()
        if self.label_noise > 0:
            n_noisy = int(round(self.label_noise * len(y)))
            noisy = torch.randperm(len(y), generator=g)[:n_noisy]
            offset = torch.randint(1, self.num_classes, (n_noisy,), generator=g)  # never the true class
            y = y.clone()
            y[noisy] = (y[noisy] + offset) % self.num_classes
        return x, y, a, clean

    def _dataset(self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> TensorDataset:
        return TensorDataset(x, y, a) if self.return_angle else TensorDataset(x, y)
