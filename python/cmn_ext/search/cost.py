"""Hardware cost of a searched architecture, two ways; both depend on each layer's bits.

1. Measured (APQ's latency lookup table): per-layer latency keyed by the layer's shape AND its weight /
   activation bits, built by MEASURING the project's kernels on the current device at batch 1, one entry the
   first time a key is needed, kept in a JSON file that is rebuilt per device. Each layer is timed on the
   kernel its bits select (``kernel_for``), the call the deploy engine makes (``nn.engine``):
       1 / 1 bit                 ``cmn.binary_conv2d``  on packed sign bits (32 channels per word)
       both <= 4 bits            ``cmn.apot_conv2d``    on nibble-packed 4-bit codes + 16-entry level tables
       both <= 8 bits            ``cmn.int8_conv2d``    on int8 / uint8 codes (5 to 8 bits all run here)
       depthwise, or > 8 bits    PyTorch's float conv   (fp16 on a GPU, fp32 on the CPU): no low-bit grouped
                                                         kernel exists, so the bits of a depthwise layer do not
                                                         change its measured time
   On the CPU the engine's weight layouts (``prepacked``) are passed, as the engine does. Whether fewer bits
   are faster is what the table measures, not an assumption (the tests assert the keys and kernels, never
   timings).
2. Modelled (BitFusion, the accelerator APQ reports on, Sharma et al. ISCA 2018): a b_w x b_a multiply is
   decomposed into ceil(b_w / 2) x ceil(b_a / 2) products of 2-bit "BitBricks", the units the array has a
   fixed number of, so compute time and energy scale with MACs x bricks (``bitfusion_cost``). It rewards each
   2-bit step down, in every layer kind, on any machine; fp32 counts as 16 x 16 bricks. (BitFusion's fabric
   fuses bricks in powers of two, so a real array runs a 6-bit operand at the 8-bit rate; the model counts the
   bricks in use.)
The plain BOPs proxy (``SearchSpace.bops``, MACs x b_w x b_a) remains the third objective.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from ..bench.cpu import _time_us as cpu_time_us
from ..files import write_text_atomic
from .space import Arch, SearchSpace

# Version 2: each bitwidth on its own kernel (``kernel_for``). Version 1 timed every <= 8-bit layer on the int8
# kernel; its entries are dropped on load and measured again.
TABLE_VERSION = 2

KERNEL_NAMES = {"binary": "cmn.binary_conv2d", "apot": "cmn.apot_conv2d", "int8": "cmn.int8_conv2d"}


def layer_key(layer) -> str:
    kind, cin, cout, k, stride, size, _macs, wb, ab = layer
    return f"{kind}:{cin}:{cout}:{k}:{stride}:{size}:w{wb}:a{ab}"


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
    kind, cin, cout, k, stride, size, _macs, wb, ab = layer
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


class CostTable:
    """Latency per layer key (shape and bits, ``layer_key``), measured on first use with ``measure`` (default:
    ``measure_layer`` on ``device``) and saved to ``path`` (JSON: version, device, entries {key: {"ms": ..,
    "kernel": ..}})."""

    def __init__(self, path: str | None = None, device="cpu", measure: Callable | None = None):
        self.path, self.device = path, device_name(device)
        self.measure = measure or (lambda layer: measure_layer(layer, device))
        self.entries: dict[str, dict] = {}
        if path and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            if data.get("device") != self.device:
                raise ValueError(f"CostTable: {path} was measured on {data.get('device')!r}, not {self.device!r}; "
                                 "rebuild it for this device (delete the file)")
            if data.get("version") == TABLE_VERSION:
                self.entries = data["entries"]
            else:
                warnings.warn(f"CostTable: {path} is a version {data.get('version', 1)} table (every <= 8-bit layer "
                              f"timed on the int8 kernel); its {len(data['entries'])} entries are measured again",
                              stacklevel=2)
        self.measured = 0

    def layer_ms(self, layer) -> float:
        key = layer_key(layer)
        if key not in self.entries:
            ms, kernel = self.measure(layer)
            self.entries[key] = {"ms": float(ms), "kernel": kernel}
            self.measured += 1
        return self.entries[key]["ms"]

    def latency_ms(self, space: SearchSpace, arch: Arch, resolution: int, stem_stride: int = 1) -> float:
        """Sum of the searched layers' table latencies (the fixed stem and head add the same to every arch)."""
        return sum(self.layer_ms(layer) for layer in space.layer_costs(arch, resolution, stem_stride))

    def save(self) -> None:
        if self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            data = {"version": TABLE_VERSION, "device": self.device, "entries": self.entries}
            write_text_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
