"""Splits held whole as tensors, and the batches the trainer draws from them on the training device.

``TensorImages`` keeps a split as one image tensor ``[N, H, W, C]`` (uint8 pixels, normalised when a batch is
made; or float32 already normalised, as the embedded digits) plus labels ``[N]``. Indexed like any dataset it
gives what the torchvision transforms give (a normalised ``[C, H, W]`` float tensor, augmented from the global
RNG when ``augment``), so DataLoaders, ``Subset`` and direct indexing keep working.

``DeviceBatches`` is the fast path the trainer and ``evaluate`` take when a dataset resolves to a
``TensorImages`` (through any chain of ``Subset``): the split's images go to the device once (kept there for
the dataset's lifetime), and every batch is gathered, augmented (random crop with zero padding, horizontal
flip: the same distribution as ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip``), normalised and laid
out channels_last on the device. The epoch's order and augmentation parameters come from a CPU
``torch.Generator`` seeded with (seed, epoch) and travel to the device in one copy per epoch, so a step never
waits on the host and a run is reproducible across devices and resumes exactly. Under DDP every rank takes its
shard of the one permutation (padded to a multiple of the world size, as ``DistributedSampler``).

Evaluation batches are the same decoded tensors without augmentation, normalised with the same float
operations as ``ToTensor`` + ``Normalize`` (divide by 255, subtract the mean, divide by the std): the inputs
are bit-identical to the per-sample path's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import weakref

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

# The statistics the pretrained CIFAR ResNets were trained with (see ../shared/README.md).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class TensorImages(Dataset):
    """A split as tensors: ``images`` [N, H, W, C] (uint8 pixels normalised with ``mean`` / ``std``, or float32
    already normalised when ``mean`` is None) and ``labels`` [N] int64. ``augment``: pad by ``pad`` with zeros
    (black pixels for uint8; the normalised zero for float images), crop back at a uniform offset, and with
    ``flip`` mirror horizontally with probability 1/2."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, augment: bool = False, flip: bool = True,
                 pad: int = 4, mean: tuple | None = MEAN, std: tuple | None = STD):
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"TensorImages: expected images [N, H, W, C] and labels [N], got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        if images.dtype == torch.uint8:
            if mean is None or std is None:
                raise ValueError("TensorImages: uint8 images need 'mean' and 'std'")
        elif images.dtype != torch.float32 or mean is not None:
            raise ValueError(f"TensorImages: images expected uint8 (with mean/std) or float32 already normalised "
                             f"(mean=None), got {images.dtype} with mean={mean}")
        self.images, self.labels = images, labels.to(torch.int64)
        self.augment, self.flip, self.pad = bool(augment), bool(flip), int(pad)
        self.mean, self.std = (tuple(mean), tuple(std)) if mean is not None else (None, None)

    def view(self, *, augment: bool) -> "TensorImages":
        """The same tensors (shared, not copied) with augmentation on or off."""
        return TensorImages(self.images, self.labels, augment=augment, flip=self.flip, pad=self.pad,
                            mean=self.mean, std=self.std)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]  # [H, W, C]
        if self.augment:
            h, w = x.shape[:2]
            p = self.pad
            x = F.pad(x.permute(2, 0, 1), (p, p, p, p)).permute(1, 2, 0)
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[dy:dy + h, dx:dx + w]
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(1)
        return normalise(x.unsqueeze(0), self.mean, self.std)[0].permute(2, 0, 1).contiguous(), int(self.labels[i])


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [..., C] -> float32 ``(x / 255 - mean) / std``, the operations of ``ToTensor`` + ``Normalize`` in
    their order (bit-identical results); float input is returned as it is (already normalised). ``mean`` /
    ``std``: sequences, or float32 tensors [C] already on x's device (no host-to-device copy per batch)."""
    if x.dtype != torch.uint8:
        return x
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    return x.to(torch.float32).div_(255).sub_(m).div_(s)


@dataclasses.dataclass
class TensorView:
    """A dataset resolved to its tensors: ``base`` and the positions in it (None: all of them, in order)."""

    base: TensorImages
    indices: torch.Tensor | None

    def __len__(self):
        return len(self.base) if self.indices is None else len(self.indices)


def tensor_view(dataset) -> TensorView | None:
    """``dataset`` as a ``TensorImages`` and indices into it when it is one, or a (chain of) ``Subset`` of one;
    None otherwise (then only the DataLoader path applies)."""
    chain = []
    ds = dataset
    while isinstance(ds, Subset):
        chain.append(ds.indices)
        ds = ds.dataset
    if not isinstance(ds, TensorImages):
        return None
    idx = None
    for sub in reversed(chain):  # innermost Subset first
        sub = torch.as_tensor(sub, dtype=torch.int64)
        idx = sub if idx is None else idx[sub]
    return TensorView(ds, idx)


