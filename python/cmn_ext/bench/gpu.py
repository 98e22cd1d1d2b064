"""GPU benchmark of the cmn kernels (CUDA C++ and Triton) against cuDNN / cuBLAS, side by side in one run.

Families (issue 6 / DESIGN 8): ``binary_conv`` and ``int8_conv`` on the four ResNet-18 stages (N=256, 3x3),
the CIFAR ResNet-20 stages (N=1024) and batch-1 latency of the same layers; ``apot`` matmul 4096x4096 at
M in {1, 16, 128, 4096} plus APoT conv on the ResNet-18 stages. Baselines, measured in the same process:
cuDNN ``F.conv2d`` fp16 and fp32/TF32 (``cudnn.benchmark = True``), cuBLAS fp16 ``torch.matmul`` and int8
``torch._int_mm``. Each record: op, backend, shape, time_us, tops, baseline, baseline_time_us, speedup
(baseline time / ours: above 1 means cmn is faster).

Before a backend is timed, its result on the first two images (rows) of the case is compared with the CPU
kernel's, bit for bit; the record's ``exact`` field says whether it matched, so no speed is reported for a kernel
that computes something else without it showing.

``dry_run=True`` runs tiny shapes on the CPU with the CPU kernels and an fp32 baseline: it checks the
harness, not speed.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .cpu import _time_us as cpu_time_us

RESNET18 = [(256, 64, 56), (256, 128, 28), (256, 256, 14), (256, 512, 7)]  # (N, C=K, H=W), 3x3, pad 1
RESNET20 = [(1024, 16, 32), (1024, 32, 16), (1024, 64, 8)]
LATENCY = [(1, c, hw) for _, c, hw in RESNET18 + RESNET20]
MATMUL_M = [1, 16, 128, 4096]
DRY_CONV = [(2, 40, 6)]
DRY_M = [1, 5]


@dataclass
class Backend:
    op: Callable[..., torch.Tensor]          # torch.ops.cmn.<name> or <name>_triton
    args: tuple
    kwargs: dict
    env: dict                                # environment variables the path needs (set outside the timed call)

    def __call__(self):
        return self.op(*self.args, **self.kwargs)

    def exact(self, cpu_op: Callable[..., torch.Tensor]) -> bool:
        """This backend's result on the first two images (rows) of args[0] equals the CPU kernel's, bit for bit."""
        small = (self.args[0][:2],) + self.args[1:]
        with _environ(self.env):
            got = self.op(*small, **self.kwargs).cpu()
        to_cpu = lambda v: v.cpu() if isinstance(v, torch.Tensor) else v  # noqa: E731
        want = cpu_op(*map(to_cpu, small), **{k: to_cpu(v) for k, v in self.kwargs.items()})
        return got.dtype == want.dtype and torch.equal(got, want)


@dataclass
class Case:
    op: str
    shape: str
    ops: float                               # arithmetic operations (2 per MAC) for TOPS
    ours: dict[str, Backend]
    baselines: dict[str, Callable[[], object]]


class _environ:
    """Set environment variables for a block, then restore them."""

    def __init__(self, env: dict):
        self.env, self.saved = env, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def time_us(fn: Callable[[], object], device: str, reps: int = 20) -> float:
    """Median time of ``fn``: triton.testing.do_bench on CUDA (warm-up, L2 flush, CUDA events), wall clock on CPU."""
    if device == "cuda":
        from triton.testing import do_bench

        return 1000.0 * do_bench(fn, warmup=25, rep=100, return_mode="median")
    return cpu_time_us(fn, max(1, reps // 4), warmup=1)


def _conv_baselines(x_float, w_float, device):
    out = {}
    if device == "cuda":
        xh, wh = x_float.half(), w_float.half()
        out["cuDNN fp16"] = lambda: F.conv2d(xh, wh, padding=1)
        out["cuDNN fp32/TF32"] = lambda: F.conv2d(x_float, w_float, padding=1)  # TF32 switched on in run()
    else:
        out["torch fp32"] = lambda: F.conv2d(x_float, w_float, padding=1)
    return out


def _backends(op_name, args, kwargs, env_var, paths, device, triton_ok):
    """cmn backends of one op: the CUDA op under each path of ``env_var`` (set by ``run`` around the timing,
    not inside the timed call), and the Triton op."""
    op = getattr(torch.ops.cmn, op_name)
    out = {}
    for path in paths:
        out[f"{device}:{path}" if path else device] = Backend(op, args, kwargs, {env_var: path} if env_var else {})
    if triton_ok:
        out["triton"] = Backend(getattr(torch.ops.cmn, op_name + "_triton"), args, kwargs, {})
    return out


def binary_conv_cases(device: str, dry_run: bool, triton_ok: bool) -> list[Case]:
    shapes = DRY_CONV if dry_run else RESNET18 + RESNET20 + LATENCY
    cases = []
    for n, c, hw in shapes:
        x = torch.randn(n, c, hw, hw, device=device)
        w = torch.randn(c, c, 3, 3, device=device)
        xb, wb = torch.ops.cmn.pack_bits(x, "01"), torch.ops.cmn.pack_bits(w, "pm1")
        paths = [""] if device == "cpu" else ["mma", "popc"]
        ours = _backends("binary_conv2d", (xb, wb, c, [1, 1], [1, 1], [1, 1], "01"), {}, "CMN_BINARY_CONV_PATH",
                         paths, device, triton_ok)
        cases.append(Case("binary_conv2d", f"N={n} C=K={c} {hw}x{hw} 3x3", 2.0 * n * c * c * hw * hw * 9, ours,
                          _conv_baselines(x, w, device)))
    return cases


def int8_conv_cases(device: str, dry_run: bool, triton_ok: bool) -> list[Case]:
    shapes = DRY_CONV if dry_run else RESNET18 + RESNET20 + LATENCY
    cases = []
    for n, c, hw in shapes:
        x = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, device=device)
        w = torch.randint(-128, 128, (c, c, 3, 3), dtype=torch.int8, device=device)
        base = _conv_baselines(x.float(), w.float(), device)
        for kept in (1.0, 0.5):
            keep = torch.arange(c, device=device) < int(c * kept)
            wk = w[keep].contiguous()
            args = (x, wk, [1, 1], [1, 1], [1, 1], keep)
            ours = _backends("int8_conv2d", args, {"compact": True}, None, [""], device, triton_ok)
            cases.append(Case("int8_conv2d", f"N={n} C=K={c} {hw}x{hw} 3x3 kept={int(kept * 100)}%",
                              2.0 * n * c * int(c * kept) * hw * hw * 9, ours, base))
    return cases


def apot_cases(device: str, dry_run: bool, triton_ok: bool) -> list[Case]:
    # the papers' 4-bit grids as integers (activations k/48, weights k/10; DESIGN 3.3)
    act = torch.tensor([0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48], dtype=torch.int32, device=device)
    wgt = torch.tensor([0, 1, 2, 3, 4, 6, 8, 10, -1, -2, -3, -4, -6, -8, -10, 0], dtype=torch.int32, device=device)
    k = 64 if dry_run else 4096
    cases = []
    for m in DRY_M if dry_run else MATMUL_M:
        a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (m, k), dtype=torch.uint8, device=device))
        b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (k, k), dtype=torch.uint8, device=device))
        paths = [""] if device == "cpu" else (["gemv", "mma"] if m <= 128 else ["mma"])
        ours = _backends("apot_matmul", (a, act, b, wgt, k, "int8"), {}, "CMN_APOT_PATH", paths, device, triton_ok)
        if device == "cuda" and m <= 16:
            ours["cuda:shift_add"] = Backend(torch.ops.cmn.apot_matmul, (a, act, b, wgt, k, "shift_add"), {}, {})
        base = {}
        if device == "cuda":
            ah, bh = torch.randn(m, k, device=device, dtype=torch.half), torch.randn(k, k, device=device, dtype=torch.half)
            base["cuBLAS fp16"] = lambda ah=ah, bh=bh: torch.matmul(ah, bh.t())
            if m > 16:  # torch._int_mm needs M > 16
                a8, b8 = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=device), \
                    torch.randint(-128, 128, (k, k), dtype=torch.int8, device=device)
                base["cuBLAS int8 (_int_mm)"] = lambda a8=a8, b8=b8: torch._int_mm(a8, b8.t())
        else:
            af, bf = torch.randn(m, k), torch.randn(k, k)
            base["torch fp32"] = lambda af=af, bf=bf: torch.matmul(af, bf.t())
        cases.append(Case("apot_matmul", f"M={m} N=K={k}", 2.0 * m * k * k, ours, base))
    for n, c, hw in (DRY_CONV if dry_run else RESNET18):
        codes_x = torch.randint(0, 16, (n, hw, hw, c), dtype=torch.uint8, device=device)
        codes_w = torch.randint(0, 16, (c, 3, 3, c), dtype=torch.uint8, device=device)
        xp, wp = torch.ops.cmn.pack_int4(codes_x), torch.ops.cmn.pack_int4(codes_w)
        ours = _backends("apot_conv2d", (xp, act, wp, wgt, c, [1, 1], [1, 1], [1, 1], "int8"), {}, None, [""], device,
                         triton_ok)
        base = _conv_baselines(torch.randn(n, c, hw, hw, device=device), torch.randn(c, c, 3, 3, device=device), device)
        cases.append(Case("apot_conv2d", f"N={n} C=K={c} {hw}x{hw} 3x3", 2.0 * n * c * c * hw * hw * 9, ours, base))
    return cases


FAMILIES = {"binary_conv": binary_conv_cases, "int8_conv": int8_conv_cases, "apot": apot_cases}


def run(family: str, *, dry_run: bool = False, progress: bool = True) -> list[dict]:
    device = "cpu" if dry_run or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not dry_run:
        raise RuntimeError("bench gpu: no CUDA device; use --dry-run to check the harness on the CPU")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True  # the fp32 baseline is cuDNN's fastest fp32 path, TF32
    triton_ok = device == "cuda" and hasattr(torch.ops.cmn, "binary_conv2d_triton")
    rows = []
    for case in FAMILIES[family](device, dry_run, triton_ok):
        base_times = {}
        for name, fn in case.baselines.items():
            try:
                base_times[name] = time_us(fn, device)
            except RuntimeError as e:  # a baseline that refuses the shape is reported, not faked
                print(f"  baseline {name} unavailable for {case.shape}: {e}", flush=True)
        cpu_op = getattr(torch.ops.cmn, case.op)
        for backend, run_it in case.ours.items():
            try:
                exact = run_it.exact(cpu_op)
                with _environ(run_it.env):
                    t = time_us(run_it, device)
            except Exception as e:  # a backend that fails on a shape is reported, and the run goes on
                print(f"  {case.op} {backend} failed on {case.shape}: {type(e).__name__}: {e}", flush=True)
                continue
            for name, tb in base_times.items():
                rows.append({"op": case.op, "backend": backend, "shape": case.shape, "time_us": round(t, 2),
                             "tops": round(case.ops / t / 1e6, 2), "baseline": name,
                             "baseline_time_us": round(tb, 2), "speedup": round(tb / t, 3), "exact": exact})
                if progress:
                    r = rows[-1]
                    print(f"  {r['op']:<13} {backend:<14} {case.shape:<36} {t:>10.1f} us {r['tops']:>7.1f} TOPS  vs "
                          f"{name:<22} {tb:>10.1f} us  x{r['speedup']:.2f}{'' if exact else '  NOT EXACT'}",
                          flush=True)
    return rows


def environment() -> dict:
    import importlib.util

    env = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda}
    if importlib.util.find_spec("triton") is not None:
        import triton

        env["triton"] = triton.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}")
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = "unknown"
    else:
        env["device"] = "cpu (dry run)"
    return env


def device_slug(env: dict) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in env["device"].lower()).strip("_")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| op | backend | shape | cmn (us) | TOPS | baseline | baseline (us) | speedup | exact |",
             "|---|---|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['backend']} | {r['shape']} | {r['time_us']:.1f} | {r['tops']:.1f} | "
                     f"{r['baseline']} | {r['baseline_time_us']:.1f} | x{r['speedup']:.2f} | "
                     f"{'yes' if r.get('exact', True) else 'NO'} |")
    return "\n".join(lines)


def write(out_dir: str, env: dict, rows: list[dict], name: str | None = None) -> str:
    """<out_dir>/<name or device>.json (environment + records) and .md; returns the JSON path."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name or device_slug(env))
    with open(base + ".json", "w") as f:
        json.dump({"environment": env, "results": rows}, f, indent=2)
    head = ", ".join(f"{k} {v}" for k, v in env.items())
    with open(base + ".md", "w") as f:
        f.write(f"{head}\n\n{markdown_table(rows)}\n")
    return base + ".json"


def combine_parts(out_dir: str, parts: list[str]) -> str:
    """Merge per-family result files into one <device>.json / .md."""
    env, rows = None, []
    for p in parts:
        with open(p) as f:
            d = json.load(f)
        env = env or d["environment"]
        rows += d["results"]
    return write(out_dir, env, rows)


def main(family: str, argv=None) -> str:
    """Command line of benchmarks/bench_<family>.py: run one family, write <out>/<device>_<family>.{json,md}."""
    import argparse

    parser = argparse.ArgumentParser(description=f"{family} kernels (CUDA C++ and Triton) against cuDNN / cuBLAS "
                                                 "on the GPU, side by side in one run")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the harness only")
    args = parser.parse_args(argv)
    env = environment()
    print(", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    path = write(args.out, env, run(family, dry_run=args.dry_run), f"{device_slug(env)}_{family}")
    print(path)
    return path
