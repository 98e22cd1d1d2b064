"""Benchmarks of the cmn kernels against PyTorch baselines, measured side by side in one run."""
