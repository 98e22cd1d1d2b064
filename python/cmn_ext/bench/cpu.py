"""CPU benchmark: every cmn kernel next to the PyTorch kernel it replaces, on the same shape, in one run.

Each case returns a record with the fields ``op, backend, shape, time_us, baseline, baseline_time_us, speedup``
(speedup = baseline time / our time; above 1 means the cmn kernel is faster).
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class Case:
    op: str
    backend: str
    shape: str
    make: Callable[[], tuple[Callable[[], object], dict[str, Callable[[], object]]]]


def _time_us(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


# --------------------------------------------------------------------------------------------------------------
# Case builders: each returns (our_fn, {baseline_name: baseline_fn}).
# --------------------------------------------------------------------------------------------------------------
def _binary_conv(n, c, k, hw, ks, pad, encoding):
    def make():
        x = torch.randn(n, c, hw, hw) if encoding == "pm1" else torch.rand(n, c, hw, hw)
        w = torch.randn(k, c, ks, ks)
        xb = torch.ops.cmn.pack_bits(x, encoding)
        wb = torch.ops.cmn.pack_bits(w, "pm1")
        ours = lambda: torch.ops.cmn.binary_conv2d(xb, wb, c, [1, 1], [pad, pad], [1, 1], encoding)
        return ours, {"F.conv2d fp32": lambda: F.conv2d(x, w, None, 1, pad)}

    return Case("binary_conv2d", f"cpu ({encoding})", f"N={n} C={c} K={k} {hw}x{hw} {ks}x{ks} pad={pad}", make)


def _int8_conv(n, c, k, hw, ks, pad, kept_fraction):
    def make():
        x = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8)
        w = torch.randint(-127, 128, (k, c, ks, ks), dtype=torch.int8)
        keep = torch.zeros(k, dtype=torch.bool)
        keep[: int(round(k * kept_fraction))] = True
        w_kept = w[keep].contiguous()
        xf, wf = x.float(), w.float()
        ours = lambda: torch.ops.cmn.int8_conv2d(x, w_kept, [1, 1], [pad, pad], [1, 1], keep)
        return ours, {"F.conv2d fp32 (dense)": lambda: F.conv2d(xf, wf, None, 1, pad)}

    return Case("int8_conv2d", f"cpu (keep {int(kept_fraction * 100)}%)",
                f"N={n} C={c} K={k} {hw}x{hw} {ks}x{ks} pad={pad} uint8 x int8", make)


_ACT_LEVELS = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]  # APoT 4-bit activations (x/48)
_W_LEVELS = [0, 1, 2, 3, 4, 6, 8, 10, -1, -2, -3, -4, -6, -8, -10, 0]  # APoT 4-bit weights (x/10), signed


def _apot_matmul(m, n, k, method, with_int_mm=False):
    def make():
        a_codes = torch.randint(0, 16, (m, k), dtype=torch.uint8)
        b_codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
        al = torch.tensor(_ACT_LEVELS, dtype=torch.int32)
        bl = torch.tensor(_W_LEVELS, dtype=torch.int32)
        ap, bp = torch.ops.cmn.pack_int4(a_codes), torch.ops.cmn.pack_int4(b_codes)
        af, bf = al.float()[a_codes.long()], bl.float()[b_codes.long()]
        ours = lambda: torch.ops.cmn.apot_matmul(ap, al, bp, bl, k, method)
        base = {"matmul fp32": lambda: af @ bf.T}
        if with_int_mm:
            a8, b8t = af.to(torch.int8), bf.to(torch.int8).T.contiguous()
            base["torch._int_mm int8"] = lambda: torch._int_mm(a8, b8t)
        return ours, base

    return Case("apot_matmul", f"cpu ({method})", f"M={m} N={n} K={k} 4-bit", make)


FULL_CASES = [
    _binary_conv(16, 256, 256, 14, 3, 1, "pm1"),
    _binary_conv(16, 256, 256, 14, 3, 1, "01"),
    _binary_conv(16, 64, 64, 56, 3, 1, "pm1"),
    _binary_conv(16, 16, 16, 32, 3, 1, "pm1"),
    _int8_conv(16, 256, 256, 14, 3, 1, 1.0),
    _int8_conv(16, 256, 256, 14, 3, 1, 0.5),
    _apot_matmul(1, 4096, 4096, "int8"),
    _apot_matmul(1, 4096, 4096, "shift_add"),
    _apot_matmul(16, 4096, 4096, "int8"),
    _apot_matmul(32, 4096, 4096, "int8", with_int_mm=True),
    _apot_matmul(128, 4096, 4096, "int8"),
]

QUICK_CASES = [
    _binary_conv(4, 256, 256, 14, 3, 1, "pm1"),
    _int8_conv(4, 256, 256, 14, 3, 1, 0.5),
    _apot_matmul(1, 2048, 2048, "int8"),
]


def run(cases, repeats: int = 5, progress: bool = True) -> list[dict]:
    rows = []
    for case in cases:
        ours, baselines = case.make()
        t_ours = _time_us(ours, repeats)
        for name, fn in baselines.items():
            t_base = _time_us(fn, max(1, repeats if "_int_mm" not in name else 1), warmup=1)
            rows.append({
                "op": case.op, "backend": case.backend, "shape": case.shape, "time_us": round(t_ours, 1),
                "baseline": name, "baseline_time_us": round(t_base, 1), "speedup": round(t_base / t_ours, 2),
            })
            if progress:
                r = rows[-1]
                print(f"  {r['op']:<14} {r['backend']:<18} {r['shape']:<48} {r['time_us']:>11.1f} us  vs "
                      f"{r['baseline']:<22} {r['baseline_time_us']:>11.1f} us  x{r['speedup']:.2f}", flush=True)
    return rows


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what platform knows elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    return {"device": f"cpu: {cpu_model()}", "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| op | backend | shape | cmn (us) | baseline | baseline (us) | speedup |",
             "|---|---|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['backend']} | {r['shape']} | {r['time_us']:.1f} | {r['baseline']} | "
                     f"{r['baseline_time_us']:.1f} | x{r['speedup']:.2f} |")
    return "\n".join(lines)
