"""The device-resident CIFAR pipeline (``device_resident=True``): the "device" is the CPU here, and the same code
runs on CUDA (the last test checks it for host-device syncs where a GPU is present).

What is tested: the same seed gives the same batches; crop offsets, flips and Cutout centres are drawn per sample and
uniformly (chi-square bounds with a fixed seed, and a per-batch augmentation fails them); the batched crop / flip /
Cutout equals a per-image reference; unaugmented batches equal the worker pipeline's bit for bit (same order on one
process); no device-to-host read in a step; a run resumed mid-epoch or at an epoch boundary sees the uninterrupted
run's batches, and checkpoints resume across the memory fallback; 2 gloo ranks see disjoint shards; too little
device memory falls back with a warning; AutoAugment is refused with the alternative named.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader
from torchvision.transforms import functional as TF
from torchvision.transforms import v2

import lightning.pytorch as pl
from datamodules import CIFAR10DataModule, CIFAR100DataModule
from datamodules.device_augment import DeviceBatches

H = W = 32


def _coordinate_images(n: int) -> torch.Tensor:
    """n copies of one uint8 image whose red value is row + 1, green column + 1 and blue 200 (no zero pixel)."""
    rows = torch.arange(1, H + 1, dtype=torch.uint8).view(H, 1).expand(H, W)
    cols = torch.arange(1, W + 1, dtype=torch.uint8).view(1, W).expand(H, W)
    img = torch.stack([rows, cols, torch.full((H, W), 200, dtype=torch.uint8)])
    return img.expand(n, 3, H, W).contiguous()


def _raw(x: torch.Tensor) -> torch.Tensor:
    """Back to uint8 from a batch normalised with mean 0, std 1."""
    return (x * 255).round().to(torch.uint8)


def _loader(n=1800, batch=100, seed=0, **aug) -> DeviceBatches:
    return DeviceBatches(_coordinate_images(n), torch.zeros(n, dtype=torch.long), batch, (0.0,) * 3, (1.0,) * 3,
                         seed=seed, **aug)


def _crop_flip_draws(batches) -> torch.Tensor:
    """(batches, B, 3) recovered (row offset, column offset, flip) of each sample, from the pixel at (4, 4): with
    padding 4 and offsets in [0, 8] it is source row oy and source column ox (no flip) or ox + 23 (flip)."""
    out = []
    for x in batches:
        red, green = x[:, 0, 4, 4].long(), x[:, 1, 4, 4].long()
        flip = (green > 16).long()
        out.append(torch.stack([red - 1, torch.where(flip.bool(), green - 24, green - 1), flip], dim=1))
    return torch.stack(out)


def _chi2(values: torch.Tensor, bins: int) -> float:
    counts = torch.bincount(values.flatten(), minlength=bins).double()
    expected = values.numel() / bins
    return float(((counts - expected) ** 2 / expected).sum())


def _same_in_batch(draws: torch.Tensor) -> float:
    """Fraction of pairs of samples of one batch that got the same draw (all columns equal)."""
    b = draws.shape[1]
    eq = (draws[:, :, None, :] == draws[:, None, :, :]).all(-1)  # (batches, B, B)
    return float((eq.sum() - eq.shape[0] * b) / (eq.shape[0] * b * (b - 1)))


# chi-square critical values at p = 1e-4 (8, 80 and 31 degrees of freedom)
CHI2_8, CHI2_80, CHI2_31 = 31.8, 135.8, 69.1


def test_crop_offsets_and_flips_are_per_sample_and_uniform():
    loader = _loader(crop_padding=4, flip=True)
    draws = _crop_flip_draws(_raw(x) for x, _ in loader)  # 18 batches of 100
    oy, ox, flip = draws[..., 0], draws[..., 1], draws[..., 2]
    assert int(oy.min()) == 0 and int(oy.max()) == 8 and int(ox.min()) == 0 and int(ox.max()) == 8
    assert _chi2(oy, 9) < CHI2_8 and _chi2(ox, 9) < CHI2_8
    assert _chi2(oy * 9 + ox, 81) < CHI2_80  # row and column offsets drawn independently
    assert abs(float(flip.float().mean()) - 0.5) < 0.05  # 1800 draws: 4 standard deviations
    # per sample: two images of one batch share (oy, ox, flip) with probability 1/162
    assert _same_in_batch(draws) < 0.03
    # torchvision's transforms on a batched tensor draw once per call: every image of a batch is cropped and
    # flipped alike, which the bound above catches
    per_batch = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    images = _coordinate_images(100)
    batched = _crop_flip_draws(per_batch(images) for _ in range(18))
    assert _same_in_batch(batched) == 1.0


def test_cutout_centres_are_per_sample_and_uniform():
    loader = _loader(cutout=16)  # no crop / flip: the only zeros are the square
    centres = []
    for x, _ in loader:
        zero = (_raw(x) == 0).all(1)  # (B, H, W)
        rows, cols = zero.any(2), zero.any(1)
        assert torch.equal(zero, rows[:, :, None] & cols[:, None, :])  # one axis-aligned rectangle
        first_r, last_r = rows.float().argmax(1), H - 1 - rows.flip(1).float().argmax(1)
        first_c, last_c = cols.float().argmax(1), W - 1 - cols.flip(1).float().argmax(1)
        cy = torch.where(first_r > 0, first_r + 8, last_r + 1 - 8)  # the square is clipped on one side at most
        cx = torch.where(first_c > 0, first_c + 8, last_c + 1 - 8)
        centres.append(torch.stack([cy, cx], 1))
    centres = torch.stack(centres)
    assert _chi2(centres[..., 0], 32) < CHI2_31 and _chi2(centres[..., 1], 32) < CHI2_31
    assert _same_in_batch(centres) < 0.03  # 1/1024 per pair when drawn per sample


def test_batched_crop_flip_cutout_equal_a_per_image_reference():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(1, 256, (50, 3, H, W), dtype=torch.uint8, generator=g)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    loader = DeviceBatches(images, torch.arange(50), 16, mean, std, seed=5, crop_padding=4, flip=True, cutout=16)
    loader.set_epoch(2)
    indices, params = loader.sampler.plan()
    got_x = torch.cat([x for x, _ in loader])
    got_y = torch.cat([y for _, y in loader])
    assert torch.equal(got_y, indices)
    for k, (i, (oy, ox, flip, cy, cx)) in enumerate(zip(indices.tolist(), params.tolist(), strict=True)):
        ref = TF.crop(TF.pad(images[i], [4]), oy, ox, H, W)  # RandomCrop(32, padding=4) at the drawn offsets
        if flip:
            ref = TF.hflip(ref)
        ref = ref.float().div(255)  # ToTensor
        ref[:, max(cy - 8, 0):min(cy + 8, H), max(cx - 8, 0):min(cx + 8, W)] = 0  # Cutout(16)
        ref = TF.normalize(ref, mean, std)
        assert torch.equal(got_x[k], ref), k
    assert len(set(map(tuple, params[:, :3].tolist()))) > 25  # the draws really differ between samples


@pytest.mark.parametrize("cls, fixture", [(CIFAR10DataModule, "cifar10_dir"), (CIFAR100DataModule, "cifar100_dir")])
def test_unaugmented_batches_equal_the_worker_pipeline(cls, fixture, request):
    """Same normalisation bit for bit, and on one process the same sample order (train: two epochs; val)."""
    data_dir = request.getfixturevalue(fixture)
    device = cls(data_dir=data_dir, batch_size=6, augment=False, device_resident=True, seed=4)
    workers = cls(data_dir=data_dir, batch_size=6, augment=False, seed=4)
    device.setup("fit")
    workers.setup("fit")
    dev_train, cpu_train = device.train_dataloader(), workers.train_dataloader()
    assert isinstance(dev_train, DeviceBatches) and isinstance(cpu_train, DataLoader)
    for epoch in (0, 1):
        dev_train.sampler.set_epoch(epoch)
        cpu_train.sampler.set_epoch(epoch)
        dev, cpu = list(dev_train), list(cpu_train)
        assert len(dev) == len(cpu) == len(dev_train) == 4  # 20 images, batch 6, last batch 2
        for (xd, yd), (xc, yc) in zip(dev, cpu, strict=True):
            assert xd.dtype == xc.dtype == torch.float32 and torch.equal(xd, xc) and torch.equal(yd, yc)
    for loader_d, loader_c in ((device.val_dataloader(), workers.val_dataloader()),
                               (device.test_dataloader(), workers.test_dataloader())):
        for (xd, yd), (xc, yc) in zip(loader_d, loader_c, strict=True):
            assert torch.equal(xd, xc) and torch.equal(yd, yc)


def _epochs(dm, epochs=(0, 1)):
    loader = dm.train_dataloader()
    out = []
    for e in epochs:
        loader.sampler.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def test_same_seed_same_batches(cifar10_dir):
    def make(seed):
        dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=8, cutout=16, device_resident=True, seed=seed)
        dm.setup("fit")
        return _epochs(dm)

    first, again, other = make(0), make(0), make(1)
    for ea, eb in zip(first, again, strict=True):
        for (xa, ya), (xb, yb) in zip(ea, eb, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][0][0], first[1][0][0])  # epochs differ
    assert not torch.equal(first[0][0][0], other[0][0][0])  # seeds differ
    # a second pass over the same epoch repeats it (nothing is carried over between passes)
    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=8, cutout=16, device_resident=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(list(loader), list(loader), strict=True))


def test_ranks_take_disjoint_shards_like_distributed_sampler():
    from torch.utils.data import DistributedSampler

    for n, world in ((20, 2), (23, 4)):
        images, labels = torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n)
        shards = [torch.cat([y for _, y in DeviceBatches(images, labels, 5, (0.0,) * 3, (1.0,) * 3, shuffle=False,
                                                         rank=r, world_size=world)]) for r in range(world)]
        for r in range(world):
            assert shards[r].tolist() == list(DistributedSampler(range(n), world, r, shuffle=False))
        shuffled = [torch.cat([y for _, y in DeviceBatches(images, labels, 5, (0.0,) * 3, (1.0,) * 3, seed=1,
                                                           rank=r, world_size=world)]) for r in range(world)]
        everything = torch.cat(shuffled)
        assert sorted(set(everything.tolist())) == list(range(n))
        assert len(everything) - n == -n % world  # only DistributedSampler's padding repeats


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        if name == "_to_copy" and (kwargs or {}).get("device") is not None:
            name = "_to_copy(device)"  # .to(device) / .cpu(); dtype conversions (.float()) have no device
        self.names.append(name)
        return func(*args, **(kwargs or {}))


def test_no_device_to_host_read_per_step(cifar10_dir):
    """Every op a step runs (after the epoch's plan is drawn at the first batch) is recorded: none reads a device
    value back to the host (``_local_scalar_dense`` is what ``.item()``, ``int()`` and ``bool()`` run; ``nonzero``
    and ``masked_select`` are the data-dependent shapes of boolean indexing), and nothing is copied to another
    device (``_to_copy`` with a device)."""
    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, cutout=16, device_resident=True)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)  # draws the epoch's plan and copies it to the device (once per epoch)
    with _Ops() as ops:
        for _ in range(3):
            next(it)
    forbidden = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "_to_copy(device)", "equal",
                 "unique", "_unique2"}
    assert ops.names and not forbidden & set(ops.names), sorted(set(ops.names))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
def test_no_sync_per_step_on_cuda(tmp_path):
    from tests import fakedata

    data_dir = fakedata.write_cifar10(tmp_path, n_train=200, n_test=20)
    dm = CIFAR10DataModule(data_dir=data_dir, batch_size=32, cutout=16, device_resident=True)
    dm.trainer = pl.Trainer(accelerator="gpu", devices=1, logger=False)  # what Trainer.fit does before setup
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.device.type == "cuda"
    it = iter(loader)
    next(it)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in it:
            assert x.is_cuda and y.is_cuda
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_too_little_device_memory_falls_back_with_a_warning(cifar10_dir):
    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, device_resident=True, device_budget_mb=0.01)
    with pytest.warns(UserWarning, match=r"device_resident needs 0\.1 MiB on cpu .* budget is 0\.0 MiB "
                                         r"\(data.init_args.device_budget_mb\); using the DataLoader worker"):
        dm.setup("fit")
    assert isinstance(dm.train_dataloader(), DataLoader) and isinstance(dm.val_dataloader(), DataLoader)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="device_budget_mb"):
        CIFAR10DataModule(data_dir=cifar10_dir, device_resident=True, device_budget_mb=-1)


def test_autoaugment_is_refused_naming_the_alternative(cifar10_dir):
    with pytest.raises(ValueError) as info:
        CIFAR10DataModule(data_dir=cifar10_dir, device_resident=True, autoaugment=True, cutout=16)
    msg = str(info.value)
    assert "data.init_args.device_resident: true" in msg and "data.init_args.autoaugment: true" in msg
    assert "data.init_args.device_resident: false" in msg and "data.init_args.autoaugment: false" in msg
    assert "\n" not in msg


def test_auto_is_the_worker_pipeline_off_cuda_and_accepts_autoaugment(cifar10_dir):
    """The recipes' `device_resident: auto`: batched device augmentation only on a CUDA device; on a CPU the
    DataLoader workers overlap augmentation with compute (and AutoAugment recipes stay on the workers)."""
    dm = CIFAR10DataModule(data_dir=cifar10_dir, batch_size=4, device_resident="auto")
    dm.setup("fit")  # no Trainer: the CPU
    assert not dm.device_resident and type(dm.train_dataloader()) is DataLoader
    CIFAR10DataModule(data_dir=cifar10_dir, device_resident="auto", autoaugment=True)  # not refused
    with pytest.raises(ValueError, match="true, false or auto"):
        CIFAR10DataModule(data_dir=cifar10_dir, device_resident="gpu")


# ---------------------------------------------------------------------------------------------- resume
class _Record(pl.Callback):
    """Records every training batch by global step."""

    def __init__(self):
        self.batches = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches[trainer.global_step] = (batch[0].clone(), batch[1].clone(), trainer.current_epoch, batch_idx)


def _model():
    from modules.image_classifier import ImageClassifier

    return ImageClassifier(net="small_cnn", net_kwargs={"widths": [4, 8]}, num_classes=10, log_images=False)


def _fit(data_dir, root, ckpt_path=None, callbacks=(), **data):
    pl.seed_everything(0)
    record = _Record()
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root, num_sanity_val_steps=0, deterministic=True,
                         enable_checkpointing=bool(callbacks), callbacks=[record, *callbacks])
    dm = CIFAR10DataModule(data_dir=data_dir, batch_size=4, cutout=16, device_resident=True, seed=7, **data)
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return record.batches, model, [str(w.message) for w in caught]


def test_resume_mid_epoch_or_at_an_epoch_boundary_sees_the_uninterrupted_batches(cifar10_dir, tmp_path):
    """20 images, batch 4: 5 steps per epoch, 3 epochs. The uninterrupted run saves a checkpoint after every step
    and at every epoch end; runs resumed from step 7 (mid epoch 1), from the end of epoch 0 and from the last
    step of epoch 0 see exactly the batches the uninterrupted run saw from there on, and end with its weights."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    steps = ModelCheckpoint(dirpath=tmp_path / "steps", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    epochs = ModelCheckpoint(dirpath=tmp_path / "epochs", filename="{epoch}", save_top_k=-1)
    full, full_model, _ = _fit(cifar10_dir, tmp_path / "full", callbacks=[steps, epochs])
    assert sorted(full) == list(range(15))
    assert {full[s][2] for s in full} == {0, 1, 2}
    for name, first in (("steps/step=7.ckpt", 7), ("epochs/epoch=0.ckpt", 5), ("steps/step=5.ckpt", 5)):
        resumed, model, _ = _fit(cifar10_dir, tmp_path / "resumed", ckpt_path=tmp_path / name)
        assert sorted(resumed) == list(range(first, 15)), name
        for s, (x, y, epoch, batch_idx) in resumed.items():
            assert (epoch, batch_idx) == full[s][2:], (name, s)
            assert torch.equal(x, full[s][0]) and torch.equal(y, full[s][1]), (name, s)
        for (k, v), v_full in zip(model.state_dict().items(), full_model.state_dict().values(), strict=True):
            torch.testing.assert_close(v, v_full, msg=f"{name}: {k}")


def test_resume_across_the_memory_fallback(cifar10_dir, tmp_path):
    """A device-path checkpoint written mid-epoch resumes on the worker-pipeline fallback (too little device
    memory) with a warning, and the fallback's own checkpoint resumes on the device path: no loader-state error."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def steps(name):
        return ModelCheckpoint(dirpath=tmp_path / name, filename="{step}", every_n_train_steps=1, save_top_k=-1)

    _fit(cifar10_dir, tmp_path / "a", callbacks=[steps("a")])
    batches, _, caught = _fit(cifar10_dir, tmp_path / "b", ckpt_path=tmp_path / "a" / "step=7.ckpt",
                              callbacks=[steps("b")], device_budget_mb=0.0)
    assert sorted(batches) == list(range(7, 15))
    assert any("using the DataLoader worker pipeline instead" in m for m in caught)
    assert any("after batch 2 of epoch 1" in m and "replays that epoch's order" in m for m in caught)
    batches, _, _ = _fit(cifar10_dir, tmp_path / "c", ckpt_path=tmp_path / "b" / "step=12.ckpt")
    assert sorted(batches) == list(range(12, 15))


# ---------------------------------------------------------------------------------------------- DDP
class RecordSamples(pl.Callback):
    """For the DDP tests (loaded by class path in the ranks): writes ``<out_dir>/rank<r>.json`` with the sha1 of
    every training image (un-normalised back to uint8) per epoch and per global step."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.seen: dict[int, list[str]] = {}
        self.steps: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        dm = trainer.datamodule
        mean = torch.tensor(dm.mean, device=batch[0].device).view(3, 1, 1)
        std = torch.tensor(dm.std, device=batch[0].device).view(3, 1, 1)
        raw = ((batch[0] * std + mean) * 255).round().to(torch.uint8).cpu()
        hashes = [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in raw]
        self.seen.setdefault(trainer.current_epoch, []).extend(hashes)
        self.steps[trainer.global_step] = hashes

    def on_train_end(self, trainer, pl_module):
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"seen": self.seen, "steps": self.steps, "world_size": trainer.world_size,
                       "loader": type(trainer.train_dataloader).__name__}, f)


