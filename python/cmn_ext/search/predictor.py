"""The accuracy predictor of APQ (section 3.3): a 3-layer MLP (hidden 400) from an architecture encoding to its
accuracy, trained on (encoding, accuracy) pairs; the quantization-aware predictor is fine-tuned from the
full-precision one with few quantized pairs (transfer), or trained from scratch for comparison.

Quality is the pairwise ranking accuracy on held-out pairs: the fraction of pairs whose predicted order is
the measured order (0.5 is chance) -- what an evolutionary search needs from it."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


class AccuracyPredictor(nn.Module):
    def __init__(self, in_features: int, hidden: int = 400, layers: int = 3):
        super().__init__()
        if in_features <= 0 or hidden <= 0 or layers < 2:
            raise ValueError(f"AccuracyPredictor: expected in_features > 0, hidden > 0 and layers >= 2, got "
                             f"{in_features}, {hidden}, {layers}")
        dims = [in_features] + [hidden] * (layers - 1)
        mods = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*mods, nn.Linear(dims[-1], 1))
        # accuracies are predicted around a base value (the mean of the training targets)
        self.register_buffer("base", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1) + self.base

    @torch.no_grad()
    def predict(self, encodings) -> torch.Tensor:
        self.eval()
        return self(torch.as_tensor(encodings, dtype=torch.float32))


def fit(model: AccuracyPredictor, x, y, *, epochs: int = 200, lr: float = 1e-3, weight_decay: float = 1e-4,
        batch_size: int = 256, seed: int = 0, reset_base: bool = True) -> list[float]:
    """Adam on the mean squared error; returns the training loss per epoch. ``reset_base`` sets the base to the
    targets' mean (a fresh predictor); a transferred predictor keeps the one it learnt."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.float32)
    if x.dim() != 2 or y.dim() != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"predictor fit: expected x [n, features] and y [n] with n > 0, got {list(x.shape)} and "
                         f"{list(y.shape)}")
    if reset_base:
        model.base.fill_(float(y.mean()))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    return losses


def transfer(fp_model: AccuracyPredictor, x, y, **kw) -> tuple[AccuracyPredictor, list[float]]:
    """The quantization-aware predictor: a copy of the FP predictor fine-tuned on quantized pairs."""
    model = copy.deepcopy(fp_model)
    kw.setdefault("lr", 5e-4)
    return model, fit(model, x, y, reset_base=False, **kw)


def pairwise_accuracy(pred, target, max_pairs: int = 200_000) -> float:
    """Fraction of pairs (i < j, target_i != target_j) ordered alike by ``pred`` and ``target``."""
    p = torch.as_tensor(pred, dtype=torch.float64).flatten()
    t = torch.as_tensor(target, dtype=torch.float64).flatten()
    if len(p) != len(t) or len(p) < 2:
        raise ValueError(f"pairwise_accuracy: expected two equal-length sequences of at least 2, got {len(p)} "
                         f"and {len(t)}")
    n = len(p)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = zip(*itertools.combinations(range(n), 2))
        i, j = torch.tensor(i), torch.tensor(j)
    else:  # a fixed random sample of pairs
        gen = torch.Generator().manual_seed(0)
        i, j = torch.randint(0, n, (max_pairs,), generator=gen), torch.randint(0, n, (max_pairs,), generator=gen)
    dt, dp = t[i] - t[j], p[i] - p[j]
    keep = dt != 0
    if not bool(keep.any()):
        raise ValueError("pairwise_accuracy: every target is equal; no pair has an order")
    return float(((dt[keep] > 0) == (dp[keep] > 0)).double().mean())
