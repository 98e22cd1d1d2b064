"""Dataset construction; see the package docstring for the accepted specs."""

import dataclasses
import os
import tarfile

import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .tensors import MEAN, STD, TensorImages


@dataclasses.dataclass
class DatasetBundle:
    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int
    input_size: tuple  # (C, H, W)
    name: str
    train_plain: Dataset | None = None  # the train split with evaluation transforms (thresholds, statistics)

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split expected \"train\", \"val\" or \"test\", got {name!r}")
        ds = getattr(self, name)
        if ds is None:
            raise ValueError(f"{self.name}: no {name!r} split (val_fraction was 0)")
        return ds


def data_home() -> str:
    return os.environ.get("CMN_DATA", os.path.join(os.path.expanduser("~"), ".cache", "cmn_ext", "data"))


def _digits(augment: bool, seed: int, size: int = 32, test_fraction: float = 0.2):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("the embedded 'digits' dataset needs scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    # Held normalised, [N, H, W, C]; padding adds the normalised zero. Digits are not mirror-symmetric:
    # translation only.
    x = x.permute(0, 2, 3, 1).contiguous()
    pad = max(1, size // 8)
    train_eval = TensorImages(x[train_idx], y[train_idx], augment=False, flip=False, pad=pad, mean=None, std=None)
    test = TensorImages(x[test_idx], y[test_idx], augment=False, flip=False, pad=pad, mean=None, std=None)
    return train_eval.view(augment=augment), train_eval, test, 10, (3, size, size)


def _vision():
    try:
        import torchvision
        from torchvision import transforms
    except ImportError as e:
        raise ImportError("CIFAR and ImageFolder datasets need torchvision (pip install torchvision matching "
                          "your torch, e.g. torchvision==0.29.1 for torch 2.14.1)") from e
    return torchvision, transforms


def _transforms(size: int, augment: bool):
    _, T = _vision()
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if size <= 64:  # CIFAR-style: pad-and-crop + flip
        return T.Compose(([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()] if augment else []) + norm)
    if augment:  # ImageNet-style
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip()] + norm)
    return T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size)] + norm)


def _cifar(which: str, root: str | None, augment: bool, download: bool, tensors: bool = True):
    tv, _ = _vision()
    cls = tv.datasets.CIFAR10 if which == "cifar10" else tv.datasets.CIFAR100
    root = root or data_home()
    classes = 10 if which == "cifar10" else 100
    try:
        if tensors:  # torchvision keeps the split decoded (uint8 [N, 32, 32, 3]): hold it as tensors
            make = lambda train: cls(root, train=train, download=download)  # noqa: E731
            tr, te = make(True), make(False)
        else:
            make = lambda train, aug: cls(root, train=train, transform=_transforms(32, aug), download=download)  # noqa: E731
            return make(True, augment), make(True, False), make(False, False), classes, (3, 32, 32)
    except RuntimeError as e:
        raise RuntimeError(f"{which}: not found under {root!r} and could not be downloaded ({e}); pass "
                           f"{which}:<root> pointing at an existing copy") from e
    as_tensors = lambda ds: TensorImages(torch.from_numpy(ds.data).contiguous(),  # noqa: E731
                                         torch.as_tensor(ds.targets, dtype=torch.int64), pad=4, flip=True)
    train_eval, test = as_tensors(tr), as_tensors(te)
    return train_eval.view(augment=augment), train_eval, test, classes, (3, 32, 32)


