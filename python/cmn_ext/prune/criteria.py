"""Selection criteria: which weights / filters to prune."""

import torch


def n_to_prune(count: int, ratio: float) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning 'ratio' expected in [0, 1), got {ratio}")
    return int(count * ratio)


@torch.no_grad()
def fpgm_scores(weight: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of Euclidean distances from each filter to the other (candidate) filters of the layer (FPGM, He et
    al. 2019): filters near the geometric median have the smallest sums and are the most replaceable."""
    f = weight.detach().flatten(1).double()
    others = f if candidates is None else f[candidates]
    return torch.cdist(f, others).sum(1)


@torch.no_grad()
def fpgm_select(weight: torch.Tensor, ratio: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """bool [K] keep-mask with int(K * ratio) filters pruned: those with the smallest FPGM score.

    ``keep`` (bool [K]) marks filters still alive; already-pruned ones stay pruned and scores are computed
    among the alive ones (progressive pruning). Ties break towards the lower index."""
    k = weight.shape[0]
    keep = torch.ones(k, dtype=torch.bool, device=weight.device) if keep is None else keep.clone()
    extra = n_to_prune(k, ratio) - int((~keep).sum())
    if extra <= 0:
        return keep
    alive = torch.nonzero(keep).flatten()
    scores = fpgm_scores(weight, alive)[alive]
    order = torch.sort(scores, stable=True).indices
    keep[alive[order[:extra]]] = False
    return keep


@torch.no_grad()
def magnitude_mask(weight: torch.Tensor, ratio: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """float mask of ``weight``'s shape with the int(numel * ratio) smallest |w| zeroed (already-masked
    weights count as zero, so they stay pruned)."""
    w = weight.detach().abs() * (1 if mask is None else mask)
    n = n_to_prune(w.numel(), ratio)
    out = torch.ones_like(w, dtype=torch.float32)
    if n:
        idx = torch.sort(w.flatten(), stable=True).indices[:n]
        out.view(-1)[idx] = 0.0
    return out


@torch.no_grad()
def global_magnitude_masks(weights: list, ratio: float, masks: list | None = None) -> list:
    """Masks that prune the int(total * ratio) smallest |w| across all ``weights`` together."""
    masks = masks or [None] * len(weights)
    flat = torch.cat([(w.detach().abs() * (1 if m is None else m)).flatten() for w, m in zip(weights, masks)])
    n = n_to_prune(flat.numel(), ratio)
    out = torch.ones_like(flat, dtype=torch.float32)
    if n:
        out[torch.sort(flat, stable=True).indices[:n]] = 0.0
    return [chunk.view_as(w) for chunk, w in zip(out.split([w.numel() for w in weights]), weights)]
