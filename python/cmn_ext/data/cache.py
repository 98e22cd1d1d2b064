"""The decoded-image cache: an image split (a list of (path, label) files, as ``ImageFolder.samples``) decoded
once into ``uint8 [N, H, W, 3]`` + ``int64 [N]`` labels and saved atomically as one torch file.

A cache file is keyed by a digest of what decides its contents: the split's root, every file's relative path,
label, size and modification time, the image size and the decode transform. A changed, added or removed
image gives another key (a new file); a file that cannot be read, or holds another key or format, is rebuilt
with a warning. Files live in ``$CMN_DATA_CACHE`` (default ``<data home>/tensor-cache``, i.e.
``~/.cache/cmn_ext/data/tensor-cache`` unless ``$CMN_DATA`` moves the data home).
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..files import BadFileError, load, save_atomic

FORMAT = "cmn_ext.image_cache/1"


class NotUniform(ValueError):
    """The split's images do not all have the cached size (the cache cannot hold them as one tensor)."""


def cache_dir() -> str:
    from .datasets import data_home

    return os.environ.get("CMN_DATA_CACHE") or os.path.join(data_home(), "tensor-cache")


def cache_key(root: str, samples: list, size: int, transform: str) -> str:
    """sha256 over the split's listing (relative names, labels, sizes, mtimes), the image size and transform."""
    root = os.path.abspath(root)
    h = hashlib.sha256(f"{FORMAT}\0{root}\0{size}\0{transform}\n".encode())
    for path, label in samples:
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, root)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode_rgb(path: str, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:  # torchvision's default loader: the file as RGB
        a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if a.shape[:2] != (size, size):
        raise NotUniform(f"{path} is {a.shape[1]}x{a.shape[0]}, not {size}x{size}")
    return a


def decode(samples: list, size: int, desc: str = "decoding images", progress: bool = True):
    """(uint8 [N, size, size, 3], int64 [N]) for ``samples``, decoded on a few threads (PIL releases the GIL)."""
    from tqdm import tqdm

    images = np.empty((len(samples), size, size, 3), dtype=np.uint8)

    def one(i):
        images[i] = _decode_rgb(samples[i][0], size)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(one, range(len(samples))), total=len(samples), desc=desc, file=sys.stderr,
                      leave=False, disable=not progress or len(samples) < 2000):
            pass
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return torch.from_numpy(images), labels


def _check(obj, key: str, n: int, size: int) -> str | None:
    """Why a loaded cache object cannot be used (None: it can)."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return "not an image cache of this format"
    if obj.get("key") != key:
        return "its key does not match the listing"
    images, labels = obj.get("images"), obj.get("labels")
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
            and tuple(images.shape) == (n, size, size, 3)):
        return "its images are not uint8 [N, H, W, 3] of the listing's size"
    if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and tuple(labels.shape) == (n,)):
        return "its labels are not int64 [N]"
    return None


def cached_split(root: str, samples: list, size: int, *, name: str = "split", transform: str = "rgb",
                 progress: bool = True):
    """The decoded ``samples`` of the split at ``root`` from the cache, decoding and saving them on a miss.
    Returns (images uint8 [N, H, W, 3], labels int64 [N], cache path). Raises ``NotUniform`` when an image is
    not ``size`` x ``size`` (nothing is written then)."""
    key = cache_key(root, samples, size, transform)
    base = os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(root)))) or "data"
    path = os.path.join(cache_dir(), f"{base}-{name}-{size}px-{key[:16]}.pt")
    if os.path.exists(path):
        why = None
        try:
            obj = load(path)
            why = _check(obj, key, len(samples), size)
        except BadFileError as e:
            why = str(e)
        if why is None and torch.equal(obj["labels"], torch.tensor([y for _, y in samples], dtype=torch.int64)):
            return obj["images"], obj["labels"], path
        warnings.warn(f"image cache {path}: {why or 'its labels do not match the listing'}; rebuilding it",
                      stacklevel=2)
    images, labels = decode(samples, size, desc=f"decoding {name} images (once)", progress=progress)
    save_atomic({"format": FORMAT, "key": key, "root": os.path.abspath(root), "transform": transform,
                 "images": images, "labels": labels}, path)
    return images, labels, path
