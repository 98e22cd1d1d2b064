"""apot kernels (CUDA C++ and Triton) against cuDNN / cuBLAS on the GPU, side by side in one run.

    python benchmarks/bench_apot.py [--out DIR] [--dry-run]

Writes <out>/<device>_apot.json and .md; shapes, baselines and fields: cmn_ext.bench.gpu.
"""

import cmn_ext  # noqa: F401  (registers torch.ops.cmn)
from cmn_ext.bench import gpu

if __name__ == "__main__":
    gpu.main("apot")
