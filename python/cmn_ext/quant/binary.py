"""Binary quantizers: +-1 weights with a per-filter scale mean|w| (XNOR-Net), activations in {-1,+1} or {0,1}."""

import torch

from .base import Quantizer, WeightStats, ste


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1 (``torch.sign`` would send 0 to 0): the convention of ``pack_bits(.., "pm1")``."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class BinaryWeight(WeightStats):
    """w_b = alpha_k * sign(w), alpha_k = mean |w| over filter k. Gradient: identity (straight-through).

    ``integer(w)`` gives the +-1 signs and alpha as a [K, 1, ...] scale, which conversion folds into the
    binary kernel's per-channel epilogue.
    """

    kind = "binary"
    bits = 1
    signed = True

    def __init__(self, per_channel: bool = True):
        super().__init__()
        self.per_channel = per_channel

    def statistics(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            return w.detach().abs().flatten(1).mean(1).view(-1, *([1] * (w.dim() - 1)))
        return w.detach().abs().mean().reshape(1)

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        s = self.stats(w)
        return s if self.per_channel else s[0]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return ste(sign_pm1(w), w) * self.scale(w)

    @torch.no_grad()
    def integer(self, w: torch.Tensor):
        return sign_pm1(w).to(torch.int64), self.scale(w)

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}"


class BinaryAct(Quantizer):
    """Binary activations. ``encoding="pm1"``: sign(x) in {-1, +1} (x >= 0 -> +1), gradient 1 where |x| <= 1
    (hard-tanh STE, Bi-Real / XNOR-Net). ``encoding="01"``: x >= 0.5 -> 1 else 0, gradient 1 on [0, 1]
    (DoReFa k = 1, the CMN binary stage)."""

    kind = "binary"
    bits = 1

    def __init__(self, encoding: str = "pm1"):
        super().__init__()
        if encoding not in ("pm1", "01"):
            raise ValueError(f'BinaryAct: \'encoding\' expected "pm1" or "01", got {encoding!r}')
        self.encoding = encoding
        self.signed = encoding == "pm1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding == "pm1":
            return ste(sign_pm1(x), torch.clamp(x, -1.0, 1.0))
        return ste((x >= 0.5).to(x.dtype), torch.clamp(x, 0.0, 1.0))

    @torch.no_grad()
    def integer(self, x: torch.Tensor):
        q = sign_pm1(x) if self.encoding == "pm1" else (x >= 0.5).to(x.dtype)
        return q.to(torch.int64), torch.tensor(1.0)

    def extra_repr(self) -> str:
        return f"encoding={self.encoding!r}"
