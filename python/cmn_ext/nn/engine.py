"""The deploy engine: a converted network as one FX graph of ``torch.ops.cmn`` calls in the integer domain.

``build_engine(deploy)`` traces a model from ``convert`` (deploy layers in place of the QAT layers) and emits a
``torch.fx.GraphModule`` in which (DESIGN 3.5):

* every conv's fused epilogue emits exactly what its consumers take: packed bits for a binary conv, uint8 /
  int8 codes (channels_last) for an int8 conv, nibble-packed codes for an APoT conv, float where a float layer
  or the float residual stream needs it; both at once (``float_out``) when a value feeds a quantized conv and
  a float consumer (a ResNet block output feeds the next block's conv and its shortcut);
* the ReLU after a conv, and a residual addition with the ReLU after it, are folded into that conv's epilogue
  (``residual=``, with option-A shortcuts as ``residual_stride`` / ``residual_offset``): a ResNet basic block
  is two kernel calls;
* the codes are those of the QAT quantizer of the consuming layer (same formula, same rounding), so nothing
  between two quantized layers is re-quantized in float; float -> codes happens only where the network is
  float (after a full-precision first layer, before a quantized classifier on pooled features);
* weight-only work is done here, once: CPU kernel layouts (``prepacked``), decoded APoT levels, batch norms
  of float convs folded into their weights;
* the graph has no data-dependent Python control flow and no host synchronisation, so it passes
  ``torch.compile(fullgraph=True)`` / ``torch.export`` and (on CUDA) CUDA-graph capture.

The residual stream of a residual network stays float32 (NHWC), exactly as in the QAT network, so the engine
computes what the QAT network computes (up to float rounding of the folded batch norms).
"""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..models.cifar_resnet import OptionAShortcut
from ..quant import APoTQuantizer, BinaryAct, DoReFaAct, LinearQuantizer
from .deploy import APoTConv2d, BinaryConv2d, DeployLayer, Int8Conv2d

__all__ = ["Codes", "DeployEngine", "build_engine", "input_codes", "quantize_to_codes", "source_of"]


@dataclasses.dataclass(frozen=True)
class Codes:
    """The input format of a quantized layer: what a producer's epilogue must emit for it."""

    kind: str                 # "bits" | "uint8" | "int8" | "int4"
    encoding: str = ""        # bits: "01" | "pm1"
    scale: float = 1.0        # uint8 / int8: the step (q = floor(y / scale + 0.5)); int4: alpha (u = y / alpha)
    lo: int = 0               # uint8 / int8: clamp range
    hi: int = 0
    thresholds: tuple = ()    # int4: code = #(thresholds[i] <= u)

    def epilogue(self) -> dict:
        if self.kind == "bits":
            return {"output": "bits", "out_encoding": self.encoding}
        if self.kind in ("uint8", "int8"):
            return {"output": self.kind, "out_scale": self.scale, "out_round": "half_up",
                    "out_range": [self.lo, self.hi]}
        return {"output": "int4", "out_scale": self.scale, "out_thresholds": list(self.thresholds)}


def _f32(t) -> float:
    """A float32 value as the Python float holding it exactly (schema floats are cast back to it)."""
    return float(torch.as_tensor(t, dtype=torch.float32))


def input_codes(layer: DeployLayer) -> Codes | None:
    """The code format ``layer`` takes, from its QAT activation quantizer; None when it has no fixed one (a
    dynamic activation range), in which case the layer quantizes its float input itself."""
    aq = layer.a_quant
    if isinstance(layer, BinaryConv2d) and isinstance(aq, BinaryAct):
        return Codes("bits", encoding=layer.meta["encoding"])
    if isinstance(layer, Int8Conv2d):
        if isinstance(aq, LinearQuantizer) and aq.clip == "kl" and float(aq.clip_value) > 0:
            step = _f32(aq.clip_value.clamp_min(1e-12) / aq.qmax)
            lo = -aq.qmax if aq.signed else 0
            return Codes("int8" if aq.signed else "uint8", scale=step, lo=lo, hi=aq.qmax)
        if isinstance(aq, DoReFaAct):
            n = 2**aq.bits - 1
            return Codes("uint8", scale=_f32(1.0 / n), lo=0, hi=n)
        return None
    if isinstance(layer, APoTConv2d) and isinstance(aq, APoTQuantizer) and not aq.signed:
        grid = aq.grid.float()
        mids = ((grid[1:] + grid[:-1]) / 2).tolist()
        return Codes("int4", scale=_f32(aq._alpha().detach()), thresholds=tuple(mids))
    return None


