"""Where the time of one GPU benchmark case goes: the kernels each call launches (torch.profiler, CUDA time per
call) against the call's wall time, so host work and synchronisations show as the difference.

    python benchmarks/profile_gpu.py FAMILY BACKEND SHAPE_SUBSTRING [...]   # e.g. apot cuda:gemv "M=1 "

Cases, backends and shapes: cmn_ext.bench.gpu (the same inputs the benchmark times).
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import cmn_ext  # noqa: F401  (registers torch.ops.cmn)
from cmn_ext.bench import gpu


def profile_case(case: gpu.Case, backend: str, calls: int = 20) -> None:
    run_it = case.ours[backend]
    with gpu._environ(run_it.env):
        for _ in range(3):
            run_it()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            run_it()
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t0) / calls * 1e6
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                run_it()
            torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.self_device_time_total for e in kernels) / calls
    print(f"== {case.op} {backend} {case.shape}: wall {wall_us:.1f} us/call, kernels {gpu_us:.1f} us/call "
          f"(host and syncs {wall_us - gpu_us:.1f} us)")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:8]:
        print(f"   {e.self_device_time_total / calls:9.1f} us  x{e.count / calls:.0f}  {e.key[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("picks", nargs="+", help="FAMILY BACKEND SHAPE_SUBSTRING, repeated")
    args = parser.parse_args()
    if len(args.picks) % 3:
        parser.error(f"picks: expected triples FAMILY BACKEND SHAPE_SUBSTRING, got {len(args.picks)} words")
    triton_ok = hasattr(torch.ops.cmn, "binary_conv2d_triton")
    cases = {}
    for i in range(0, len(args.picks), 3):
        family, backend, shape = args.picks[i:i + 3]
        if family not in cases:
            cases[family] = gpu.FAMILIES[family]("cuda", False, triton_ok)
        hits = [c for c in cases[family] if shape in c.shape + " " and backend in c.ours]
        if not hits:
            print(f"no {family} case with backend {backend!r} and shape containing {shape!r}")
        for c in hits:
            profile_case(c, backend)


if __name__ == "__main__":
    main()
