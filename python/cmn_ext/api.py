"""The Python front door: typed compression configs and the prepare -> train -> convert flow.

    import cmn_ext
    model = cmn_ext.quantize_(model, cmn_ext.Int8(), prune=cmn_ext.Prune("fpgm", 0.5))  # in place, QAT layers
    ...                                                       # train it (cmn_ext.train.Trainer or your own loop)
    cmn_ext.calibrate(model, loader)                          # sets activation clips that need data
    engine, report = cmn_ext.convert(model)                   # the deploy engine on the kernels

Each config is a frozen dataclass checked when it is made (a bad field names itself, what was expected and
what was given) and turns into the quantization spec of ``cmn_ext.nn.quantize_model``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from .config import Prune
from .nn import convert, quantize_model

EDGES = ("fp", "8bit", "same")


def _check(cls: str, field: str, ok: bool, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"{cls}: '{field}' expected {expected}, got {got!r}")


@dataclasses.dataclass(frozen=True)
class _Scheme:
    """First / last layer policy shared by the schemes: "fp" (full precision, CMN), "8bit" (SPQ / PPQ) or
    "same" (quantized like the others)."""

    first: str = "8bit"
    last: str = "8bit"

    def __post_init__(self):
        for field in ("first", "last"):
            _check(type(self).__name__, field, getattr(self, field) in EDGES, f"one of {EDGES}", getattr(self, field))

    def _edges(self) -> dict:
        return {"first": self.first, "last": self.last}


@dataclasses.dataclass(frozen=True)
class Binary(_Scheme):
    """±1 weights (per-filter scale mean|w|) and 1-bit activations: ``encoding="01"`` ({0,1}, DoReFa 1-bit, the
    CMN binary stage) or ``"pm1"`` ({-1,+1}, XNOR-Net / Bi-Real). Edge layers full precision by default."""

    encoding: str = "01"
    first: str = "fp"
    last: str = "fp"

    def __post_init__(self):
        super().__post_init__()
        _check("Binary", "encoding", self.encoding in ("01", "pm1"), '"01" or "pm1"', self.encoding)

    def spec(self) -> dict:
        return {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": self.encoding}, **self._edges()}


@dataclasses.dataclass(frozen=True)
class Int8(_Scheme):
    """Linear (uniform) quantization, ``bits`` <= 8 so that the codes run on the int8 kernels: symmetric
    per-channel weights (max), unsigned activations with a KL-calibrated clip (``calibrate``)."""

    bits: int = 8

    def __post_init__(self):
        super().__post_init__()
        _check("Int8", "bits", isinstance(self.bits, int) and 2 <= self.bits <= 8, "an int in 2..8", self.bits)

    def spec(self) -> dict:
        return {"weight": {"kind": "linear", "bits": self.bits}, "act": {"kind": "linear", "bits": self.bits},
                **self._edges()}


@dataclasses.dataclass(frozen=True)
class DoReFa(_Scheme):
    """DoReFa-Net k-bit weights (tanh-normalised) and activations clipped to [0, 1]; on the int8 kernels for
    ``bits`` <= 7 (8-bit DoReFa weights take 256 odd levels that int8 cannot hold)."""

    bits: int = 4
    first: str = "fp"
    last: str = "fp"

    def __post_init__(self):
        super().__post_init__()
        _check("DoReFa", "bits", isinstance(self.bits, int) and 1 <= self.bits <= 8, "an int in 1..8", self.bits)

    def spec(self) -> dict:
        return {"weight": {"kind": "dorefa", "bits": self.bits}, "act": {"kind": "dorefa", "bits": self.bits},
                **self._edges()}


@dataclasses.dataclass(frozen=True)
class APoT(_Scheme):
    """Additive powers-of-two weights (signed, standardised, learnable clip alpha = 3) and activations (unsigned,
    alpha = 8): 4-bit codes on the APoT kernels (SPQ / PPQ)."""

    bits: int = 4
    weight_alpha: float = 3.0
    act_alpha: float = 8.0

    def __post_init__(self):
        super().__post_init__()
        _check("APoT", "bits", self.bits in (2, 3, 4), "2, 3 or 4", self.bits)
        for field in ("weight_alpha", "act_alpha"):
            v = getattr(self, field)
            _check("APoT", field, isinstance(v, (int, float)) and v > 0, "a positive number", v)

    def spec(self) -> dict:
        return {"weight": {"kind": "apot", "bits": self.bits, "alpha": float(self.weight_alpha)},
                "act": {"kind": "apot", "bits": self.bits, "alpha": float(self.act_alpha)}, **self._edges()}


Scheme = Binary | Int8 | DoReFa | APoT


def quantize_(model: nn.Module, config: Scheme | None, prune: Prune | None = None) -> nn.Module:
    """Turn ``model``'s convs and linears into QAT layers for ``config`` (in place; ``None`` keeps full
    precision and only adds the masks pruning needs) and, with ``prune``, attach a ``cmn_ext.prune.Pruner`` as
    ``model.cmn_pruner`` (one-shot pruning is applied at once; a soft / progressive schedule is driven by the
    trainer's epoch hooks: ``cmn_ext.train.Trainer(..., pruner=model.cmn_pruner)``). Returns ``model``."""
    if config is not None and not isinstance(config, (Binary, Int8, DoReFa, APoT)):
        raise TypeError(f"quantize_: 'config' expected Binary, Int8, DoReFa, APoT or None, got "
                        f"{type(config).__name__}")
    if prune is not None and not isinstance(prune, Prune):
        raise TypeError(f"quantize_: 'prune' expected a Prune config or None, got {type(prune).__name__}")
    quantize_model(model, config.spec() if config is not None else None)
    if prune is not None:
        from .prune import Pruner

        pruner = Pruner(model, **prune.pruner_kwargs(epochs=1))
        if prune.schedule == "oneshot":
            pruner.prune_to(prune.ratio)
        model.cmn_pruner = pruner
    return model


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, limit: int = 8) -> nn.Module:
    """Set the activation clips that come from data (linear activations' KL-divergence clip): the first
    ``limit`` batches (inputs, or (input, label) pairs) go through ``model`` as one batch in eval mode, so every
    quantizer chooses its clip on all of them. Clips set earlier are chosen anew; the training mode is
    restored. Returns ``model``."""
    from .quant import LinearQuantizer

    inputs = []
    for i, batch in enumerate(batches):
        if i >= limit:
            break
        inputs.append(batch[0] if isinstance(batch, (tuple, list)) else batch)
    if not inputs:
        raise ValueError("calibrate: 'batches' gave no batch")
    for m in model.modules():
        if isinstance(m, LinearQuantizer) and m.clip == "kl":
            m.clip_value.zero_()
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model(torch.cat(inputs).to(device))
    finally:
        model.train(was_training)
    return model


__all__ = ["APoT", "Binary", "DoReFa", "Int8", "Prune", "calibrate", "convert", "quantize_"]
