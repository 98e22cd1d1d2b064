"""Wall-clock throughput of a model, for the pipelines' reports (not a kernel benchmark)."""

import time

import torch


@torch.no_grad()
def images_per_second(model, dataset, batch_size=256, device="cpu", repeats=2, max_batches=8, prepare=None) -> float:
    """Throughput of ``model`` over (up to ``max_batches``) batches of ``dataset``: best of ``repeats``.
    ``prepare`` (optional) converts each batch once beforehand (memory format, dtype)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    batches = [x.to(device) for (x, _), _ in zip(loader, range(max_batches))]
    if prepare is not None:
        batches = [prepare(x) for x in batches]
    model.eval()
    model(batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in batches:
            model(x)
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return sum(len(x) for x in batches) / best
