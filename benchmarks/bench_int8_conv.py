"""int8_conv kernels (CUDA C++ and Triton) against cuDNN / cuBLAS on the GPU, side by side in one run.

    python benchmarks/bench_int8_conv.py [--out DIR] [--dry-run]

Writes <out>/<device>_int8_conv.json and .md (see cmn_ext.bench.gpu for shapes, baselines and fields).
--dry-run checks the harness on the CPU with tiny shapes (no timing value).
"""

import argparse
import os

import cmn_ext  # noqa: F401  (registers torch.ops.cmn)
from cmn_ext.bench import gpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the harness only")
    args = parser.parse_args()
    env = gpu.environment()
    print(", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    rows = gpu.run("int8_conv", dry_run=args.dry_run)
    print(gpu.write(args.out, env, rows, f"{gpu.device_slug(env)}_int8_conv"))


if __name__ == "__main__":
    main()
