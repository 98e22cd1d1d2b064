"""Shared pieces of the quantizers: straight-through rounding and the Quantizer interface."""

import torch
from torch import nn


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 0.5): ties go up, so that a 1-bit activation of exactly 0.5 is 1, as ``pack_bits(.., "01")``
    decides (torch.round sends 0.5 to 0)."""
    return torch.floor(x + 0.5)


def ste(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Value of ``forward``, gradient of ``backward`` (the straight-through estimator)."""
    return backward + (forward - backward).detach()


def check_bits(name: str, bits: int, allowed) -> int:
    if not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"{name}: 'bits' expected one of {sorted(allowed)}, got {bits!r}")
    return bits


class Quantizer(nn.Module):
    """A fake-quantizer: ``forward`` returns the quantized float tensor, with a straight-through gradient.

    ``kind`` and ``bits`` describe it for metrics and conversion; ``integer(x)`` returns ``(q, scale)`` with
    ``q`` an exact integer tensor (int64) and ``scale`` a float tensor broadcastable against it (per output
    channel ``[K, 1, ...]`` or a scalar) such that ``forward(x) == q * scale`` up to float rounding.
    """

    kind = "?"
    bits = 32
    signed = True

    def integer(self, x: torch.Tensor):  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
