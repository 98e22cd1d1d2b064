"""(architecture, accuracy) pairs for the predictors: a sub-network is extracted from the supernet, quantized
as its policy says (per-layer linear quantizers, then a short quantization-aware fine-tune), its batch norms
re-estimated, and evaluated on the validation split.

Collection is resumable and parallel: pair i is always the same architecture (drawn from ``seed`` and i), a
worker ``shard = (rank, world)`` measures the indices i with i % world == rank and appends one JSON line per
pair to its own file; finished indices are skipped when it starts again."""

from __future__ import annotations

import glob
import os
import random

import torch
import torch.nn.functional as F

from ..files import append_jsonl, read_jsonl
from ..nn.qat import quantize_model
from ..train.bn import recalibrate_bn
from ..train.loop import evaluate
from .space import LAYERS_PER_BLOCK, Arch, SearchSpace

_LAYER_SUFFIX = ("conv.0.0", "conv.1.0", "conv.2.0")  # expand, depthwise, project of an extracted block


def quantize_subnet(subnet: torch.nn.Module, space: SearchSpace, arch: Arch) -> torch.nn.Module:
    """Apply ``arch``'s per-layer bits to an extracted sub-network (in place): the searched blocks take linear
    quantizers with the arch's bits (per-channel weights, KL-clipped activations; a block's input is signed
    because of the residual sums, the depthwise and project inputs follow ReLU6); the fixed stem, first block,
    head and classifier are 8-bit."""
    if not arch.quantized:
        raise ValueError("quantize_subnet: the architecture has no quantization policy (wbits/abits are None)")
    layers, b = {}, 0
    for i, (s, j, *_rest) in enumerate(space.block_slots()):
        if j >= arch.depths[s]:
            continue
        for layer, suffix in enumerate(_LAYER_SUFFIX):
            layers[f"blocks.{b}.{suffix}"] = {
                "weight": {"kind": "linear", "bits": arch.wbits[i][layer]},
                "act": {"kind": "linear", "bits": arch.abits[i][layer], "signed": layer == 0}}
        b += 1
    assert b == len(subnet.blocks) and LAYERS_PER_BLOCK == len(_LAYER_SUFFIX)
    spec = {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "linear", "bits": 8, "signed": True},
            "first": "8bit", "last": "8bit", "layers": layers}
    return quantize_model(subnet, spec)


def finetune(model: torch.nn.Module, loader, steps: int, lr: float, device) -> None:
    """A few SGD steps (quantization-aware when the model is quantized; also calibrates activation clips)."""
    if steps <= 0:
        return
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    model.eval()


def measure(supernet, arch: Arch, calib_loader, val_set, *, calib_batches: int = 20, finetune_steps: int = 0,
            lr: float = 0.005, device="cpu", batch_size: int = 256) -> float:
    """Validation top-1 of ``arch``: extracted, quantized and fine-tuned if it has a policy, BN re-estimated."""
    sub = supernet.extract(arch)
    if arch.quantized:
        quantize_subnet(sub, supernet.space, arch)
        finetune(sub, calib_loader, finetune_steps, lr, device)
    recalibrate_bn(sub, calib_loader, calib_batches, device)
    return evaluate(sub, val_set, batch_size=batch_size, device=device)["top1"]


def arch_for_index(space: SearchSpace, seed: int, i: int, quantized: bool) -> Arch:
    return space.sample(random.Random(seed * 1_000_003 + i), quantized)


def collect(supernet, out_dir: str, kind: str, n: int, calib_loader, val_set, *, seed: int = 0,
            shard: tuple[int, int] = (0, 1), progress: bool = True, **measure_kw) -> list[dict]:
    """Measure pairs 0..n-1 of ``kind`` ("fp" or "quant") owned by ``shard``; returns every pair of that kind
    found in ``out_dir`` (all shards)."""
    from tqdm import tqdm

    if kind not in ("fp", "quant"):
        raise ValueError(f"collect pairs: 'kind' expected \"fp\" or \"quant\", got {kind!r}")
    rank, world = shard
    if not (world >= 1 and 0 <= rank < world):
        raise ValueError(f"collect pairs: 'shard' expected (rank, world) with 0 <= rank < world, got {shard}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"pairs_{kind}_{rank}of{world}.jsonl")
    done = {p["index"] for p in load(out_dir, kind)}
    todo = [i for i in range(n) if i % world == rank and i not in done]
    space = supernet.space
    for i in tqdm(todo, desc=f"pairs {kind}", disable=not progress):
        arch = arch_for_index(space, seed, i, kind == "quant")
        acc = measure(supernet, arch, calib_loader, val_set, **measure_kw)
        append_jsonl(path, {"index": i, "arch": arch.to_dict(), "acc": acc})
    return load(out_dir, kind)


def load(out_dir: str, kind: str) -> list[dict]:
    """Every pair of ``kind`` in ``out_dir`` (all shard files), by index, without duplicates."""
    pairs = {}
    for path in sorted(glob.glob(os.path.join(out_dir, f"pairs_{kind}_*.jsonl"))):
        for p in read_jsonl(path):
            pairs[p["index"]] = p
    return [pairs[i] for i in sorted(pairs)]