def quantize_to_codes(x: torch.Tensor, kind: str, encoding: str = "", scale: float = 1.0, lo: int = 0, hi: int = 0,
                      thresholds: torch.Tensor | None = None) -> torch.Tensor:
    """Float activations (a float layer's output, the network input) in a layer's input format (see Codes),
    with the same arithmetic as the epilogues: bits [N, H, W, words], uint8/int8 [N, C, H, W] (channels_last),
    int4 nibbles [N, H, W, ceil(C/2)]; 2-d [N, C] inputs give [N, C, 1, 1] (bits / uint8 / int8) or
    [N, ceil(C/2)] (int4)."""
    if kind == "bits":
        x4 = x if x.dim() == 4 else x.reshape(x.shape[0], x.shape[1], 1, 1)
        return torch.ops.cmn.pack_bits(x4, encoding)
    if kind in ("uint8", "int8"):
        x4 = x if x.dim() == 4 else x.reshape(x.shape[0], x.shape[1], 1, 1)
        q = torch.clamp(torch.floor(x4 / scale + 0.5), lo, hi)
        return q.to(torch.uint8 if kind == "uint8" else torch.int8)
    c = torch.bucketize(x / scale, thresholds, right=True).to(torch.uint8)
    c = c.permute(0, 2, 3, 1) if c.dim() == 4 else c
    return torch.ops.cmn.pack_int4(c.contiguous())


def _to_channels_last(x):
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _conv_size(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _float_out_like(x_codes, kind: str, out_channels: int, kernel, stride, padding, dilation):
    """An fp32 [N, K, Ho, Wo] channels_last tensor for a conv's float_out, from the conv's input codes."""
    if kind == "int8":
        h, w = x_codes.shape[2], x_codes.shape[3]
    else:  # bits / nibbles: NHWC
        h, w = x_codes.shape[1], x_codes.shape[2]
    ho = _conv_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = _conv_size(w, kernel[1], stride[1], padding[1], dilation[1])
    return torch.empty((x_codes.shape[0], out_channels, ho, wo), dtype=torch.float32, device=x_codes.device,
                       memory_format=torch.channels_last)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (DeployLayer, OptionAShortcut, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)) \
            or getattr(m, "fx_leaf", False) or super().is_leaf_module(m, qualname)


_RELU_FUNCS = {F.relu, torch.relu}
_ADD_FUNCS = {operator.add, torch.add}


@dataclasses.dataclass
class _Chain:
    """A deploy conv and the nodes folded into its epilogue."""

    conv: torch.fx.Node
    tail: torch.fx.Node
    relu: bool = False
    residual: torch.fx.Node | None = None     # the float operand of the fused addition (or a folded shortcut)
    absorbed: list = dataclasses.field(default_factory=list)