# The device copies of each dataset's tensors, dropped with the dataset: {dataset: {device: (images, labels)}}.
_ON_DEVICE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _device_tensors(dataset, view: TensorView, device: torch.device):
    try:
        per = _ON_DEVICE.setdefault(dataset, {})
    except TypeError:  # not weak-referenceable: no cache
        per = {}
    key = str(device)
    if key not in per:
        images, labels = view.base.images, view.base.labels
        if view.indices is not None:
            images, labels = images[view.indices], labels[view.indices]
        per[key] = (images.to(device).contiguous(), labels.to(device))
    return per[key]


def _epoch_seed(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"cmn_ext/{seed}/{epoch}".encode()).digest()[:8], "little") >> 1


def crop_flip(images: torch.Tensor, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor | None, pad: int) -> torch.Tensor:
    """Samples ``idx`` of ``images`` [N, H, W, C], each padded by ``pad`` with zeros, cropped back to H x W at
    offset (``dy``, ``dx``) in [0, 2·pad] and mirrored where ``flip`` (None: never), as one gather on the
    device: every output pixel reads its source pixel (or is zero where the crop reaches into the padding)."""
    _, h, w, c = images.shape
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = dy[:, None] + ar_h - pad  # [B, H] source rows, -pad .. h - 1 + pad
    cols = ar_w.expand(len(idx), w) if flip is None else torch.where(flip[:, None], (w - 1) - ar_w, ar_w)
    cols = dx[:, None] + cols - pad  # [B, W]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    src = (idx[:, None, None] * h + rows.clamp(0, h - 1)[:, :, None]) * w + cols.clamp(0, w - 1)[:, None, :]
    out = images.reshape(-1, c).index_select(0, src.reshape(-1)).view(len(idx), h, w, c)
    return out.masked_fill_(~inside[..., None], 0)


class DeviceBatches:
    """Batches ``(x, y)`` of a tensor-backed ``dataset`` made on ``device`` (see the module docstring).

    ``train``: a fresh seeded permutation per epoch (``set_epoch``) and augmentation when the dataset has it;
    otherwise the dataset's order, no augmentation. ``rank`` / ``world``: this process's shard (training: of the
    padded permutation, as ``DistributedSampler``; evaluation: ``rank::world``, each sample exactly once).
    ``channels_last``: x is [B, C, H, W] with channels-last strides (None: on CUDA only)."""

    def __init__(self, dataset, batch_size: int, *, device=None, train: bool = False, seed: int = 0,
                 rank: int = 0, world: int = 1, channels_last: bool | None = None, drop_last: bool = False):
        view = tensor_view(dataset)
        if view is None:
            raise TypeError(f"DeviceBatches: {type(dataset).__name__} does not resolve to TensorImages")
        if batch_size < 1:
            raise ValueError(f"DeviceBatches: 'batch_size' expected >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dataset, self.base = dataset, view.base
        self.batch_size, self.train, self.seed = int(batch_size), bool(train), int(seed)
        self.rank, self.world, self.drop_last = int(rank), int(world), bool(drop_last)
        self.channels_last = self.device.type == "cuda" if channels_last is None else bool(channels_last)
        self.augment = self.train and self.base.augment
        self.epoch = 0
        self.images, self.labels = _device_tensors(dataset, view, self.device)
        self.mean = self.std = None
        if self.base.mean is not None:
            self.mean = torch.tensor(self.base.mean, dtype=torch.float32).to(self.device)
            self.std = torch.tensor(self.base.std, dtype=torch.float32).to(self.device)
        n = len(self.labels)
        if self.train and self.world > 1:
            self.n_local = math.ceil(n / self.world)
        else:
            self.n_local = len(range(self.rank, n, self.world))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_local // self.batch_size if self.drop_last else math.ceil(self.n_local / self.batch_size)

    def plan(self) -> torch.Tensor:
        """This rank's epoch on the CPU: int64 [4, n_local] rows (sample index, dy, dx, flip)."""
        n = len(self.labels)
        if not self.train:
            order = torch.arange(self.rank, n, self.world, dtype=torch.int64)
            return torch.stack([order, *([torch.zeros_like(order)] * 3)])
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g)
        p = self.base.pad
        dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
        flip = (torch.rand(n, generator=g) < 0.5).to(torch.int64)
        plan = torch.stack([order, dy, dx, flip])
        total = self.n_local * self.world
        if total > n:  # DistributedSampler's padding: repeat the start of the epoch
            plan = torch.cat([plan, plan[:, :total - n]], 1)
        return plan[:, self.rank::self.world] if self.world > 1 else plan

    def __iter__(self):
        plan = self.plan()
        if self.device.type == "cuda":
            plan = plan.pin_memory()
        plan = plan.to(self.device, non_blocking=True)  # one copy per epoch
        pad, flip_on = self.base.pad, self.base.flip
        for s in range(0, self.n_local, self.batch_size):
            if self.drop_last and s + self.batch_size > self.n_local:
                break
            part = plan[:, s:s + self.batch_size]
            idx = part[0]
            if self.augment:
                x = crop_flip(self.images, idx, part[1], part[2], part[3].bool() if flip_on else None, pad)
            else:
                x = self.images.index_select(0, idx)
            x = normalise(x, self.mean, self.std).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
            yield (x if self.channels_last else x.contiguous()), self.labels.index_select(0, idx)
