"""Physical removal of pruned filters.

Policy (channel dependencies): a conv's pruned filters are removed only when its output reaches exactly one
dense conv through its batch norm and per-channel activations (``graph.removable_chains``); the batch norm's
channels and the consumer's input channels are removed with them. Outputs that meet a residual add (ResNet
block outputs, option-A shortcuts), a concatenation, a linear head or a depthwise conv keep their full
channel count: their pruned filters stay as masked zeros, which ``int8_conv2d`` skips through its keep mask.
The result never has mismatched shapes, and a model pruned with a hard schedule computes the same function
(the pruned channels output exactly zero, see ``Pruner.enforce``; quantizers that scale by weight statistics
are frozen at the statistics of the unshrunk layers, see ``quant.WeightStats``).
"""

import torch
from torch import nn

from ..nn.qat import QConv2d
from ..quant import WeightStats
from .graph import removable_chains


def _keep_of(conv: nn.Conv2d) -> torch.Tensor:
    if isinstance(conv, QConv2d):
        return conv.filter_keep() & (conv.weight.detach().flatten(1).abs().amax(1) > 0)
    return conv.weight.detach().flatten(1).abs().amax(1) > 0


def _shrink_param(module, name, index, dim):
    t = getattr(module, name)
    if t is None:
        return
    new = t.detach().index_select(dim, index).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        module.register_buffer(name, new)


@torch.no_grad()
def remove_pruned_filters(model: nn.Module) -> dict:
    """Remove, in place, the filters with an all-zero (masked) weight from every removable conv. A removed
    channel's batch-norm scale and shift are zeroed first, so it outputs zero like the masked model does.
    Returns {conv name: (filters before, filters after)} for the convs that shrank."""
    report = {}
    for name, (bn_name, consumer_name) in removable_chains(model).items():
        conv = model.get_submodule(name)
        keep = _keep_of(conv)
        if keep.all() or not keep.any():
            continue  # nothing to remove, or the whole layer is gone (leave it: shapes must stay valid)
        idx = torch.nonzero(keep).flatten()
        before = conv.out_channels
        consumer = model.get_submodule(consumer_name)
        # Quantizers that scale by weight statistics keep the statistics of the unshrunk layers.
        for layer in (conv, consumer):
            wq = getattr(layer, "w_quant", None)
            if isinstance(wq, WeightStats):
                wq.freeze(layer.weight)
        wq = getattr(conv, "w_quant", None)
        if isinstance(wq, WeightStats) and wq.per_channel_frozen:
            wq.frozen = wq.frozen.index_select(0, idx).clone()
        for p in ("weight", "bias", "weight_mask"):
            if hasattr(conv, p):
                _shrink_param(conv, p, idx, 0)
        conv.out_channels = len(idx)
        if bn_name is not None:
            bn = model.get_submodule(bn_name)
            for p in ("weight", "bias", "running_mean", "running_var"):
                _shrink_param(bn, p, idx, 0)
            bn.num_features = len(idx)
        for p in ("weight", "weight_mask"):
            if hasattr(consumer, p):
                _shrink_param(consumer, p, idx, 1)
        consumer.in_channels = len(idx)
        report[name] = (before, len(idx))
    return report