class _EngineBuilder:
    def __init__(self, model: nn.Module):
        self.model = model
        self.old = _Tracer().trace(model)
        self.graph = torch.fx.Graph()
        self.env: dict = {}           # old node -> {"float": new node, Codes: new node}
        self.attr_nodes: dict = {}
        self.chains: dict = {}        # conv node -> _Chain
        self.tail_of: dict = {}       # absorbed / tail node -> _Chain
        self.folded_shortcuts: dict = {}  # OptionAShortcut node -> (input node, stride, pad)
        self.float_convs: dict = {}   # float conv node -> batch-norm node folded into it
        self.requests: dict = {}

    # ---- helpers ------------------------------------------------------------------------------------------
    def module(self, node):
        return self.model.get_submodule(node.target) if node.op == "call_module" else None

    def resolve(self, node):
        """Skip identity modules (the batch norms folded by convert)."""
        while isinstance(node, torch.fx.Node) and isinstance(self.module(node), nn.Identity):
            node = node.args[0]
        return node

    def is_relu(self, node):
        return (node.op == "call_function" and node.target in _RELU_FUNCS) or \
            (node.op == "call_method" and node.target == "relu") or isinstance(self.module(node), nn.ReLU)

    def is_add(self, node):
        return node.op == "call_function" and node.target in _ADD_FUNCS and len(node.args) == 2 and \
            not node.kwargs and all(isinstance(a, torch.fx.Node) for a in node.args)

    def deploy_conv(self, node):
        m = self.module(node)
        return m if isinstance(m, DeployLayer) and not m.is_linear and input_codes(m) is not None else None

    def users(self, node):
        """Users, looking through identity modules."""
        out = []
        for u in node.users:
            out.extend(self.users(u) if isinstance(self.module(u), nn.Identity) else [u])
        return out

    def host_levels(self, name: str, layer):
        """get_attr nodes of CPU copies of an APoT layer's level tables, kept as plain attributes so that
        moving the engine to a GPU leaves them on the host: the ops read them there without a device
        synchronisation (which also keeps a CUDA deploy model graph-capturable)."""
        layer.cmn_x_levels_host = layer.x_levels.detach().cpu().clone()
        layer.cmn_w_levels_host = layer.w_levels.detach().cpu().clone()
        return self.attr(f"{name}.cmn_x_levels_host"), self.attr(f"{name}.cmn_w_levels_host")

    def attr(self, target: str):
        """A get_attr node for an attribute of the deploy model (the engine holds it as ``net``)."""
        if target not in self.attr_nodes:
            self.attr_nodes[target] = self.graph.get_attr(f"net.{target}")
        return self.attr_nodes[target]

    def copy_node(self, node):
        new = self.graph.node_copy(node, self.float_of)
        if new.op in ("call_module", "get_attr"):
            new.target = f"net.{new.target}"
        return new

    # ---- analysis -----------------------------------------------------------------------------------------
    def find_chains(self):
        for node in self.old.nodes:
            if not self.deploy_conv(node):
                continue
            chain = _Chain(conv=node, tail=node)
            cur = node
            while True:
                users = self.users(cur)
                if len(users) != 1:
                    break
                u = users[0]
                if self.is_relu(u):
                    chain.relu = True
                elif self.is_add(u) and not chain.relu and chain.residual is None:
                    other = u.args[1] if self.resolve(u.args[0]) is cur else u.args[0]
                    if self.resolve(other) is cur:
                        break
                    chain.residual = self.resolve(other)
                else:
                    break
                chain.absorbed.append(u)
                cur = chain.tail = u
            self.chains[node] = chain
            for n in chain.absorbed:
                self.tail_of[n] = chain
        # option-A shortcuts used only as fused residuals are folded into the epilogues' residual arguments
        residual_uses: dict = {}
        for chain in self.chains.values():
            if chain.residual is not None:
                residual_uses[chain.residual] = residual_uses.get(chain.residual, 0) + 1
        for node in self.old.nodes:
            if isinstance(self.module(node), OptionAShortcut) and len(self.users(node)) == residual_uses.get(node, -1):
                self.folded_shortcuts[node] = (self.resolve(node.args[0]), 2, self.module(node).pad)
        # float convs followed by a batch norm: folded into one conv with a bias
        for node in self.old.nodes:
            m = self.module(node)
            if type(m) is nn.Conv2d or (isinstance(m, nn.Conv2d) and getattr(m, "w_quant", 0) is None
                                       and getattr(m, "a_quant", 0) is None and m.padding_mode == "zeros"):
                users = list(node.users)
                if len(users) == 1 and isinstance(self.module(users[0]), nn.BatchNorm2d):
                    self.float_convs[node] = users[0]

    def request(self, node, what):
        self.requests.setdefault(self.resolve(node), []).append(what)

    def find_requests(self):
        for u in self.old.nodes:
            if u in self.chains:
                self.request(u.args[0], input_codes(self.module(u)))
            elif u in self.tail_of:
                chain = self.tail_of[u]
                if self.is_add(u):
                    r = chain.residual
                    self.request(self.folded_shortcuts[r][0] if r in self.folded_shortcuts else r, "float")
            elif u in self.folded_shortcuts or isinstance(self.module(u), nn.Identity):
                continue
            elif isinstance(self.module(u), DeployLayer) and self.module(u).is_linear and \
                    input_codes(self.module(u)) is not None:
                self.request(u.args[0], input_codes(self.module(u)))
            else:
                for a in u.all_input_nodes:
                    self.request(a, "float")

    # ---- emission -----------------------------------------------------------------------------------------
    def float_of(self, node):
        node = self.resolve(node)
        if node in self.folded_shortcuts and "float" not in self.env.get(node, {}):
            src = self.float_of(node.args[0])
            self.env[node] = {"float": self.graph.call_module(f"net.{node.target}", (src,))}
        values = self.env[node]
        if "float" not in values:
            raise RuntimeError(f"build_engine: no float value for {node.name}")  # pragma: no cover
        return values["float"]

    def codes_of(self, node, codes: Codes):
        node = self.resolve(node)
        values = self.env.setdefault(node, {})
        if codes not in values:
            thresholds = None
            if codes.kind == "int4":
                name = f"_cmn_thresholds_{len(self.attr_nodes)}"
                self.model.register_buffer(name, torch.tensor(codes.thresholds, dtype=torch.float32),
                                           persistent=False)
                thresholds = self.attr(name)
            values[codes] = self.graph.call_function(quantize_to_codes, (
                self.float_of(node), codes.kind, codes.encoding, codes.scale, codes.lo, codes.hi, thresholds))
        return values[codes]

    def emit_conv(self, chain: _Chain):
        layer = self.module(chain.conv)
        name = chain.conv.target
        x = self.codes_of(chain.conv.args[0], input_codes(layer))
        reqs = self.requests.get(chain.tail, [])
        code_reqs = list(dict.fromkeys(r for r in reqs if r != "float"))
        need_float = "float" in reqs or len(code_reqs) != 1
        kw = {"scale": self.attr(f"{name}.epi_scale"), "bias": self.attr(f"{name}.epi_bias"), "relu": chain.relu}
        kw.update(code_reqs[0].epilogue() if code_reqs else {"output": "float"})
        if chain.residual is not None:
            r = chain.residual
            if r in self.folded_shortcuts:
                src, stride, pad = self.folded_shortcuts[r]
                kw.update(residual=self.float_of(src), residual_stride=stride, residual_offset=pad)
            else:
                kw["residual"] = self.float_of(r)
        meta = layer.meta
        geometry = (list(meta["stride"]), list(meta["padding"]), list(meta["dilation"]))
        fo = None
        if code_reqs and need_float:
            kind = "int8" if isinstance(layer, Int8Conv2d) else "nhwc"
            fo = self.graph.call_function(_float_out_like, (x, kind, meta["out_channels"],
                                                            meta["weight_shape"][2:], *geometry))
            kw["float_out"] = fo
        if isinstance(layer, BinaryConv2d):
            layer.register_buffer("prepacked", torch.ops.cmn.binary_prepack(layer.w_bits.cpu(), meta["in_channels"]),
                                  persistent=False)
            out = self.graph.call_function(torch.ops.cmn.binary_conv2d.default, (
                x, self.attr(f"{name}.w_bits"), meta["in_channels"], *geometry, meta["encoding"]),
                {**kw, "prepacked": self.attr(f"{name}.prepacked")})
        elif isinstance(layer, Int8Conv2d):
            layer.register_buffer("prepacked", torch.ops.cmn.int8_prepack(layer.weight.cpu()), persistent=False)
            keep = self.attr(f"{name}.keep") if meta["kept"] != meta["out_channels"] else None
            out = self.graph.call_function(torch.ops.cmn.int8_conv2d.default, (
                x, self.attr(f"{name}.weight"), *geometry, keep), {**kw, "prepacked": self.attr(f"{name}.prepacked")})
        else:  # APoT on the int8 kernel with the weights decoded once (when both level tables fit int8)
            levels = layer.w_levels.cpu().long()
            if int(levels.abs().max()) <= 127 and int(layer.x_levels.abs().max()) <= 127:
                decoded = levels[_unpack_conv_codes(layer)].to(torch.int8)
                layer.register_buffer("prepacked", torch.ops.cmn.int8_prepack(decoded), persistent=False)
                kw.update(prepacked=self.attr(f"{name}.prepacked"))
            x_levels, w_levels = self.host_levels(name, layer)
            out = self.graph.call_function(torch.ops.cmn.apot_conv2d.default, (
                x, x_levels, self.attr(f"{name}.w_packed"), w_levels, meta["in_channels"], *geometry, "auto"), kw)
        values = {code_reqs[0]: out} if code_reqs else {"float": out}
        if fo is not None:
            values["float"] = fo
        self.env[chain.tail] = values

    def emit_linear(self, node):
        layer = self.module(node)
        name, meta = node.target, layer.meta
        codes = input_codes(layer)
        x = self.codes_of(node.args[0], codes)
        kw = {"scale": self.attr(f"{name}.epi_scale"), "bias": self.attr(f"{name}.epi_bias"), "output": "float"}
        one = ([1, 1], [0, 0], [1, 1])
        if isinstance(layer, BinaryConv2d):
            y = self.graph.call_function(torch.ops.cmn.binary_conv2d.default, (
                x, self.attr(f"{name}.w_bits"), meta["in_channels"], *one, meta["encoding"]), kw)
        elif isinstance(layer, Int8Conv2d):
            keep = self.attr(f"{name}.keep") if meta["kept"] != meta["out_channels"] else None
            y = self.graph.call_function(torch.ops.cmn.int8_conv2d.default, (
                x, self.attr(f"{name}.weight"), *one, keep), kw)
        else:
            x_levels, w_levels = self.host_levels(name, layer)
            y = self.graph.call_function(torch.ops.cmn.apot_matmul.default, (
                x, x_levels, self.attr(f"{name}.w_packed"), w_levels, meta["in_channels"], "auto"), kw)
            self.env[node] = {"float": y}
            return
        self.env[node] = {"float": self.graph.call_method("flatten", (y, 1))}

    def emit_float_conv(self, node):
        conv, bn = self.module(node), self.module(self.float_convs[node])
        with torch.no_grad():
            g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight = conv.quantized_weight() if hasattr(conv, "quantized_weight") else conv.weight
            w = weight * g.view(-1, 1, 1, 1)
            b = (conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)) - bn.running_mean
            b = b * g + bn.bias
        conv.register_buffer("folded_weight", w.detach().clone(), persistent=False)
        conv.register_buffer("folded_bias", b.detach().clone(), persistent=False)
        y = self.graph.call_function(F.conv2d, (self.float_of(node.args[0]), self.attr(f"{node.target}.folded_weight"),
                                                self.attr(f"{node.target}.folded_bias"), conv.stride, conv.padding,
                                                conv.dilation, conv.groups))
        self.env[self.float_convs[node]] = {"float": y}

    def build(self) -> torch.fx.GraphModule:
        self.find_chains()
        self.find_requests()
        folded_bns = set(self.float_convs.values())
        for node in self.old.nodes:
            if node.op == "placeholder":
                p = self.graph.placeholder(node.target)
                self.env[node] = {"float": self.graph.call_function(_to_channels_last, (p,))}
            elif node.op == "output":
                self.graph.output(torch.fx.node.map_arg(node.args[0], self.float_of))
            elif node in self.chains:
                if self.chains[node].tail is node:
                    self.emit_conv(self.chains[node])
            elif node in self.tail_of:
                if self.tail_of[node].tail is node:
                    self.emit_conv(self.tail_of[node])
            elif node in self.folded_shortcuts or isinstance(self.module(node), nn.Identity) or node in folded_bns:
                continue
            elif node in self.float_convs:
                self.emit_float_conv(node)
            elif isinstance(self.module(node), DeployLayer) and self.module(node).is_linear and \
                    input_codes(self.module(node)) is not None:
                self.emit_linear(node)
            else:
                self.env[node] = {"float": self.copy_node(node)}
        self.graph.lint()
        holder = nn.Module()
        holder.net = self.model
        program = torch.fx.GraphModule(holder, self.graph, class_name="DeployProgram")
        program.net = self.model  # the deploy model itself (GraphModule copied only the attributes it reads)
        return program