def _extract_once(archive: str) -> str:
    base = os.path.basename(archive).split(".tar")[0]
    target = os.path.join(data_home(), base)
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        os.makedirs(target, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        open(marker, "w").close()
    return target


def _verify_images(root: str, paths: list[str]) -> None:
    """Decode every image once before a run relies on them, so that a truncated or foreign file is reported up
    front (all of them, by name) instead of failing mid-epoch. A marker in the data cache, keyed by the root and
    its files' sizes and times, skips this on later runs."""
    import hashlib

    from PIL import Image
    from tqdm import tqdm

    h = hashlib.sha1(os.path.abspath(root).encode())
    for path in paths:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    marker = os.path.join(data_home(), "verified", h.hexdigest())
    if os.path.exists(marker):
        return
    bad = []
    for path in tqdm(paths, desc="checking images", leave=False, disable=len(paths) < 2000):
        try:
            with Image.open(path) as im:
                im.load()  # a full decode: verify() alone lets truncated JPEGs through
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
            bad.append(f"{path} ({str(e) or type(e).__name__})")
    if bad:
        listed = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ValueError(f"imagefolder: {len(bad)} of {len(paths)} images under {root} cannot be decoded; remove "
                         f"or replace them:\n  {listed}")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    open(marker, "w").close()


def _imagefolder_tensors(root: str, test_dir: str, augment: bool, size: int):
    """A CIFAR-style ImageFolder (images of ``size`` x ``size``, at most 64) as TensorImages, from the decoded
    cache (see ``cache.py``); None when an image has another size (the per-sample path then applies)."""
    from torchvision.datasets import ImageFolder

    from .cache import NotUniform, cached_split

    train_f, test_f = ImageFolder(os.path.join(root, "train")), ImageFolder(test_dir)
    if train_f.classes != test_f.classes:
        raise ValueError(f"imagefolder: train and test class folders differ under {root}")
    try:
        tr_x, tr_y, _ = cached_split(train_f.root, train_f.samples, size, name="train")
        te_x, te_y, _ = cached_split(test_f.root, test_f.samples, size, name=os.path.basename(test_dir))
    except NotUniform as e:
        warnings.warn(f"imagefolder: {e}: decoding per sample instead of holding the split as tensors",
                      stacklevel=3)
        return None
    train_eval = TensorImages(tr_x, tr_y, pad=4, flip=True)
    test = TensorImages(te_x, te_y, pad=4, flip=True)
    return train_eval.view(augment=augment), train_eval, test, len(train_f.classes), (3, size, size)


def _imagefolder(root: str, augment: bool, image_size: int | None, tensors: bool = True):
    tv, _ = _vision()
    if root.endswith((".tar.gz", ".tgz", ".tar")):
        if not os.path.isfile(root):
            raise FileNotFoundError(f"imagefolder: archive not found: {root}")
        root = _extract_once(root)
    if not os.path.isdir(os.path.join(root, "train")):
        raise FileNotFoundError(f"imagefolder: expected {root}/train/<class>/... (and test/ or val/)")
    test_dir = next((os.path.join(root, d) for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
    if test_dir is None:
        raise FileNotFoundError(f"imagefolder: no test/ or val/ folder under {root}")
    probe = tv.datasets.ImageFolder(test_dir)
    _verify_images(root, [path for path, _ in tv.datasets.ImageFolder(os.path.join(root, "train")).samples]
                   + [path for path, _ in probe.samples])
    if image_size is None:
        from PIL import Image

        with Image.open(probe.samples[0][0]) as im:
            image_size = 32 if max(im.size) <= 64 else 224
    if tensors and image_size <= 64:
        held = _imagefolder_tensors(root, test_dir, augment, image_size)
        if held is not None:
            return held
    train = tv.datasets.ImageFolder(os.path.join(root, "train"), transform=_transforms(image_size, augment))
    train_eval = tv.datasets.ImageFolder(os.path.join(root, "train"), transform=_transforms(image_size, False))
    test = tv.datasets.ImageFolder(test_dir, transform=_transforms(image_size, False))
    if train.classes != test.classes:
        raise ValueError(f"imagefolder: train and test class folders differ under {root}")
    return train, train_eval, test, len(train.classes), (3, image_size, image_size)


def _subset(ds, n: int | None, seed: int):
    if n is None or n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(ds, idx.tolist())


def build_datasets(spec: str = "digits", *, val_fraction: float = 0.1, seed: int = 0, augment: bool = True,
                   download: bool = False, image_size: int | None = None, limit: dict | int | None = None,
                   tensors: bool = True) -> DatasetBundle:
    """Train / val / test datasets for ``spec``. The validation split is ``val_fraction`` of train, drawn with
    ``seed``, and uses the evaluation transforms. ``limit`` caps the size of each split (an int for all, or
    ``{"train": n, "val": n, "test": n}``) with a seeded random subset, for quick runs.

    ``tensors`` (default): every split is a ``TensorImages`` (or a ``Subset`` of one) that the trainer's fast
    path loads whole onto the device: digits and torchvision CIFAR as they are, CIFAR-style ImageFolders (images
    of at most 64x64) decoded once into the on-disk cache. ``tensors=False``, and ImageNet-style ImageFolders
    (their random resized crop needs the full-size image), give the torchvision per-sample datasets, decoded
    and transformed on every access."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"build_datasets: 'val_fraction' expected in [0, 1), got {val_fraction}")
    name, _, arg = spec.partition(":")
    if name == "digits":
        train, train_eval, test, classes, size = _digits(augment, seed, image_size or 32)
    elif name in ("cifar10", "cifar100"):
        train, train_eval, test, classes, size = _cifar(name, arg or None, augment, download, tensors)
    elif name == "imagefolder":
        if not arg:
            raise ValueError("build_datasets: 'imagefolder' needs a root, as imagefolder:<root>")
        train, train_eval, test, classes, size = _imagefolder(arg, augment, image_size, tensors)
    else:
        raise ValueError(f"build_datasets: unknown dataset {spec!r}; expected digits, cifar10[:root], "
                         "cifar100[:root] or imagefolder:<root>")
    n = len(train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(n * val_fraction))
    val = Subset(train_eval, perm[:n_val]) if n_val else None
    plain = Subset(train_eval, perm[n_val:]) if n_val else train_eval
    train = Subset(train, perm[n_val:]) if n_val else train
    lim = limit if isinstance(limit, dict) else {"train": limit, "val": limit, "test": limit}
    unknown = set(lim) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"build_datasets: 'limit' keys expected train/val/test, got {sorted(unknown)}")
    train = _subset(train, lim.get("train"), seed + 1)
    plain = _subset(plain, lim.get("train"), seed + 1)  # the same samples as train
    val = _subset(val, lim.get("val"), seed + 2) if val is not None else None
    test = _subset(test, lim.get("test"), seed + 3)
    return DatasetBundle(train, val, test, classes, size, spec, plain)


def make_loader(ds: Dataset, batch_size: int, *, train: bool, workers: int = 0, seed: int = 0,
                distributed: bool = False) -> DataLoader:
    """A DataLoader; shuffled with a seeded generator for training, sharded with a DistributedSampler when
    ``distributed`` (call ``loader.sampler.set_epoch`` each epoch; the trainer does)."""
    sampler = None
    if distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=train, seed=seed, drop_last=False)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, generator=gen, drop_last=False, persistent_workers=workers > 0)
