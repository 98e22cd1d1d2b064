"""Deploy layers: the inference form of trained QAT layers, computing through ``torch.ops.cmn.*``.

Each holds integer / packed weights and a per-output-channel float epilogue (``epi_scale``, ``epi_bias``)
into which the weight and activation scales and the following batch norm are folded:
    y[k] = epi_scale[k] * acc[k] + epi_bias[k],   acc = the kernel's exact integer accumulator.
The layer quantizes its float input itself, with the same quantizer module the QAT layer used, so the codes
are the QAT codes. Linear layers run as 1x1 convolutions (binary, int8) or ``apot_matmul`` (APoT).
Every layer is described by ``meta`` (plain data) so that ``cmn_ext.nn.load_deploy`` can rebuild it.
"""

import torch
from torch import nn

from ..ops import pack_apot_conv_input
from ..quant import make_quantizer


class DeployLayer(nn.Module):
    fx_leaf = True  # traced as one node by cmn_ext.prune.graph
    kernel = "?"

    def __init__(self, meta: dict):
        super().__init__()
        self.meta = dict(meta)
        k = meta["out_channels"]
        self.out_channels = k
        self.register_buffer("epi_scale", torch.zeros(k))
        self.register_buffer("epi_bias", torch.zeros(k))
        aq = meta.get("act")
        self.a_quant = make_quantizer(aq, "act") if aq is not None else None
        if self.a_quant is not None:
            self.a_quant.requires_grad_(False)

    @property
    def is_linear(self) -> bool:
        return self.meta["kind"] == "linear"

    def _as_image(self, x):
        return x.reshape(x.shape[0], x.shape[1], 1, 1) if self.is_linear else x

    def _geometry(self):
        if self.is_linear:
            return [1, 1], [0, 0], [1, 1]
        return list(self.meta["stride"]), list(self.meta["padding"]), list(self.meta["dilation"])

    def _finish(self, y):
        return y.reshape(y.shape[0], -1) if self.is_linear else y

    def cost_weights(self):
        m = self.meta
        return m["kind"], m["weights"], int(self.nonzero), m["w_bits"], m["a_bits"]

    def extra_repr(self) -> str:
        m = self.meta
        return f"{m['in_channels']}, {m['out_channels']}, kernel={self.kernel}, w_bits={m['w_bits']}, a_bits={m['a_bits']}"


class BinaryConv2d(DeployLayer):
    """``binary_conv2d`` with packed +-1 weights; the input is packed with ``pack_bits`` in the layer's
    encoding (pm1: x >= 0 -> +1; 01: x >= 0.5 -> 1), exactly the QAT BinaryAct decision."""

    kernel = "binary"

    def __init__(self, meta: dict):
        super().__init__(meta)
        k, c, kh, kw = meta["weight_shape"]
        self.register_buffer("w_bits", torch.zeros((k, kh, kw, (c + 31) // 32), dtype=torch.int32))
        self.register_buffer("nonzero", torch.tensor(0))

    def forward(self, x):
        x = self._as_image(x).float().contiguous()
        stride, padding, dilation = self._geometry()
        bits = torch.ops.cmn.pack_bits(x, self.meta["encoding"])
        y = torch.ops.cmn.binary_conv2d(bits, self.w_bits, self.meta["in_channels"], stride, padding, dilation,
                                        self.meta["encoding"], scale=self.epi_scale, bias=self.epi_bias,
                                        output="float")
        return self._finish(y)


class Int8Conv2d(DeployLayer):
    """``int8_conv2d`` with the kept filters' int8 weights (compacted) and a keep mask over output channels;
    input codes from the QAT activation quantizer (uint8 for unsigned, int8 for signed)."""

    kernel = "int8"

    def __init__(self, meta: dict):
        super().__init__(meta)
        k, c, kh, kw = meta["weight_shape"]
        self.register_buffer("weight", torch.zeros((meta["kept"], c, kh, kw), dtype=torch.int8))
        self.register_buffer("keep", torch.ones(k, dtype=torch.bool))
        self.register_buffer("nonzero", torch.tensor(0))

    def forward(self, x):
        q, _ = self.a_quant.integer(self._as_image(x).float())
        xq = q.to(torch.int8 if self.a_quant.signed else torch.uint8).contiguous()
        stride, padding, dilation = self._geometry()
        keep = None if self.meta["kept"] == self.meta["out_channels"] else self.keep
        y = torch.ops.cmn.int8_conv2d(xq, self.weight, stride, padding, dilation, keep, scale=self.epi_scale,
                                      bias=self.epi_bias, output="float")
        return self._finish(y)


class APoTConv2d(DeployLayer):
    """``apot_conv2d`` (conv) / ``apot_matmul`` (linear) on packed 4-bit codes and 16-entry level tables."""

    kernel = "apot"

    def __init__(self, meta: dict):
        super().__init__(meta)
        k, c, kh, kw = meta["weight_shape"]
        shape = (k, (c + 1) // 2) if self.is_linear else (k, kh, kw, (c + 1) // 2)
        self.register_buffer("w_packed", torch.zeros(shape, dtype=torch.uint8))
        self.register_buffer("w_levels", torch.zeros(16, dtype=torch.int32))
        self.register_buffer("x_levels", torch.zeros(16, dtype=torch.int32))
        self.register_buffer("nonzero", torch.tensor(0))

    def forward(self, x):
        codes = self.a_quant.codes(x.float())
        epi = dict(scale=self.epi_scale, bias=self.epi_bias, output="float")
        if self.is_linear:
            a = torch.ops.cmn.pack_int4(codes.contiguous())
            return torch.ops.cmn.apot_matmul(a, self.x_levels, self.w_packed, self.w_levels,
                                             self.meta["in_channels"], **epi)
        stride, padding, dilation = self._geometry()
        return torch.ops.cmn.apot_conv2d(pack_apot_conv_input(codes), self.x_levels, self.w_packed, self.w_levels,
                                         self.meta["in_channels"], stride, padding, dilation, **epi)


DEPLOY_LAYERS = {cls.__name__: cls for cls in (BinaryConv2d, Int8Conv2d, APoTConv2d)}

__all__ = ["APoTConv2d", "BinaryConv2d", "DEPLOY_LAYERS", "DeployLayer", "Int8Conv2d"]