_DDP_BASE = ["fit", "--seed_everything=0", "--model=modules.image_classifier.ImageClassifier",
             "--model.init_args.net=small_cnn", "--model.init_args.net_kwargs={widths: [4, 8]}",
             "--model.init_args.log_images=false", "--data=datamodules.cifar.CIFAR10DataModule",
             "--data.init_args.batch_size=4", "--data.init_args.device_resident=true", "--trainer.logger=false",
             "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]


def test_two_gloo_ranks_see_disjoint_shards(cifar10_dir, tmp_path):
    from datamodules.cifar import _CIFAR10Files
    from tests.ddp import run_ddp

    out = tmp_path / "seen"
    run_ddp([*_DDP_BASE, f"--data.init_args.data_dir={cifar10_dir}", "--data.init_args.augment=false",
             "--trainer.max_epochs=2", "--trainer.enable_checkpointing=false",
             "--trainer.callbacks+=tests.datamodules.test_cifar_device.RecordSamples",
             f"--trainer.callbacks.out_dir={out}"], tmp_path / "runs", timeout=150)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 and r["loader"] == "DeviceBatches" for r in ranks)
    data = _CIFAR10Files(cifar10_dir, train=True).data  # (20, 32, 32, 3)
    index = {hashlib.sha1(np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()).hexdigest(): i
             for i, img in enumerate(data)}
    orders = []
    for epoch in ("0", "1"):
        shard0, shard1 = ([index[h] for h in r["seen"][epoch]] for r in ranks)
        assert len(shard0) == len(shard1) == 10  # 20 images, 2 ranks: no padding needed
        assert not set(shard0) & set(shard1) and set(shard0) | set(shard1) == set(range(20))
        orders.append(shard0)
    assert orders[0] != orders[1]  # reshuffled per epoch