def _unpack_conv_codes(layer: APoTConv2d) -> torch.Tensor:
    """The weight codes of an APoT conv layer as int64 [K, C, kh, kw]."""
    from ..ops import unpack_int4

    k, c, kh, kw = layer.meta["weight_shape"]
    return unpack_int4(layer.w_packed.cpu(), c).permute(0, 3, 1, 2).long()


class DeployEngine(nn.Module):
    """A converted network on the kernels: ``program``, the integer-domain GraphModule (``code`` shows the
    kernel calls), which holds ``net``, the layer-wise deploy model whose buffers it reads.

    On the CPU a large batch runs in micro-batches of ``micro_batch`` images (default: 64 at 32x32, scaled by
    the input area): every activation of a micro-batch stays in cache from one layer to the next, which is
    worth more than the larger batch. Results do not depend on it (images are independent)."""

    def __init__(self, program: torch.fx.GraphModule, micro_batch: int | None = None):
        super().__init__()
        self.program = program
        self.micro_batch = micro_batch

    @property
    def net(self) -> nn.Module:
        return self.program.net

    def chunk(self, x: torch.Tensor) -> int:
        if self.micro_batch:
            return self.micro_batch
        area = x.shape[-2] * x.shape[-1] if x.dim() == 4 else 1024
        return max(1, (64 * 1024) // max(1, area))

    def forward(self, x):
        n = self.chunk(x)
        if x.device.type != "cpu" or x.shape[0] <= n:
            return self.program(x)
        return torch.cat([self.program(part) for part in x.split(n)])

    @property
    def code(self) -> str:
        return self.program.code


@torch.no_grad()
def build_engine(deploy: nn.Module, micro_batch: int | None = None) -> DeployEngine:
    """The integer-domain graph of the layer-wise model ``convert`` builds (see the module docstring), as a
    ``DeployEngine``: call it on float inputs like the model. The kernel layouts it adds to the deploy layers
    are not saved with them: they are rebuilt at load time."""
    program = _EngineBuilder(source_of(deploy)).build().eval()
    return DeployEngine(program, micro_batch).eval()


def source_of(model: nn.Module) -> nn.Module:
    """The layer-wise deploy model behind an engine (the model itself when it is not an engine)."""
    return model.net if isinstance(model, DeployEngine) else model
