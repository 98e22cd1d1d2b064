"""DoReFa-Net quantizers (Zhou et al. 2016): k-bit weights via tanh normalisation, k-bit activations in [0, 1]."""

import torch

from .base import Quantizer, WeightStats, check_bits, round_half_up, ste


def _quantize_unit(u: torch.Tensor, bits: int) -> torch.Tensor:
    """q_k(u) = round((2^k - 1) u) / (2^k - 1) for u in [0, 1], straight-through."""
    n = 2**bits - 1
    return ste(round_half_up(u * n) / n, u)


class DoReFaWeight(WeightStats):
    """w_q = 2 q_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1: 2^k levels, odd multiples of 1/(2^k - 1) in [-1, 1].

    As integers: q = 2i - (2^k - 1) with i in [0, 2^k - 1], scale 1/(2^k - 1). For k <= 7 those fit int8.
    """

    kind = "dorefa"
    signed = True

    def __init__(self, bits: int):
        super().__init__()
        self.bits = check_bits("DoReFaWeight", bits, range(1, 9))

    def statistics(self, w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w.detach()).abs().max().clamp_min(1e-12).reshape(1)

    def _unit(self, w: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(w)
        top = t.abs().max().clamp_min(1e-12) if not self.frozen.numel() else self.frozen[0]
        return t / (2 * top) + 0.5

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * _quantize_unit(self._unit(w), self.bits) - 1

    @torch.no_grad()
    def integer(self, w: torch.Tensor):
        n = 2**self.bits - 1
        i = round_half_up(self._unit(w) * n)
        return (2 * i - n).to(torch.int64), torch.tensor(1.0 / n)


class DoReFaAct(Quantizer):
    """a_q = q_k(clip(a, 0, 1)); codes round((2^k - 1) clip(a, 0, 1)) in [0, 2^k - 1], scale 1/(2^k - 1).

    The gradient passes inside [0, 1] and is zero where the input was clipped. k = 1 is the CMN binary stage's
    {0, 1} activation (a >= 0.5 -> 1, the "01" encoding of ``pack_bits``).
    """

    kind = "dorefa"
    signed = False

    def __init__(self, bits: int):
        super().__init__()
        self.bits = check_bits("DoReFaAct", bits, range(1, 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _quantize_unit(torch.clamp(x, 0.0, 1.0), self.bits)

    @torch.no_grad()
    def integer(self, x: torch.Tensor):
        n = 2**self.bits - 1
        return round_half_up(torch.clamp(x, 0.0, 1.0) * n).to(torch.int64), torch.tensor(1.0 / n)
