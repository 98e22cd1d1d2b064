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


class WeightStats(Quantizer):
    """A weight quantizer whose scale comes from statistics of the weight (max, mean, std).

    ``freeze(w)`` records those statistics in the ``frozen`` buffer and uses them from then on. Physical
    filter removal freezes the layers it shrinks, so that removing pruned filters, or a consumer's input
    channels that only ever see zeros, leaves the quantized values of the remaining weights exactly as they
    were. An empty ``frozen`` means: computed from the weight at every call.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("frozen", torch.empty(0))

    def statistics(self, w: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def stats(self, w: torch.Tensor) -> torch.Tensor:
        return self.frozen if self.frozen.numel() else self.statistics(w)

    @torch.no_grad()
    def freeze(self, w: torch.Tensor) -> None:
        if not self.frozen.numel():
            self.frozen = self.statistics(w).detach().clone()

    @property
    def per_channel_frozen(self) -> bool:
        """True when ``frozen`` holds one entry per output channel (dim 0)."""
        return self.frozen.dim() > 1

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
