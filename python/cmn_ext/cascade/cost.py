"""Compute cost of a cascade in CMN's terms (eq. 3) and as actually paid.

CMN counts a network's operations as B x FLOPs; with full-precision first and last layers the bitwidth is
per layer, so a network's cost here is  G(F) = sum over layers of (sparsity-aware MACs x weight bits), and
  paper G  = tau * G(F_lo) + (1 - tau) * G(F_hi)       (eq. 3: a row pays one network)
  real G   = G(F_lo) + (1 - exit) * G(F_hi)            (a row that goes on has paid for stage 1 too)
Average bitwidth (CMN section 4.1) = G / MACs of the full-precision network.
"""

from ..metrics import ModelCost


def bit_macs(cost: ModelCost) -> float:
    return float(sum(r.eff_macs * r.w_bits for r in cost.layers))


def paper_G(tau: float, lo: ModelCost, hi: ModelCost) -> float:
    return tau * bit_macs(lo) + (1.0 - tau) * bit_macs(hi)


def real_G(exit_rate: float, lo: ModelCost, hi: ModelCost) -> float:
    return bit_macs(lo) + (1.0 - exit_rate) * bit_macs(hi)


def real_bops(exit_rate: float, lo: ModelCost, hi: ModelCost) -> float:
    return lo.bops + (1.0 - exit_rate) * hi.bops


def avg_bits(g: float, fp: ModelCost) -> float:
    return g / max(1, fp.macs)
