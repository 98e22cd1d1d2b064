"""Fake quantizers for quantization-aware training, each with a straight-through gradient.

``make_quantizer(spec, role)`` builds one from a config mapping such as ``{"kind": "apot", "bits": 4}``;
``kind`` is one of ``fp`` (no quantizer), ``dorefa``, ``binary``, ``apot``, ``linear``.
"""

from collections.abc import Mapping

from .apot import APoTQuantizer, apot_level_table, apot_magnitudes
from .base import Quantizer, WeightStats, round_half_up, ste
from .binary import BinaryAct, BinaryWeight, sign_pm1
from .dorefa import DoReFaAct, DoReFaWeight
from .linear import LinearQuantizer, kl_clip

KINDS = ("fp", "dorefa", "binary", "apot", "linear")
_KEYS = {"kind", "bits", "encoding", "alpha", "clip", "per_channel", "signed", "standardize"}


def make_quantizer(spec, role: str) -> Quantizer | None:
    """A quantizer for ``role`` ("weight" or "act") from ``spec`` (a mapping, a kind string, or None = fp)."""
    if role not in ("weight", "act"):
        raise ValueError(f"make_quantizer: 'role' expected \"weight\" or \"act\", got {role!r}")
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"make_quantizer: 'spec' expected a mapping like {{'kind': 'dorefa', 'bits': 8}}, got {spec!r}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"make_quantizer: unknown keys {sorted(unknown)} in {dict(spec)}; known: {sorted(_KEYS)}")
    kind = spec.get("kind", "fp")
    bits = spec.get("bits")
    if kind == "fp" or bits == 32:
        return None
    weight = role == "weight"
    if kind == "dorefa":
        return DoReFaWeight(bits or 8) if weight else DoReFaAct(bits or 8)
    if kind == "binary":
        if bits not in (None, 1):
            raise ValueError(f"make_quantizer: kind 'binary' is 1-bit, got bits={bits}")
        return BinaryWeight(spec.get("per_channel", True)) if weight else BinaryAct(spec.get("encoding", "pm1"))
    if kind == "apot":
        return APoTQuantizer(bits or 4, signed=spec.get("signed", weight), alpha=spec.get("alpha"),
                             standardize=spec.get("standardize"))
    if kind == "linear":
        if weight:
            return LinearQuantizer(bits or 8, signed=True, clip=spec.get("clip", "max"),
                                   per_channel=spec.get("per_channel", spec.get("clip", "max") == "max"))
        return LinearQuantizer(bits or 8, signed=spec.get("signed", False), clip=spec.get("clip", "kl"))
    raise ValueError(f"make_quantizer: 'kind' expected one of {KINDS}, got {kind!r}")


def spec_of(q: Quantizer | None) -> dict | None:
    """The spec that ``make_quantizer`` turns back into an equivalent quantizer (its learned state — APoT
    alpha, a calibrated clip — lives in the state dict)."""
    if q is None:
        return None
    if isinstance(q, (DoReFaWeight, DoReFaAct)):
        return {"kind": "dorefa", "bits": q.bits}
    if isinstance(q, BinaryWeight):
        return {"kind": "binary", "per_channel": q.per_channel}
    if isinstance(q, BinaryAct):
        return {"kind": "binary", "encoding": q.encoding}
    if isinstance(q, APoTQuantizer):
        return {"kind": "apot", "bits": q.bits, "signed": q.signed, "standardize": q.standardize}
    if isinstance(q, LinearQuantizer):
        spec = {"kind": "linear", "bits": q.bits, "signed": q.signed, "clip": q.clip}
        return spec | ({"per_channel": q.per_channel} if q.signed else {})
    raise TypeError(f"spec_of: unknown quantizer {type(q).__name__}")


def bits_of(q: Quantizer | None) -> int:
    """Bit width of a quantizer; 32 for full precision (None)."""
    return 32 if q is None else int(q.bits)


__all__ = [
    "APoTQuantizer", "BinaryAct", "BinaryWeight", "DoReFaAct", "DoReFaWeight", "KINDS", "LinearQuantizer",
    "Quantizer", "WeightStats", "apot_level_table", "apot_magnitudes", "bits_of", "kl_clip", "make_quantizer", "round_half_up",
    "sign_pm1", "spec_of", "ste",
]
