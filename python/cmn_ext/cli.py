"""The ``cmn`` command line."""

import argparse
import json
import sys


def _cmd_info(args) -> int:
    import cmn_ext

    info = cmn_ext.build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"cmn_ext {info['version']}  (torch {info['torch']}, built against {info['built_with_torch']})")
        print(f"  compiler: {info['compiler']}")
        print(f"  CUDA sources compiled: {'yes' if info['cuda_built'] else 'no'};  "
              f"CUDA device available: {'yes' if info['cuda_available'] else 'no'}")
        print("  ops (backends with a kernel):")
        for name, keys in info["ops"].items():
            print(f"    torch.ops.cmn.{name:<14} {', '.join(keys) or '-'}")
    if args.bench:
        from .bench import cpu as bench_cpu

        env = bench_cpu.environment()
        print(f"\nQuick CPU benchmark ({env['device']}, {env['threads']} threads): cmn kernel vs PyTorch, same shape")
        rows = bench_cpu.run(bench_cpu.QUICK_CASES, repeats=args.repeats, progress=False)
        print(bench_cpu.markdown_table(rows))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cmn", description="cmn_ext: compressed networks on real low-bit kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print how the extension was built and which op backends exist")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--bench", action="store_true", help="also run a quick CPU benchmark against PyTorch")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per case (median is reported)")
    p.set_defaults(func=_cmd_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
