"""CPU benchmark of every cmn kernel against PyTorch's CPU kernels, side by side in one run.

    python benchmarks/bench_cpu.py [--quick] [--repeats 5] [--out benchmarks/results]

Writes <out>/cpu.json (environment + one record per op/backend/shape/baseline) and <out>/cpu.md.
"""

import argparse
import json
import os

import torch

import cmn_ext  # noqa: F401  (registers torch.ops.cmn)
from cmn_ext.bench import cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    env = cpu.environment()
    print(f"{env['device']}, {env['threads']} threads, torch {env['torch']}")
    rows = cpu.run(cpu.QUICK_CASES if args.quick else cpu.FULL_CASES, repeats=args.repeats)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cpu.json"), "w") as f:
        json.dump({"environment": env, "results": rows}, f, indent=2)
    table = cpu.markdown_table(rows)
    with open(os.path.join(args.out, "cpu.md"), "w") as f:
        f.write(f"Device: {env['device']} ({env['threads']} threads), torch {env['torch']}, "
                f"Python {env['python']}\n\n{table}\n")
    print("\n" + table)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
