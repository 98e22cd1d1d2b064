"""Confidence thresholds from a recall rate (CMN section 3.2).

The recall rate tau of stage 1 is the fraction of samples that exit there. Rank the stage's confidences
(softmax maxima) on the training set in descending order; the threshold is the K-th one with K / N = tau, so
that exactly K samples have confidence >= T (ties aside). The K-th value is found by binary search over the
sorted confidences, as the paper describes.
"""

import math

import torch


def threshold_for_recall(confidences: torch.Tensor, tau: float) -> float:
    """T such that the fraction of ``confidences`` >= T is tau, to within 1/N (exactly K = round(tau N) of
    them when the values are distinct). tau = 0 gives +inf (nothing exits), tau = 1 the smallest value."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"threshold_for_recall: 'tau' expected in [0, 1], got {tau}")
    c = confidences.detach().flatten().double().cpu()
    n = c.numel()
    if n == 0:
        raise ValueError("threshold_for_recall: 'confidences' is empty")
    k = int(round(tau * n))
    if k == 0:
        return math.inf
    ordered = torch.sort(c, descending=True).values

    def exits(j: int) -> int:  # samples with confidence >= the j-th largest (>= j + 1; more with ties)
        return int((c >= ordered[j]).sum())

    # binary search for the largest rank j whose threshold lets at most k samples exit
    lo, hi = 0, n - 1
    if exits(0) > k:
        return float(ordered[0])  # ties at the top: the closest achievable rate
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if exits(mid) <= k:
            lo = mid
        else:
            hi = mid - 1
    return float(ordered[lo])


def exit_rate(confidences: torch.Tensor, threshold: float) -> float:
    c = confidences.detach().flatten()
    return float((c >= threshold).double().mean()) if c.numel() else 0.0
