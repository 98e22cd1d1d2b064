"""Linear (uniform) k-bit quantizer with a clipping threshold chosen by KL divergence, as HAQ/APQ use it."""

import torch

from .base import WeightStats, check_bits, round_half_up, ste


@torch.no_grad()
def kl_clip(x: torch.Tensor, bits: int, signed: bool, bins: int = 2048, candidates: int = 128) -> float:
    """The clip threshold t that minimises KL(P || Q) between the histogram P of |x| clipped at t (outliers
    folded into the last bin) and its quantisation Q to the grid's levels (TensorRT-style entropy calibration).
    """
    a = x.detach().abs().flatten().float()
    a = a[a > 0]  # exact zeros (ReLU outputs, pruned weights) are representable at any clip: leave them out
    top = float(a.max()) if a.numel() else 0.0
    if top == 0.0:
        return 1.0
    hist = torch.histc(a, bins=bins, min=0.0, max=top).double()
    levels = 2 ** (bits - 1) if signed else 2**bits
    if levels >= bins:
        return top
    best, best_i = float("inf"), bins
    for i in torch.linspace(levels, bins, candidates).round().long().unique().tolist():
        ref = hist[:i]
        p = ref.clone()
        p[-1] += hist[i:].sum()
        # Q: the in-range histogram (outliers NOT folded in, so clipping costs) quantised to `levels` chunks,
        # each chunk's mass spread evenly over its nonzero bins.
        chunk = torch.div(torch.arange(i) * levels, i, rounding_mode="floor")
        nonzero = (ref > 0).double()
        mass = torch.zeros(levels, dtype=torch.float64).index_add_(0, chunk, ref)
        count = torch.zeros(levels, dtype=torch.float64).index_add_(0, chunk, nonzero)
        q = nonzero * mass[chunk] / count[chunk].clamp_min(1)
        mask = p > 0
        ps, qs = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float((ps * (ps / qs.clamp_min(1e-12)).log()).sum())
        if kl < best:
            best, best_i = kl, i
    return min(top, (best_i + 0.5) * top / bins)


class LinearQuantizer(WeightStats):
    """x_q = s * clamp(round(x / s), qmin, qmax): symmetric signed (qmax = 2^(k-1) - 1) or unsigned
    (qmax = 2^k - 1), s = clip / qmax. Gradient straight-through inside the clip range, zero outside.

    ``clip="max"``: clip = max|x| (per output channel when ``per_channel``), recomputed every call — the form
    for weights. ``clip="kl"``: clip chosen by ``kl_clip`` on the first batch seen (or ``calibrate(x)``) and
    kept as a buffer — the form for activations.
    """

    kind = "linear"

    def __init__(self, bits: int = 8, signed: bool = True, clip: str = "max", per_channel: bool = False):
        super().__init__()
        self.bits = check_bits("LinearQuantizer", bits, range(2, 9))
        if clip not in ("max", "kl"):
            raise ValueError(f"LinearQuantizer: 'clip' expected \"max\" or \"kl\", got {clip!r}")
        if per_channel and clip != "max":
            raise ValueError("LinearQuantizer: 'per_channel' needs clip=\"max\"")
        self.signed, self.clip, self.per_channel = signed, clip, per_channel
        self.qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.register_buffer("clip_value", torch.tensor(0.0))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        self.clip_value.fill_(kl_clip(x, self.bits, self.signed))

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().abs()
        return a.flatten(1).amax(1).view(-1, *([1] * (x.dim() - 1))) if self.per_channel else a.max().reshape(1)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip == "max":
            top = self.stats(x)
            return top.clamp_min(1e-12) / self.qmax if self.per_channel else top[0].clamp_min(1e-12) / self.qmax
        if float(self.clip_value) == 0.0:
            self.calibrate(x)
        return self.clip_value.clamp_min(1e-12) / self.qmax

    def _codes(self, x, s):
        return torch.clamp(round_half_up(x / s), -self.qmax if self.signed else 0, self.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.step(x)
        lo = -self.qmax * s if self.signed else torch.zeros_like(s)
        clipped = torch.maximum(torch.minimum(x, self.qmax * s), lo)
        return ste(self._codes(x, s) * s, clipped)

    @torch.no_grad()
    def integer(self, x: torch.Tensor):
        s = self.step(x)
        return self._codes(x, s).to(torch.int64), s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, clip={self.clip!r}, per_channel={self.per_channel}"
