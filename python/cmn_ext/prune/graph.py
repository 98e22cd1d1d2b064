"""The layer graph of a model, traced with torch.fx: which batch norm follows a conv, and which convs feed
exactly one other conv through per-channel ops only (the channels that can be removed physically)."""

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

_PER_CHANNEL_FUNCS = {F.relu, F.relu6, torch.relu, F.hardtanh, torch.nn.functional.leaky_relu}
_PER_CHANNEL_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.Identity)


class _LayerTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)) or getattr(
            m, "fx_leaf", False) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> torch.fx.Graph:
    try:
        return _LayerTracer().trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many types; the message says what to do
        raise RuntimeError(f"could not trace {type(model).__name__} with torch.fx ({e}); the channel analysis "
                           "needs a traceable forward") from e


def _module(model, node):
    return model.get_submodule(node.target) if node.op == "call_module" else None


def _is_per_channel(model, node) -> bool:
    if node.op == "call_module":
        return isinstance(_module(model, node), _PER_CHANNEL_MODULES)
    if node.op == "call_function":
        return node.target in _PER_CHANNEL_FUNCS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def conv_bn_pairs(model: nn.Module, graph: torch.fx.Graph | None = None) -> dict:
    """{layer name: batch-norm name} for every Conv2d whose only user is a BatchNorm2d and every Linear whose
    only user is a BatchNorm1d (the batch norms that can be folded into the layer)."""
    graph = graph or trace(model)
    pairs = {}
    for node in graph.nodes:
        mod = _module(model, node)
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and len(node.users) == 1:
            user = next(iter(node.users))
            bn_type = nn.BatchNorm2d if isinstance(mod, nn.Conv2d) else nn.BatchNorm1d
            if isinstance(_module(model, user), bn_type):
                pairs[node.target] = user.target
    return pairs


def removable_chains(model: nn.Module, graph: torch.fx.Graph | None = None) -> dict:
    """{conv name: (batch-norm name or None, consumer conv name)} for each conv (groups = 1) whose output
    reaches exactly one groups = 1 conv through a batch norm and per-channel activations only.

    Those are the filters that can be removed with the consumer's input channels. A conv whose output meets a
    residual add, a concatenation, a pooling-then-linear head or a depthwise conv is not listed: its pruned
    filters stay allocated (masked) and the kernels skip them."""
    graph = graph or trace(model)
    chains = {}
    for node in graph.nodes:
        conv = _module(model, node)
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            continue
        cur, bn = node, None
        while len(cur.users) == 1:
            user = next(iter(cur.users))
            mod = _module(model, user)
            if isinstance(mod, nn.BatchNorm2d) and bn is None and cur is node:
                bn, cur = user.target, user
            elif _is_per_channel(model, user):
                cur = user
            elif isinstance(mod, nn.Conv2d) and mod.groups == 1 and user.args[0] is cur:
                chains[node.target] = (bn, user.target)
                break
            else:
                break
    return chains

