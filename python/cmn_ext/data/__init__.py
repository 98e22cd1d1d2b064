"""Datasets by name, with the standard augmentations, a validation split carved from train and fixed seeds.

``build_datasets(spec)`` accepts:
  ``digits``                 embedded default, no download: scikit-learn's bundled 8x8 handwritten digits
                             (1,797 real images, 10 classes), upsampled to 3x32x32
  ``cifar10[:root]``         torchvision CIFAR-10 (downloads into root when online; root default: $CMN_DATA)
  ``cifar100[:root]``        torchvision CIFAR-100
  ``imagefolder:<root>``     any ImageFolder tree with ``train/`` and ``test/`` (or ``val/``) subfolders, e.g.
                             ImageNet or the CIFAR-10 JPEG set; a ``.tar.gz`` of such a tree is extracted
                             once into $CMN_DATA (default ~/.cache/cmn_ext/data)

Every split is held as tensors (``TensorImages``; CIFAR-style ImageFolders decoded once into an on-disk cache,
see ``cache.py``), which the trainer loads whole onto its device and augments there (``DeviceBatches``, see
``tensors.py``); ``build_datasets(..., tensors=False)`` gives the per-sample torchvision datasets instead.
"""

from .cache import cache_dir
from .datasets import DatasetBundle, build_datasets, data_home, make_loader
from .tensors import DeviceBatches, TensorImages, tensor_view

__all__ = ["DatasetBundle", "DeviceBatches", "TensorImages", "build_datasets", "cache_dir", "data_home",
           "make_loader", "tensor_view"]
