"""Quantization-aware layers and the pass that puts them into a model.

``QConv2d`` / ``QLinear`` are ``nn.Conv2d`` / ``nn.Linear`` that carry a weight quantizer, an input-activation
quantizer and a pruning mask (a buffer of the weight's shape, saved with the state dict):

    y = op(a_quant(x), w_quant(w) * mask)

The mask multiplies after quantization because no quantizer maps 0 to 0 exactly (a binary sign sends 0 to
+1). ``mask_mode="hard"`` (PPQ, magnitude pruning) applies it and so blocks the gradient of pruned weights.
``mask_mode="soft"`` (SPQ, soft filter pruning as in SFP/FPGM) does not apply it: the pruner zeroes the
selected weights at each epoch end and they train freely from there, so they may be selected back. (Masking
them in the forward pass with a straight-through gradient instead diverged: a channel held at zero has zero
batch variance, batch norm then multiplies its gradient by 1/sqrt(eps) ~ 316 at every step, the pruned
filters grow without bound and wreck APoT's weight standardisation — measured on ResNet-20: loss back at
chance by the second epoch.)
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..quant import bits_of, make_quantizer


class _QuantMixin:
    def _init_q(self, w_quant, a_quant):
        self.w_quant = w_quant
        self.a_quant = a_quant
        self.register_buffer("weight_mask", torch.ones_like(self.weight, dtype=torch.float32))
        self.mask_mode = "hard"

    @property
    def w_bits(self) -> int:
        return bits_of(self.w_quant)

    @property
    def a_bits(self) -> int:
        return bits_of(self.a_quant)

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight if self.w_quant is None else self.w_quant(self.weight)
        return w if self.mask_mode == "soft" else w * self.weight_mask.to(w.dtype)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.a_quant is None else self.a_quant(x)

    def cost_weights(self):
        """For ``cmn_ext.metrics``: (kind, weights, nonzero unmasked weights, w_bits, a_bits)."""
        kind = "conv" if isinstance(self, nn.Conv2d) else "linear"
        nnz = int(torch.count_nonzero(self.weight.detach() * self.weight_mask))
        return kind, self.weight.numel(), nnz, self.w_bits, self.a_bits

    def filter_keep(self) -> torch.Tensor:
        """bool [out]: filters with at least one unmasked weight."""
        return self.weight_mask.flatten(1).amax(1) > 0


class QConv2d(_QuantMixin, nn.Conv2d):
    def __init__(self, *args, w_quant=None, a_quant=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_q(w_quant, a_quant)

    def forward(self, x):
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_quant=None, a_quant=None) -> "QConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, w_quant=w_quant, a_quant=a_quant,
                device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            q.weight.copy_(conv.weight)
            if conv.bias is not None:
                q.bias.copy_(conv.bias)
        return q


class QLinear(_QuantMixin, nn.Linear):
    def __init__(self, *args, w_quant=None, a_quant=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_q(w_quant, a_quant)

    def forward(self, x):
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, lin: nn.Linear, w_quant=None, a_quant=None) -> "QLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, w_quant=w_quant, a_quant=a_quant,
                device=lin.weight.device, dtype=lin.weight.dtype)
        with torch.no_grad():
            q.weight.copy_(lin.weight)
            if lin.bias is not None:
                q.bias.copy_(lin.bias)
        return q


QLAYERS = (QConv2d, QLinear)

# Edge-layer presets: CMN keeps the first and last layers in full precision; SPQ/PPQ quantize them to 8 bits
# (a signed 8-bit input for the first layer, which sees normalised images).
EDGE_PRESETS = {
    "fp": {"weight": None, "act": None},
    "8bit": {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "linear", "bits": 8}},
    "same": None,
}


def _parent(model: nn.Module, name: str):
    parts = name.rsplit(".", 1)
    return (model.get_submodule(parts[0]), parts[1]) if len(parts) == 2 else (model, parts[0])


def layer_names(model: nn.Module) -> list[str]:
    """Names of the conv / linear layers in registration order (the order the built-in models run them)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def quantize_model(model: nn.Module, spec: Mapping | None = None) -> nn.Module:
    """Replace every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` (in place) by ``QConv2d`` / ``QLinear``.

    ``spec``: ``{"weight": <quantizer spec>, "act": <quantizer spec>, "first": "fp"|"8bit"|"same",
    "last": ..., "layers": {name: {"weight": ..., "act": ...}}}``. The first layer is the first conv/linear
    in registration order, the last the last one. With ``spec=None`` (or kind "fp") the layers only gain masks,
    which is how a full-precision model is pruned. Returns ``model``.
    """
    spec = dict(spec or {})
    unknown = set(spec) - {"weight", "act", "first", "last", "layers"}
    if unknown:
        raise ValueError(f"quantize_model: unknown keys {sorted(unknown)} in the quantization spec")
    names = layer_names(model)
    if not names:
        raise ValueError("quantize_model: the model has no nn.Conv2d or nn.Linear layer")
    overrides = dict(spec.get("layers") or {})
    missing = set(overrides) - set(names)
    if missing:
        raise ValueError(f"quantize_model: 'layers' names {sorted(missing)} that are not conv/linear layers; "
                         f"layers are {names}")
    for i, name in enumerate(names):
        layer_spec = {"weight": spec.get("weight"), "act": spec.get("act")}
        edge = "first" if i == 0 else "last" if i == len(names) - 1 else None
        if edge:
            preset = spec.get(edge, "same")
            if preset not in EDGE_PRESETS:
                raise ValueError(f"quantize_model: '{edge}' expected one of {list(EDGE_PRESETS)}, got {preset!r}")
            if EDGE_PRESETS[preset] is not None:
                layer_spec = dict(EDGE_PRESETS[preset])
                if edge == "first" and layer_spec["act"] is not None:
                    layer_spec["act"] = {**layer_spec["act"], "signed": True}
        layer_spec.update(overrides.get(name, {}))
        module = model.get_submodule(name)
        if isinstance(module, QLAYERS):
            raise ValueError(f"quantize_model: layer {name!r} is already quantized")
        wq, aq = make_quantizer(layer_spec.get("weight"), "weight"), make_quantizer(layer_spec.get("act"), "act")
        cls = QConv2d if isinstance(module, nn.Conv2d) else QLinear
        parent, attr = _parent(model, name)
        setattr(parent, attr, cls.from_float(module, wq, aq))
    return model


def qlayers(model: nn.Module):
    """(name, module) for every QConv2d / QLinear."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QLAYERS)]
