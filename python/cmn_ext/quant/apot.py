"""APoT (additive powers-of-two) quantizer of Li et al. 2020, as the SPQ/PPQ paper uses it.

Each level is a sum of n power-of-two terms; with 2-bit "base" terms (k = 2) the i-th term takes a value in
{0, 2^-i, 2^-(i+n), 2^-(i+2n)}. Every level of a table is an exact integer over a common denominator, which
is what the ``apot_matmul`` / ``apot_conv2d`` kernels consume (a 16-entry int32 level table + 4-bit codes).

Magnitude bits m (b for unsigned activations, b - 1 for signed weights):
  m = 1, 2   uniform {0..2^m - 1} (the APoT paper's 2-bit fallback)
  m = 3      {0, 1, 1/2, 1/8} + {0, 1/4}  -> {0, 1, 2, 3, 4, 6, 8, 10} / 10  (4-bit weights of DESIGN 3.3)
  m even     n = m / 2 terms as above; m = 4 -> {0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48} / 48
"""

import functools
import itertools

import torch
from torch import nn

from .base import WeightStats, ste

SIGNED_BITS = (2, 3, 4, 5)
UNSIGNED_BITS = (2, 3, 4)


@functools.lru_cache(maxsize=None)
def apot_magnitudes(mag_bits: int) -> tuple[tuple[int, ...], int]:
    """Sorted integer magnitudes (2^mag_bits of them, distinct) and their common denominator (the largest)."""
    if mag_bits in (1, 2):
        ints = tuple(range(2**mag_bits))
        return ints, ints[-1]
    if mag_bits == 3:
        terms = [(0, 8, 4, 1), (0, 2)]  # {0, 1, 1/2, 1/8} and {0, 1/4}, times 8
    elif mag_bits % 2 == 0:
        n = mag_bits // 2
        top = n + 2 * n - 1  # smallest power is 2^-(n - 1 + 2n)
        terms = [(0,) + tuple(2 ** (top - (i + j * n)) for j in range(3)) for i in range(n)]
    else:
        raise ValueError(f"apot_magnitudes: 'mag_bits' expected 1, 2, 3 or an even number, got {mag_bits}")
    ints = sorted({sum(c) for c in itertools.product(*terms)})
    assert len(ints) == 2**mag_bits
    return tuple(ints), ints[-1]


def apot_level_table(bits: int, signed: bool) -> tuple[torch.Tensor, int]:
    """The kernels' int32 [16] level table for b-bit codes, and its denominator.

    Unsigned: code c -> magnitude c. Signed: codes 0..2^m - 1 are +magnitudes, codes 2^m.. are -magnitudes
    (code 2^m is -0 = 0). Unused entries are 0.
    """
    mags, den = apot_magnitudes(bits - 1 if signed else bits)
    table = list(mags) + ([-v for v in mags] if signed else [])
    if len(table) > 16:
        raise ValueError(f"apot_level_table: {bits}-bit {'signed' if signed else 'unsigned'} APoT has {len(table)} "
                         "codes; the kernels take 4-bit codes (16 levels)")
    table += [0] * (16 - len(table))
    return torch.tensor(table, dtype=torch.int32), den


class APoTQuantizer(WeightStats):
    """x_q = alpha * proj(clip(x / alpha)) with proj the nearest APoT level; learnable clipping alpha.

    Weights (``signed=True``) are standardised first, w <- (w - mean) / std (the APoT paper's weight
    normalisation), so alpha = 3 clips at three standard deviations. The gradient of proj is straight-through,
    which gives alpha the APoT paper's gradient (proj(u) - u inside the range, sign(u) where clipped).
    """

    kind = "apot"

    def __init__(self, bits: int = 4, signed: bool = True, alpha: float | None = None, standardize: bool | None = None):
        super().__init__()
        allowed = SIGNED_BITS if signed else UNSIGNED_BITS
        if bits not in allowed:
            raise ValueError(f"APoTQuantizer: 'bits' expected one of {list(allowed)} for signed={signed}, got {bits!r}")
        self.bits, self.signed = bits, signed
        self.standardize = signed if standardize is None else standardize
        self.alpha = nn.Parameter(torch.tensor(float(alpha if alpha is not None else (3.0 if signed else 8.0))))
        mags, den = apot_magnitudes(bits - 1 if signed else bits)
        self.denominator = den
        self.register_buffer("grid", torch.tensor(mags, dtype=torch.float32) / den, persistent=False)

    def statistics(self, w: torch.Tensor) -> torch.Tensor:
        return torch.stack([w.detach().mean(), w.detach().std().clamp_min(1e-12)])

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        if not self.standardize:
            return x
        if self.frozen.numel():
            return (x - self.frozen[0]) / self.frozen[1]
        return (x - x.mean()) / x.std().clamp_min(1e-12)

    def _nearest(self, mag: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(mag.device, mag.dtype)
        return torch.bucketize(mag, (grid[1:] + grid[:-1]) / 2, right=True)

    def _alpha(self) -> torch.Tensor:
        return self.alpha.clamp_min(1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self._alpha()
        lo = -1.0 if self.signed else 0.0
        u = torch.clamp(self._normalized(x) / alpha, lo, 1.0)
        grid = self.grid.to(u.device, u.dtype)
        q = grid[self._nearest(u.abs().detach())] * torch.where(u < 0, -1.0, 1.0).to(u.dtype)
        return ste(q, u) * alpha

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 codes into ``level_table()`` (what ``pack_int4`` packs)."""
        lo = -1.0 if self.signed else 0.0
        u = torch.clamp(self._normalized(x) / self._alpha(), lo, 1.0)
        idx = self._nearest(u.abs())
        if self.signed:
            idx = torch.where((u < 0) & (idx > 0), idx + len(self.grid), idx)
        return idx.to(torch.uint8)

    def level_table(self) -> torch.Tensor:
        return apot_level_table(self.bits, self.signed)[0]

    @torch.no_grad()
    def integer(self, x: torch.Tensor):
        q = self.level_table().to(x.device).long()[self.codes(x).long()]
        return q, (self._alpha() / self.denominator).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, standardize={self.standardize}"
