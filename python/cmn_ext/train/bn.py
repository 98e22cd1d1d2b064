"""Batch-norm recalibration: re-estimate running mean / variance of every batch norm from training batches
with the weights fixed. Needed after a change that the running statistics have not seen, e.g. the last
epoch-end zeroing of soft filter pruning (SPQ), or a sub-network extracted from a weight-sharing supernet."""

import sys

import torch
from torch import nn
from tqdm import tqdm

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int = 100, device=None, progress: bool = False) -> int:
    """Reset the running statistics of ``model``'s batch norms and re-estimate them as the exact average over
    up to ``batches`` batches of ``loader`` (inputs only). Every other module stays in eval mode (activation
    quantizers must not update their ranges). Returns the number of batches used."""
    if batches < 1:
        raise ValueError(f"recalibrate_bn: 'batches' expected >= 1, got {batches}")
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return 0
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    saved = []
    for m in bns:
        saved.append(m.momentum)
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
        m.train()
    used = 0
    try:
        for x, *_ in tqdm(loader, total=batches, desc="bn recalibration", disable=not progress, file=sys.stderr,
                          leave=False):
            model(x.to(device, non_blocking=True))
            used += 1
            if used >= batches:
                break
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was_training)
    if used == 0:
        raise ValueError("recalibrate_bn: 'loader' yielded no batches")
    return used