@pytest.mark.slow
def test_ddp_resume_mid_epoch_sees_the_uninterrupted_batches_on_every_rank(cifar10_dir, tmp_path):
    """2 gloo ranks through main.py, crop + flip + Cutout: 20 images, batch 4, 3 steps per epoch and rank, 3
    epochs. A run resumed with ``--ckpt_path`` from the checkpoint after step 4 (mid epoch 1) sees, on each rank,
    the batches the uninterrupted run saw from step 4 on, and ends with its weights."""
    from tests.ddp import run_ddp

    root = tmp_path / "runs"
    base = [*_DDP_BASE, f"--data.init_args.data_dir={cifar10_dir}", "--data.init_args.cutout=16",
            "--trainer.max_epochs=3", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=1", "--trainer.callbacks.save_top_k=-1",
            "--trainer.callbacks.filename={step}", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks+=tests.datamodules.test_cifar_device.RecordSamples"]
    run_ddp([*base, f"--trainer.callbacks.out_dir={tmp_path / 'full'}", "--run_name=full"], root, timeout=110)
    run_ddp([*base, f"--trainer.callbacks.out_dir={tmp_path / 'resumed'}", "--run_name=resumed",
             f"--ckpt_path={root / 'full' / 'checkpoints' / 'step=4.ckpt'}"], root, timeout=110)
    for r in range(2):
        full, resumed = (json.loads((tmp_path / run / f"rank{r}.json").read_text())["steps"]
                         for run in ("full", "resumed"))
        assert sorted(map(int, full)) == list(range(9)) and sorted(map(int, resumed)) == list(range(4, 9))
        for step, hashes in resumed.items():
            assert hashes == full[step], (r, step)
    full, resumed = (torch.load(root / run / "checkpoints" / "last.ckpt", weights_only=False)
                     for run in ("full", "resumed"))
    assert full["global_step"] == resumed["global_step"] == 9
    for k, v in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][k], v, msg=k)
