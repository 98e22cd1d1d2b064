"""The fast data path: splits held as tensors, the decoded-image cache, device-side batches (augmentation
equivalent to torchvision's, seeded, sharded) and the trainer / evaluate using them."""

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from cmn_ext.data import DeviceBatches, TensorImages, build_datasets, tensor_view
from cmn_ext.data.tensors import crop_flip
from cmn_ext.train import Trainer, evaluate

CFG = {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0, "schedule": "none",
       "seed": 0}


class PerSample(Dataset):
    """A dataset the fast path does not recognise: forces the DataLoader path on the same samples."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def _tiny_net(classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, classes))


def _noise_tree(root, n=5, size=32, fmt="png", classes=("cat", "dog", "emu")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / cls / f"{i}.{fmt}")


def _stack(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([ds[i][1] for i in range(len(ds))])


# --- what build_datasets returns ------------------------------------------------------------------------------
def test_every_digits_split_resolves_to_tensors():
    d = build_datasets("digits", val_fraction=0.2, limit={"train": 50, "val": 20, "test": 30})
    for ds in (d.train, d.val, d.test, d.train_plain):
        view = tensor_view(ds)
        assert isinstance(view.base, TensorImages) and len(view) == len(ds)
    # a Subset chain resolves to the same samples as indexing it
    view = tensor_view(d.val)
    x, y = _stack(d.val)
    assert torch.equal(view.base.labels[view.indices], y)
    assert tensor_view(d.train).base.augment and not tensor_view(d.val).base.augment
    assert tensor_view(PerSample(d.test)) is None


def test_imagefolder_eval_inputs_are_bit_identical_to_the_torchvision_path(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setenv("CMN_DATA", str(tmp_path / "home"))
    _noise_tree(tmp_path / "tree", fmt="jpg")
    spec = f"imagefolder:{tmp_path / 'tree'}"
    new = build_datasets(spec, val_fraction=0.2, seed=1)
    old = build_datasets(spec, val_fraction=0.2, seed=1, tensors=False)
    assert tensor_view(new.test) is not None and tensor_view(old.test) is None
    for split in ("val", "test"):
        xo, yo = _stack(old.split(split))
        xn, yn = _stack(new.split(split))
        xb = torch.cat([x for x, _ in DeviceBatches(new.split(split), 4)])
        yb = torch.cat([y for _, y in DeviceBatches(new.split(split), 4)])
        assert torch.equal(xo, xn) and torch.equal(xo, xb) and torch.equal(yo, yn) and torch.equal(yo, yb)
    xo, _ = _stack(old.train_plain)
    assert torch.equal(xo, _stack(new.train_plain)[0])


@pytest.mark.parametrize("spec", ["digits", "imagefolder"])
def test_evaluate_gives_the_per_sample_paths_numbers_exactly(tmp_path, monkeypatch, spec):
    if spec == "imagefolder":
        pytest.importorskip("torchvision")
        monkeypatch.setenv("CMN_DATA", str(tmp_path / "home"))
        _noise_tree(tmp_path / "tree", n=7)
        spec = f"imagefolder:{tmp_path / 'tree'}"
        data, old = build_datasets(spec, val_fraction=0.0), build_datasets(spec, val_fraction=0.0, tensors=False)
        old_test = old.test
    else:
        data = build_datasets("digits", val_fraction=0.0, limit={"test": 100})
        old_test = PerSample(data.test)
    net = _tiny_net(data.num_classes)
    with torch.no_grad():  # give the batch norm non-trivial running statistics
        net.train()
        net(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    net.eval()
    fast = evaluate(net, data.test, batch_size=8)
    slow = evaluate(net, old_test, batch_size=8)
    assert fast == slow and fast["n"] == len(data.test)


def test_per_sample_augmentation_still_random_and_only_in_train():
    d = build_datasets("digits", val_fraction=0.1, limit=40)
    torch.manual_seed(0)
    views = {tuple(d.train[0][0].flatten().tolist()) for _ in range(10)}
    assert len(views) > 1
    assert torch.equal(d.val[0][0], d.val[0][0])
    assert d.train[0][0].is_contiguous() and d.train[0][0].shape == (3, 32, 32)


# --- the augmentation ----------------------------------------------------------------------------------------
def test_crop_flip_is_torchvisions_pad_crop_flip_for_the_same_parameters():
    tv = pytest.importorskip("torchvision")
    TF = tv.transforms.functional
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=g)
    dy = torch.tensor([0, 8, 3, 4, 8, 0])
    dx = torch.tensor([0, 8, 5, 4, 0, 8])
    flip = torch.tensor([False, True, True, False, False, True])
    order = torch.tensor([5, 4, 3, 2, 1, 0])
    out = crop_flip(x, order, dy, dx, flip, 4)
    for i in range(6):
        ref = TF.crop(TF.pad(x[order[i]].permute(2, 0, 1), [4], fill=0), int(dy[i]), int(dx[i]), 32, 32)
        ref = TF.hflip(ref) if flip[i] else ref
        assert torch.equal(out[i].permute(2, 0, 1), ref), i
    no_flip = torch.zeros(6, dtype=torch.bool)
    assert torch.equal(crop_flip(x, order, dy, dx, None, 4), crop_flip(x, order, dy, dx, no_flip, 4))
    # float images (held normalised) pad with 0.0 the same way
    assert torch.equal(crop_flip(x.float(), order, dy, dx, flip, 4), out.float())


def test_augmentation_parameters_are_uniform_and_seeded():
    data = build_datasets("digits", val_fraction=0.0)
    base = tensor_view(data.train).base
    train = TensorImages(torch.zeros(2000, 8, 8, 3, dtype=torch.uint8), torch.zeros(2000, dtype=torch.int64),
                         augment=True, flip=True, pad=4)
    b = DeviceBatches(train, 100, train=True, seed=3)
    plan = b.plan()
    assert sorted(plan[0].tolist()) == list(range(2000))  # a permutation
    counts = torch.bincount(torch.cat([plan[1], plan[2]]), minlength=9).float()
    assert len(counts) == 9 and counts.min() > 0.8 * 4000 / 9 and counts.max() < 1.2 * 4000 / 9  # RandomCrop's
    assert 0.45 < plan[3].float().mean() < 0.55  # RandomHorizontalFlip(0.5)
    assert torch.equal(plan, DeviceBatches(train, 100, train=True, seed=3).plan())  # reproducible
    b.set_epoch(1)
    assert not torch.equal(plan, b.plan())  # a new order and new crops each epoch
    assert not torch.equal(plan, DeviceBatches(train, 100, train=True, seed=4).plan())
    # digits: translation only (pad = size / 8), no flips
    digits = DeviceBatches(data.train, 64, train=True)
    assert base.pad == 4 and not base.flip
    xs = [x for x, _ in digits]
    assert sum(len(x) for x in xs) == len(data.train) and xs[0].shape[1:] == (3, 32, 32)


def test_train_batches_are_augmented_views_of_the_right_images():
    images = torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8)
    ds = TensorImages(images, torch.arange(10), augment=True, pad=2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    b = DeviceBatches(ds, 4, train=True, seed=0)
    plan = b.plan()
    got = torch.cat([x for x, _ in b])
    labels = torch.cat([y for _, y in b])
    assert torch.equal(labels, plan[0])
    for k in range(10):
        i, dy, dx, f = plan[:, k].tolist()
        ref = torch.nn.functional.pad(images[i].permute(2, 0, 1), (2, 2, 2, 2))[:, dy:dy + 8, dx:dx + 8]
        ref = ref.flip(-1) if f else ref
        assert torch.equal(got[k], ref.float() / 255), k


def test_channels_last_layout_and_eval_order():
    ds = TensorImages(torch.randint(0, 256, (7, 8, 8, 3), dtype=torch.uint8), torch.arange(7))
    x, y = next(iter(DeviceBatches(ds, 4, channels_last=True)))
    assert x.shape == (4, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    x2, _ = next(iter(DeviceBatches(ds, 4, channels_last=False)))
    assert x2.is_contiguous() and torch.equal(x, x2) and torch.equal(y, torch.arange(4))
    assert len(DeviceBatches(ds, 4)) == 2 and len(DeviceBatches(ds, 4, drop_last=True)) == 1


def test_ddp_shards_of_the_permutation():
    ds = TensorImages(torch.zeros(10, 4, 4, 3, dtype=torch.uint8), torch.arange(10), augment=True)
    plans = [DeviceBatches(ds, 2, train=True, seed=1, rank=r, world=3).plan() for r in range(3)]
    whole = DeviceBatches(ds, 2, train=True, seed=1).plan()
    assert all(p.shape == (4, 4) for p in plans)  # ceil(10 / 3) each, as DistributedSampler
    seen = torch.cat([p[0] for p in plans])
    assert set(seen.tolist()) == set(range(10)) and len(seen) == 12
    # rank r takes every third position of the one (padded) permutation, augmentation included
    assert torch.equal(plans[1][:, :3], whole[:, 1:10:3])
    evals = [torch.cat([y for _, y in DeviceBatches(ds, 2, rank=r, world=3)]) for r in range(3)]
    assert sorted(torch.cat(evals).tolist()) == list(range(10))  # each sample exactly once
    assert evals[0].tolist() == [0, 3, 6, 9]


# --- the decoded-image cache ---------------------------------------------------------------------------------
def test_cache_is_written_once_reused_and_keyed_by_the_listing(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    from cmn_ext.data import cache

    monkeypatch.setenv("CMN_DATA", str(tmp_path / "home"))
    monkeypatch.setenv("CMN_DATA_CACHE", str(tmp_path / "cache"))
    _noise_tree(tmp_path / "tree", n=2)
    spec = f"imagefolder:{tmp_path / 'tree'}"
    build_datasets(spec, val_fraction=0.0)
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 2 and all(f.startswith("tree-") and f.endswith(".pt") for f in files)

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "decode", no_decode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = build_datasets(spec, val_fraction=0.0)  # from the cache, silently
    assert len(d.train) == 6
    monkeypatch.undo()
    monkeypatch.setenv("CMN_DATA", str(tmp_path / "home"))
    monkeypatch.setenv("CMN_DATA_CACHE", str(tmp_path / "cache"))
    # a changed image changes the key: a new cache file, the new pixels
    from PIL import Image

    img = tmp_path / "tree" / "test" / "cat" / "0.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(img)
    os.utime(img, ns=(1, 1))
    d = build_datasets(spec, val_fraction=0.0)
    assert len(os.listdir(tmp_path / "cache")) == 3
    assert float(d.test[0][0][0, 0, 0]) == pytest.approx((1 / 255 - 0.485) / 0.229, abs=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_corrupt_or_foreign_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    pytest.importorskip("torchvision")
    monkeypatch.setenv("CMN_DATA", str(tmp_path / "home"))
    monkeypatch.setenv("CMN_DATA_CACHE", str(tmp_path / "cache"))
    _noise_tree(tmp_path / "tree", n=2)
    spec = f"imagefolder:{tmp_path / 'tree'}"
    good = build_datasets(spec, val_fraction=0.0)
    path = tmp_path / "cache" / next(f for f in os.listdir(tmp_path / "cache") if "-test-" in f)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        torch.save({"format": "cmn_ext.image_cache/1", "key": "x" * 64, "images": torch.zeros(1)}, path)
    with pytest.warns(UserWarning, match=f"image cache {path}.*rebuilding"):
        again = build_datasets(spec, val_fraction=0.0)
    assert torch.equal(_stack(again.test)[0], _stack(good.test)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_datasets(spec, val_fraction=0.0)  # rebuilt: fine now


def test_images_of_another_size_fall_back_to_the_per_sample_path(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    from PIL import Image

    monkeypatch.setenv("CMN_DATA", str(tmp_path / "home"))
    monkeypatch.setenv("CMN_DATA_CACHE", str(tmp_path / "cache"))
    _noise_tree(tmp_path / "tree", n=2)
    Image.new("RGB", (30, 32)).save(tmp_path / "tree" / "train" / "dog" / "odd.png")
    with pytest.warns(UserWarning, match="odd.png is 30x32, not 32x32"):
        d = build_datasets(f"imagefolder:{tmp_path / 'tree'}", val_fraction=0.0)
    assert tensor_view(d.train) is None and len(d.train) == 7


def test_torchvision_cifar_is_held_as_tensors(tmp_path, monkeypatch):
    tv = pytest.importorskip("torchvision")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch(4), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(tv.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv.datasets.cifar, "check_integrity", lambda *a, **k: True)
    new = build_datasets(f"cifar10:{tmp_path}", val_fraction=0.0)
    old = build_datasets(f"cifar10:{tmp_path}", val_fraction=0.0, tensors=False)
    assert len(new.train) == 20 and len(new.test) == 4 and tensor_view(new.train).base.flip
    assert torch.equal(_stack(new.test)[0], _stack(old.test)[0])
    assert torch.equal(_stack(new.test)[1], _stack(old.test)[1])


# --- the trainer ---------------------------------------------------------------------------------------------
def test_trainer_takes_the_fast_path_and_falls_back(tmp_path):
    data = build_datasets("digits", val_fraction=0.25, limit={"train": 64, "val": 32, "test": 32})
    t = Trainer(_tiny_net(), data, CFG, None, progress=False)
    assert isinstance(t._loader(0), DeviceBatches)
    out = t.fit()
    assert len(out["history"]) == 1 and 0 <= out["history"][0]["train_top1"] <= 1
    # the same run twice gives the same weights (the augmentation generator is seeded from cfg seed)
    t2 = Trainer(_tiny_net(), data, CFG, None, progress=False)
    t2.fit()
    for a, b in zip(t.model.state_dict().values(), t2.model.state_dict().values()):
        assert torch.equal(a, b)
    # a dataset the fast path does not know: the DataLoader path, still training
    data.train = PerSample(data.train)
    t3 = Trainer(_tiny_net(), data, CFG, None, progress=False)
    assert isinstance(t3._loader(0), DataLoader)
    assert len(t3.fit()["history"]) == 1
    # and fast_data = False forces it
    data.train = Subset(data.train.ds.dataset, data.train.ds.indices)
    t4 = Trainer(_tiny_net(), data, CFG, None, progress=False)
    t4.fast_data = False
    assert isinstance(t4._loader(0), DataLoader)


def test_trainer_reports_a_non_finite_loss():
    data = build_datasets("digits", val_fraction=0.0, limit={"train": 64, "test": 16})
    t = Trainer(_tiny_net(), data, dict(CFG, lr=1e30, momentum=0.0), None, progress=False)
    with pytest.raises(FloatingPointError, match="loss became .* at epoch 1"):
        t.fit()


def test_trainer_on_the_cpu_with_channels_last_and_sync_every():
    data = build_datasets("digits", val_fraction=0.0, limit={"train": 96, "test": 32})
    t = Trainer(_tiny_net(), data, CFG, None, progress=False)
    t.channels_last, t.sync_every = True, 2
    row = t.train_epoch(0)
    assert np.isfinite(row["train_loss"]) and t._loader(0).channels_last


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this process")
def test_cuda_steps_do_not_synchronise_with_the_host():
    """The number of host synchronisations per epoch does not grow with the number of steps."""
    data = build_datasets("digits", val_fraction=0.0, limit={"train": 512, "test": 32})

    def syncs(batch_size):
        t = Trainer(_tiny_net(), data, dict(CFG, batch_size=batch_size), None, device="cuda", progress=False)
        t.sync_every = 10**6
        t.train_epoch(0)  # warm-up: allocations, cuDNN
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                t.train_epoch(1)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(16) == syncs(64)  # 32 steps and 8 steps: the same few per-epoch syncs
