"""Hardware cost of a searched architecture: a lookup table of per-layer latency keyed by the layer's shape
and bits (APQ's latency/energy table), built by MEASURING the project's own kernels on the current device,
one entry the first time a key is needed, kept in a JSON file that can be rebuilt per device.

Kernels measured (batch 1, the deploy setting): a dense 1x1 conv with bits <= 8 runs on ``cmn.int8_conv2d``
(4-, 6- and 8-bit linear codes all fit int8, so the bits do not change its time); a depthwise conv has no
low-bit kernel here and runs as PyTorch's float conv (fp16 cuDNN on a GPU, fp32 on the CPU). The BOPs proxy
(``SearchSpace.bops``) is the objective when nothing is measured."""

from __future__ import annotations

import json
import os
from typing import Callable

import torch
import torch.nn.functional as F

from ..bench.cpu import _time_us as cpu_time_us
from ..files import write_text_atomic
from .space import Arch, SearchSpace


def layer_key(layer) -> str:
    kind, cin, cout, k, stride, size, _macs, wb, ab = layer
    return f"{kind}:{cin}:{cout}:{k}:{stride}:{size}:w{wb}:a{ab}"


def median_time_ms(fn, device: torch.device, reps: int) -> float:
    """Median wall time of ``fn`` (the CPU benchmark's timer), synchronised after each call on CUDA."""
    if device.type == "cuda":
        def timed():
            fn()
            torch.cuda.synchronize()
        return cpu_time_us(timed, reps, warmup=1) / 1e3
    return cpu_time_us(fn, reps, warmup=1) / 1e3


def measure_layer(layer, device="cpu", reps: int = 15) -> tuple[float, str]:
    """(median latency in ms at batch 1, the kernel used) of one layer of ``SearchSpace.layer_costs``."""
    kind, cin, cout, k, stride, size, _macs, wb, ab = layer
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    if kind == "depthwise" or wb > 8 or ab > 8:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        x = torch.randn(1, cin, size, size, generator=g).to(device, dtype)
        groups = cin if kind == "depthwise" else 1
        w = torch.randn(cout, cin // groups, k, k, generator=g).to(device, dtype)
        name = f"torch conv2d {str(dtype).replace('torch.', '')}"
        with torch.no_grad():
            return median_time_ms(lambda: F.conv2d(x, w, None, stride, k // 2, 1, groups), device, reps), name
    x = torch.randint(-2 ** (ab - 1), 2 ** (ab - 1), (1, cin, size, size), generator=g, dtype=torch.int8).to(device)
    w = torch.randint(-2 ** (wb - 1) + 1, 2 ** (wb - 1), (cout, cin, k, k), generator=g, dtype=torch.int8).to(device)
    s, p = [stride, stride], [k // 2, k // 2]
    return median_time_ms(lambda: torch.ops.cmn.int8_conv2d(x, w, s, p, [1, 1]), device, reps), "cmn.int8_conv2d"


class CostTable:
    """Latency per layer key, measured on first use with ``measure`` (default: ``measure_layer`` on ``device``)
    and saved to ``path`` (JSON: device, entries {key: {"ms": .., "kernel": ..}})."""

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
            self.entries = data["entries"]
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
            write_text_atomic(self.path, json.dumps({"device": self.device, "entries": self.entries}, indent=1,
                                                    sort_keys=True))


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
