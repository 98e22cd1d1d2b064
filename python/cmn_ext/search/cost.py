"""Hardware cost of a searched architecture: a measured latency table of the deployed network, and two models.

1. Measured (APQ's latency lookup table), ``CostTable``: one entry per layer key (``layer_key``: kind, shape,
   stride, input size, weight / activation bits, and the ReLU6 / residual / signed-input flags), measured the
   first time the key is needed and kept in a JSON file rebuilt per device. A network's latency is the sum over
   ``SearchSpace.deploy_layers``: EVERY layer the converted network runs, the fixed stem, first block, head,
   pooling and classifier included, plus one ``call`` entry (the engine's per-call work).
   The default measurement, ``measure_deployed``, times the layer AS THE DEPLOY ENGINE RUNS IT: the layer is
   built as a one-layer QAT network (conv + BN + ReLU6 / residual add, quantized as ``pairs.quantize_subnet``
   quantizes it), converted with ``cmn_ext.nn.convert`` and timed through its ``DeployEngine`` at batch 1, less
   the time of an empty engine. So an entry holds the kernel call AND its per-op work: quantizing the float
   input to codes, the float ReLU6 after it (not fused), the fake-quant float path of a layer with no kernel
   (depthwise convs: the engine's kernels are dense, so they run as float convs with their weights and inputs
   fake-quantized at every call, then a float BN and ReLU6). With the search's linear quantizers, convert runs
   every layer with both bit widths <= 8 on ``cmn.int8_conv2d`` (4- and 6-bit codes included), so on the
   deployed network the bits of a layer do not change what it runs.
   ``measure_layer`` (pass it as ``measure``) times the bare kernel the bits select instead (``kernel_for``):
       1 / 1 bit                 ``cmn.binary_conv2d``  on packed sign bits (32 channels per word)
       both <= 4 bits            ``cmn.apot_conv2d``    on nibble-packed 4-bit codes + 16-entry level tables
       both <= 8 bits            ``cmn.int8_conv2d``    on int8 / uint8 codes (5 to 8 bits all run here)
       depthwise, or > 8 bits    PyTorch's float conv   (fp16 on a GPU, fp32 on the CPU)
   with the engine's weight layouts (``prepacked``) on the CPU: what a deploy path with a kernel per bitwidth
   would pay per kernel call, without the per-op work around it (its sums fall far below a measured network).
   Whether fewer bits are faster is what a table measures, not an assumption (the tests assert the keys,
   kernels and layer counts, never timings).
2. Modelled (BitFusion, the accelerator APQ reports on, Sharma et al. ISCA 2018): a b_w x b_a multiply is
   decomposed into ceil(b_w / 2) x ceil(b_a / 2) products of 2-bit "BitBricks", the units the array has a
   fixed number of, so compute time and energy scale with MACs x bricks (``bitfusion_cost``). It rewards each
   2-bit step down, in every layer kind, on any machine; fp32 counts as 16 x 16 bricks. (BitFusion's fabric
   fuses bricks in powers of two, so a real array runs a 6-bit operand at the 8-bit rate; the model counts the
   bricks in use.)
The plain BOPs proxy (``SearchSpace.bops``, MACs x b_w x b_a) remains the third objective. Both models count
the searched layers only (the fixed layers add the same to every architecture).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..bench.cpu import _time_us as cpu_time_us
from ..files import write_text_atomic
from .space import Arch, Frame, Layer, SearchSpace

# Version 3: every layer of the deployed network, each timed as the deploy engine runs it (``measure_deployed``),
# keys with the ReLU6 / residual / signed flags. Version 2 timed the searched layers' bare kernels per bitwidth,
# version 1 every <= 8-bit one on the int8 kernel; older entries are dropped on load and measured again.
TABLE_VERSION = 3

KERNEL_NAMES = {"binary": "cmn.binary_conv2d", "apot": "cmn.apot_conv2d", "int8": "cmn.int8_conv2d"}


def as_layer(layer) -> Layer:
    """A ``Layer`` from a ``Layer`` or a plain 9-tuple (kind, cin, cout, k, stride, size, macs, w_bits, a_bits) of
    a searched layer, whose flags then follow from its kind as in ``SearchSpace.layer_costs``."""
    if isinstance(layer, Layer):
        return layer
    kind = layer[0]
    return Layer(*layer[:9], relu=kind in ("expand", "depthwise", "stem", "head"),
                 signed=kind not in ("depthwise", "project", "classifier"))


def layer_key(layer) -> str:
    """The key of a layer in a ``kernels`` table: its shape, bits and flags."""
    kind, cin, cout, k, stride, size, _macs, wb, ab, relu, residual, signed = as_layer(layer)
    return f"{kind}:{cin}:{cout}:{k}:{stride}:{size}:w{wb}:a{ab}:{_flags(relu, residual, signed)}"


def deployed_key(layer) -> str:
    """The key of a layer in a ``deployed`` table: its shape, flags and the program the deploy engine runs for
    it (``deployed_program``) instead of its bits, since bits that give the same program (e.g. 4, 6 and 8 on
    the int8 kernel) give the same deployed time; one entry serves them all."""
    kind, cin, cout, k, stride, size, _macs, wb, ab, relu, residual, signed = as_layer(layer)
    return f"{kind}:{cin}:{cout}:{k}:{stride}:{size}:{deployed_program(layer)}:{_flags(relu, residual, signed)}"


def _flags(relu, residual, signed) -> str:
    return ("s" if signed else "u") + (":relu" if relu else "") + (":res" if residual else "")


def kernel_for(layer) -> str:
    """The kernel a layer of ``SearchSpace.layer_costs`` runs on at its bits: "binary", "apot", "int8" or
    "float" (see the module docstring)."""
    kind, wb, ab = layer[0], layer[7], layer[8]
    if kind == "depthwise" or wb > 8 or ab > 8:
        return "float"
    if wb == 1 and ab == 1:
        return "binary"
    if wb <= 4 and ab <= 4:
        return "apot"
    return "int8"


def median_time_ms(fn, device: torch.device, reps: int) -> float:
    """Median wall time of ``fn`` (the CPU benchmark's timer), synchronised after each call on CUDA."""
    if device.type == "cuda":
        def timed():
            fn()
            torch.cuda.synchronize()
        return cpu_time_us(timed, reps, warmup=1) / 1e3
    return cpu_time_us(fn, reps, warmup=1) / 1e3


# APoT 4-bit level tables (DESIGN 3.3): activations k/48 (unsigned), weights k/10 with sign; any 16-entry
# integer table runs the same way, e.g. the codes of a linear 2- to 4-bit quantizer.
_APOT_ACT = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
_APOT_W = [0, 1, 2, 3, 4, 6, 8, 10, -1, -2, -3, -4, -6, -8, -10, 0]


def _kernel_call(kernel: str, cin: int, cout: int, k: int, stride: int, size: int, device: torch.device, g):
    """A zero-argument call of ``kernel`` on random inputs of the layer's shape, as the deploy engine makes it."""
    s, p, d = [stride, stride], [k // 2, k // 2], [1, 1]
    cpu = device.type == "cpu"
    if kernel == "binary":
        x = torch.randn(1, cin, size, size, generator=g).to(device)
        w = torch.randn(cout, cin, k, k, generator=g).to(device)
        xb, wb = torch.ops.cmn.pack_bits(x, "pm1"), torch.ops.cmn.pack_bits(w, "pm1")
        kw = {"prepacked": torch.ops.cmn.binary_prepack(wb, cin)} if cpu else {}
        return lambda: torch.ops.cmn.binary_conv2d(xb, wb, cin, s, p, d, "pm1", **kw)
    if kernel == "apot":
        from ..ops import pack_apot_conv_input, pack_apot_conv_weight

        xc = torch.randint(0, 16, (1, cin, size, size), generator=g, dtype=torch.uint8)
        wc = torch.randint(0, 16, (cout, cin, k, k), generator=g, dtype=torch.uint8)
        xl, wl = torch.tensor(_APOT_ACT, dtype=torch.int32), torch.tensor(_APOT_W, dtype=torch.int32)
        xp, wp = pack_apot_conv_input(xc).to(device), pack_apot_conv_weight(wc).to(device)
        kw = {"prepacked": torch.ops.cmn.int8_prepack(wl[wc.long()].to(torch.int8))} if cpu else {}
        return lambda: torch.ops.cmn.apot_conv2d(xp, xl, wp, wl, cin, s, p, d, "auto", **kw)
    x = torch.randint(0, 256, (1, cin, size, size), generator=g, dtype=torch.uint8)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    w = torch.randint(-127, 128, (cout, cin, k, k), generator=g, dtype=torch.int8).to(device)
    kw = {"prepacked": torch.ops.cmn.int8_prepack(w)} if cpu else {}
    return lambda: torch.ops.cmn.int8_conv2d(x, w, s, p, d, None, **kw)


def measure_layer(layer, device="cpu", reps: int = 15) -> tuple[float, str]:
    """(median latency in ms at batch 1, the kernel used) of one layer of ``SearchSpace.layer_costs``, on the
    kernel its bits select (``kernel_for``)."""
    kind, cin, cout, k, stride, size, _macs, wb, ab = layer[:9]
    if kind in ("call", "pool"):
        return 0.0, "none (not a kernel call)"  # the classifier is timed as the 1x1 conv on 1x1 it runs as
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    kernel = kernel_for(layer)
    if kernel == "float":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        x = torch.randn(1, cin, size, size, generator=g).to(device, dtype)
        groups = cin if kind == "depthwise" else 1
        w = torch.randn(cout, cin // groups, k, k, generator=g).to(device, dtype)
        name = f"torch conv2d {str(dtype).replace('torch.', '')}"
        with torch.no_grad():
            return median_time_ms(lambda: F.conv2d(x, w, None, stride, k // 2, 1, groups), device, reps), name
    return median_time_ms(_kernel_call(kernel, cin, cout, k, stride, size, device, g), device, reps), \
        KERNEL_NAMES[kernel]


# ---- a layer as the deploy engine runs it ------------------------------------------------------------------------
class _Pass(nn.Module):
    def forward(self, x):
        return x


class _ConvUnit(nn.Module):
    """One conv layer of the searched network in its deployed context: conv + BN (+ ReLU6) (+ the residual add
    that follows it), the layout of the extracted blocks (``supernet.SubBlock``) and the fixed convs."""

    def __init__(self, layer: Layer):
        super().__init__()
        groups = layer.cin if layer.kind == "depthwise" else 1
        mods = [nn.Conv2d(layer.cin, layer.cout, layer.k, layer.stride, layer.k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(layer.cout)]
        if layer.relu:
            mods.append(nn.ReLU6(inplace=True))
        self.conv = nn.Sequential(*mods)
        self.residual = layer.residual
        if layer.residual:  # the block input, added in the conv's epilogue (a constant operand here)
            so = (layer.size + layer.stride - 1) // layer.stride
            self.register_buffer("skip", torch.randn(1, layer.cout, so, so).contiguous(
                memory_format=torch.channels_last))

    def forward(self, x):
        out = self.conv(x)
        return self.skip + out if self.residual else out


class _PoolUnit(nn.Module):
    """The sub-network's global average pool, flatten and (eval-mode) dropout."""

    def __init__(self):
        super().__init__()
        self.pool, self.dropout = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(self.pool(x).flatten(1))


def deployed_unit(layer) -> tuple[nn.Module, torch.Tensor]:
    """(a one-layer QAT network for ``layer``, quantized as ``pairs.quantize_subnet`` quantizes that layer and
    calibrated, in eval mode; a batch-1 float input of the layer's shape, channels_last where 4-d)."""
    from ..nn.qat import quantize_model

    layer = as_layer(layer)
    g = torch.Generator().manual_seed(0)
    if layer.kind == "call":
        return _Pass().eval(), torch.randn(1, layer.cin, layer.size, layer.size, generator=g).contiguous(
            memory_format=torch.channels_last)
    if layer.kind == "pool":
        return _PoolUnit().eval(), torch.rand(1, layer.cin, layer.size, layer.size, generator=g).contiguous(
            memory_format=torch.channels_last)
    if layer.kind == "classifier":
        unit, x = nn.Sequential(nn.Linear(layer.cin, layer.cout)), torch.rand(1, layer.cin, generator=g)
    else:
        unit = _ConvUnit(layer)
        x = torch.randn(1, layer.cin, layer.size, layer.size, generator=g)
        x = (x if layer.signed else x.abs()).contiguous(memory_format=torch.channels_last)
    act = {"kind": "linear", "bits": layer.abits}
    if layer.signed:
        act["signed"] = True
    quantize_model(unit, {"weight": {"kind": "linear", "bits": layer.wbits}, "act": act})
    unit.train()
    with torch.no_grad():  # calibrates the activation clip (KL, first batch) and the BN statistics
        unit(torch.cat([x] * 4) if layer.kind == "classifier" else x)
    return unit.eval(), x


def measure_deployed(layer, device="cpu", reps: int = 15) -> tuple[float, str]:
    """(median latency in ms at batch 1, what ran) of ``layer`` as the deploy engine runs it: the
    ``deployed_unit`` converted (``cmn_ext.nn.convert``) and called through its engine, less an empty engine's
    call on the same input (that per-call work is the separate ``call`` entry, counted once per network)."""
    from ..nn import convert
    from ..nn.engine import build_engine

    layer = as_layer(layer)
    device = torch.device(device)
    unit, x = deployed_unit(layer)
    unit, x = unit.to(device), x.to(device)
    empty = build_engine(_Pass().eval()).to(device)
    with torch.no_grad():
        t_empty = median_time_ms(lambda: empty(x), device, reps)
        if layer.kind == "call":
            return t_empty, "deploy engine call"
        if layer.kind == "pool":
            engine, what = build_engine(unit), "torch avg pool"
        else:
            engine, report = convert(unit)
            kernel = report[0]["kernel"]
            what = KERNEL_NAMES[kernel] if kernel else f"float fake-quant ({report[0]['note']})"
        engine = engine.to(device)
        t = median_time_ms(lambda: engine(x), device, reps)
    return max(t - t_empty, 0.0), what


def deployed_kernel(layer) -> str | None:
    """The kernel convert gives ``layer`` under the search's linear quantizers: "int8" for a dense conv or the
    classifier with both bit widths <= 8, None (a float layer) for depthwise convs, > 8 bits, pool and call."""
    layer = as_layer(layer)
    if layer.kind in ("call", "pool", "depthwise") or layer.wbits > 8 or layer.abits > 8:
        return None
    return "int8"


def deployed_program(layer) -> str:
    """What the deploy engine runs for ``layer``: "int8" (its kernel), "fakequant" (a float conv with quantized
    weights and inputs, e.g. a depthwise conv at any bits <= 8), "float-w<b>a<b>" (a layer with a > 8-bit side,
    float on that side) or "-" (call, pool)."""
    layer = as_layer(layer)
    if layer.kind in ("call", "pool"):
        return "-"
    kernel = deployed_kernel(layer)
    if kernel:
        return kernel
    return "fakequant" if layer.wbits <= 8 and layer.abits <= 8 else f"float-w{layer.wbits}a{layer.abits}"


def measure_network(space: SearchSpace, arch: Arch, resolution: int, stem_stride: int, frame: Frame, device="cpu",
                    reps: int = 15) -> tuple[float, list]:
    """(median ms at batch 1, convert's report) of ``arch`` deployed with untrained weights: extracted from a fresh
    supernet, quantized as the search quantizes it (``pairs.quantize_subnet``), calibrated on random inputs and
    converted. The time does not depend on the weight values, so this is what the trained network of that
    architecture runs; it checks a table's prediction without a search run."""
    from ..nn import convert
    from .pairs import quantize_subnet
    from .supernet import ElasticMobileNetV2

    device = torch.device(device)
    torch.manual_seed(0)
    net = ElasticMobileNetV2(space, frame.num_classes, frame.in_channels, stem_stride, frame.last_channels)
    sub = quantize_subnet(net.extract(arch), space, arch).to(device).train()
    with torch.no_grad():
        sub(torch.randn(8, frame.in_channels, resolution, resolution, device=device))
        deploy, report = convert(sub.eval())
        x = torch.randn(1, frame.in_channels, resolution, resolution, device=device)
        return median_time_ms(lambda: deploy(x), device, reps), report


# ---- the BitFusion model ---------------------------------------------------------------------------------------
def bitbricks(w_bits: int, a_bits: int) -> int:
    """2-bit x 2-bit BitBrick products in one b_w x b_a multiply on BitFusion: ceil(b_w / 2) x ceil(b_a / 2)."""
    return math.ceil(w_bits / 2) * math.ceil(a_bits / 2)


def layer_bitfusion(layer) -> int:
    """BitBrick operations of one layer of ``SearchSpace.layer_costs``: MACs x ``bitbricks(w, a)``."""
    return layer[6] * bitbricks(layer[7], layer[8])


def bitfusion_cost(space: SearchSpace, arch: Arch, resolution: int = 32, stem_stride: int = 1) -> float:
    """BitBrick operations of the searched layers (same call as ``SearchSpace.bops``): proportional to their
    compute time and compute energy on a BitFusion array; never higher with fewer bits, and lower for each
    2-bit step down (8 -> 6 -> 4 -> 2) in any layer."""
    return float(sum(layer_bitfusion(layer) for layer in space.layer_costs(arch, resolution, stem_stride)))


MODES = {"deployed": (deployed_key, measure_deployed), "kernels": (layer_key, measure_layer)}


class CostTable:
    """Latency per layer key, measured on first use and saved to ``path`` (JSON: version, mode, device, entries
    {key: {"ms": .., "kernel": ..}}). ``mode`` "deployed" (the default): keys ``deployed_key``, measured with
    ``measure_deployed``; "kernels": keys ``layer_key``, measured with ``measure_layer``. ``measure`` replaces
    the mode's measurement (tests); either way on ``device``."""

    def __init__(self, path: str | None = None, device="cpu", measure: Callable | None = None,
                 mode: str = "deployed"):
        if mode not in MODES:
            raise ValueError(f"CostTable: 'mode' expected one of {list(MODES)}, got {mode!r}")
        self.path, self.device, self.mode = path, device_name(device), mode
        self.key, default = MODES[mode]
        self.measure = measure or (lambda layer: default(layer, device))
        self.entries: dict[str, dict] = {}
        if path and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            if data.get("device") != self.device:
                raise ValueError(f"CostTable: {path} was measured on {data.get('device')!r}, not {self.device!r}; "
                                 "rebuild it for this device (delete the file)")
            if data.get("version") == TABLE_VERSION and data.get("mode") == mode:
                self.entries = data["entries"]
            else:
                warnings.warn(f"CostTable: {path} is a version {data.get('version', 1)} "
                              f"{data.get('mode', 'kernels')!r} table, not a version {TABLE_VERSION} {mode!r} one; "
                              f"its {len(data['entries'])} entries are measured again", stacklevel=2)
        self.measured = 0

    def layer_ms(self, layer) -> float:
        key = self.key(layer)
        if key not in self.entries:
            ms, kernel = self.measure(layer)
            self.entries[key] = {"ms": float(ms), "kernel": kernel}
            self.measured += 1
        return self.entries[key]["ms"]

    def latency_ms(self, space: SearchSpace, arch: Arch, resolution: int, stem_stride: int, frame: Frame) -> float:
        """The network's predicted latency at batch 1: the sum over every layer it runs when deployed
        (``SearchSpace.deploy_layers``: the searched blocks, the fixed stem / first block / head / pool /
        classifier, and the engine call)."""
        return sum(self.layer_ms(layer) for layer in space.deploy_layers(arch, resolution, stem_stride, frame))

    def breakdown(self, space: SearchSpace, arch: Arch, resolution: int, stem_stride: int, frame: Frame) -> dict:
        """``latency_ms`` split by where the time goes (ms): the searched layers on a kernel / in float, the fixed
        layers (stem, first block, head, pool, classifier) and the engine call; "layers" counts the entries."""
        out = {"searched_on_kernels": 0.0, "searched_float": 0.0, "fixed_layers": 0.0, "engine_call": 0.0}
        layers = space.deploy_layers(arch, resolution, stem_stride, frame)
        searched = space.layer_costs(arch, resolution, stem_stride)
        start = 4  # deploy_layers: call, stem, the first block's depthwise and project, then the searched layers
        assert layers[start:start + len(searched)] == searched
        for i, layer in enumerate(layers):
            ms = self.layer_ms(layer)
            if layer.kind == "call":
                out["engine_call"] += ms
            elif start <= i < start + len(searched):
                out["searched_on_kernels" if deployed_kernel(layer) else "searched_float"] += ms
            else:
                out["fixed_layers"] += ms
        out["total"] = sum(out.values())
        out["layers"] = len(layers)
        return out

    def save(self) -> None:
        if self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            data = {"version": TABLE_VERSION, "mode": self.mode, "device": self.device, "entries": self.entries}
            write_text_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
