"""Model zoo: CIFAR ResNets, VGG-16, CIFAR AlexNet, ResNet-18/50, MobileNetV2; ``build_model`` by name and
``load_pretrained`` for checkpoints such as the akamaster CIFAR ResNets (``module.`` prefix, GPU tensors)."""

import os

import torch
from torch import nn

from .alexnet import CifarAlexNet
from .cifar_resnet import CifarResNet
from .mobilenetv2 import MobileNetV2
from .resnet import ResNet, resnet18, resnet50
from .vgg import VGG

MODELS = {
    "resnet8": lambda **kw: CifarResNet(8, **kw),  # one block per stage: quick demos and tests
    "resnet20": lambda **kw: CifarResNet(20, **kw),
    "resnet32": lambda **kw: CifarResNet(32, **kw),
    "resnet44": lambda **kw: CifarResNet(44, **kw),
    "resnet56": lambda **kw: CifarResNet(56, **kw),
    "resnet110": lambda **kw: CifarResNet(110, **kw),
    "vgg16": VGG,
    "alexnet": CifarAlexNet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenetv2": MobileNetV2,
}


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """A freshly initialised model by name (see ``MODELS``); extra kwargs go to the constructor
    (``stem="cifar"`` for ResNet-18/50 and MobileNetV2, ``width_mult`` for MobileNetV2, ``hidden`` for AlexNet)."""
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, **kwargs)


def read_state_dict(path: str) -> dict:
    """The parameter dict of a checkpoint file: a bare state dict, or one under 'state_dict' / 'model'
    (trainer checkpoints), with any DataParallel ``module.`` prefix removed. Loaded with weights_only=True."""
    from ..files import load

    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = load(path)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), possibly under 'state_dict' or 'model'")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_pretrained(model: nn.Module, path: str, strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` (see ``read_state_dict``); a shape or name mismatch is an
    error naming the keys."""
    state = read_state_dict(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch (another head size, another width)
        sizes = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        raise ValueError(f"{path}: checkpoint does not fit the model: {' '.join(sizes[:3]) or e}") from e
    # QAT models gain quantizer parameters and masks that a full-precision checkpoint does not have.
    missing = [k for k in missing if not (k.endswith("weight_mask") or ".w_quant." in k or ".a_quant." in k)]
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: checkpoint does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return model


__all__ = ["MODELS", "CifarAlexNet", "CifarResNet", "MobileNetV2", "ResNet", "VGG", "build_model",
           "load_pretrained", "read_state_dict", "resnet18", "resnet50"]
