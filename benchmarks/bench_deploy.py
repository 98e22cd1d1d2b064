"""End-to-end deploy benchmark: compressed ResNet-20s on the deploy engine against torch fp32 and ONNX Runtime,
side by side in one run (see cmn_ext.bench.deploy). Writes benchmarks/results/deploy_cpu.{json,md} (or
deploy_<gpu>.{json,md} with --device cuda, against cuDNN fp16 channels_last).

    python benchmarks/bench_deploy.py                       # random weights and inputs
    python benchmarks/bench_deploy.py --weights ../shared/weights/resnet20-12fca82f.th \
        --data imagefolder:../shared/data/cifar10-jpeg.tar.gz
"""

import argparse
import os
import sys

from cmn_ext.bench import deploy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="pretrained CIFAR ResNet-20 checkpoint (else random init)")
    p.add_argument("--data", help="dataset spec for calibration and agreement, e.g. imagefolder:<cifar10 root>")
    p.add_argument("--batches", default="256,1", help="comma-separated batch sizes (default 256,1)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (batch 1: 4x as many)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime even when it is installed")
    p.add_argument("--device", default="cpu", help="where the engines and the torch baselines run (cpu or cuda)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    a = p.parse_args(argv)
    results = deploy.run(a.weights, a.data, [int(b) for b in a.batches.split(",")], a.rounds, onnx=not a.no_onnx,
                         log=lambda m: print(m, file=sys.stderr, flush=True), device=a.device)
    print(deploy.markdown(results))
    paths = deploy.save(results, a.out)
    print("wrote", *paths, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
