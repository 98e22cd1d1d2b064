"""A cascade of classifiers with early exit on softmax confidence (CMN eq. 1, DESIGN 3.4).

Stage s sees only the rows that no earlier stage was confident about. A row exits at stage s when its
softmax maximum is >= thresholds[s]; the last stage takes every row that reaches it. Rows are compacted with
boolean-mask indexing (no per-sample Python loop) and results scattered back into place. On CUDA the
compaction costs one device-to-host sync per stage (the size of the remaining batch); ``run(..., timing=True)``
measures the time spent between the stages (confidence, compaction, scatter) in ``last_timing``.
"""

import dataclasses
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class _Clock:
    """Wall time split into named parts, the device synchronised at every lap."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.totals = {"stages": 0.0, "between": 0.0}
        self._sync()
        self.t = time.perf_counter()

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def lap(self, part: str):
        self._sync()
        now = time.perf_counter()
        self.totals[part] += now - self.t
        self.t = now


@dataclasses.dataclass
class CascadeOutput:
    logits: torch.Tensor       # [N, C] the logits of the stage each row exited at
    exit_stage: torch.Tensor   # [N] int64, stage index per row
    confidence: torch.Tensor   # [N] softmax maximum at the exit stage


class Cascade(nn.Module):
    def __init__(self, stages, thresholds):
        super().__init__()
        stages = list(stages)
        thresholds = [float(t) for t in thresholds]
        if len(stages) < 1:
            raise ValueError("Cascade: 'stages' expected at least one model")
        if len(thresholds) != len(stages) - 1:
            raise ValueError(f"Cascade: {len(stages)} stages need {len(stages) - 1} thresholds, got {len(thresholds)}")
        self.stages = nn.ModuleList(stages)
        self.thresholds = thresholds

    @torch.no_grad()
    def run(self, x: torch.Tensor, timing: bool = False) -> CascadeOutput:
        """The cascade on a batch. With ``timing``, ``self.last_timing`` holds the seconds spent in the stages and
        between them (synchronising the device around each, so that the split is real)."""
        n = x.shape[0]
        last = len(self.stages) - 1
        rows = torch.arange(n, device=x.device)
        logits = exit_stage = confidence = None
        clock = _Clock(x.device) if timing else None
        for s, stage in enumerate(self.stages):
            if clock:
                clock.lap("between")
            out = stage(x).float()
            if clock:
                clock.lap("stages")
            if logits is None:
                logits = out.new_empty((n, out.shape[1]))
                exit_stage = torch.full((n,), last, dtype=torch.int64, device=x.device)
                confidence = out.new_empty(n)
            conf = F.softmax(out, dim=1).amax(1)
            done = torch.ones_like(conf, dtype=torch.bool) if s == last else conf >= self.thresholds[s]
            n_done = int(done.sum())  # the one host synchronisation per stage: it sizes the compaction
            if n_done == rows.numel():  # every remaining row exits here: no compaction
                logits.index_copy_(0, rows, out)
                confidence.index_copy_(0, rows, conf)
                exit_stage.index_fill_(0, rows, s)
                break
            if n_done:
                where = rows[done]
                logits.index_copy_(0, where, out[done])
                confidence.index_copy_(0, where, conf[done])
                exit_stage.index_fill_(0, where, s)
                stay = ~done
                rows, x = rows[stay], x[stay]
        if clock:
            clock.lap("between")
            self.last_timing = dict(clock.totals)
        return CascadeOutput(logits, exit_stage, confidence)

    def forward(self, x):
        return self.run(x).logits


@torch.no_grad()
def confidences(model: nn.Module, dataset, batch_size: int = 256, device="cpu", progress=False, desc="confidence"):
    """Softmax maxima, predictions and labels of ``model`` over ``dataset`` (eval mode)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    conf, pred, labels = [], [], []
    for x, y in tqdm(loader, desc=desc, disable=not progress, file=sys.stderr, leave=False):
        p = F.softmax(model(x.to(device)).float(), dim=1)
        c, k = p.max(1)
        conf.append(c.cpu())
        pred.append(k.cpu())
        labels.append(y)
    return torch.cat(conf), torch.cat(pred), torch.cat(labels)


def cascade_accuracy(lo_conf, lo_pred, hi_pred, labels, threshold: float) -> tuple[float, float]:
    """(accuracy, exit rate) of a 2-stage cascade from per-sample stage outputs (no re-running)."""
    exits = lo_conf >= threshold
    final = torch.where(exits, lo_pred, hi_pred)
    return float((final == labels).double().mean()), float(exits.double().mean())


@torch.no_grad()
def evaluate_cascade(cascade: Cascade, dataset, batch_size: int = 256, device="cpu", progress=False) -> dict:
    """Accuracy of the cascade and, per stage, rows seen, rows exited and accuracy on the exited rows; plus the
    wall time (images/s) of running it batch by batch."""
    cascade.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    k = len(cascade.stages)
    seen = torch.zeros(k, dtype=torch.int64)
    exited = torch.zeros(k, dtype=torch.int64)
    right = torch.zeros(k, dtype=torch.int64)
    n = 0
    seconds = 0.0
    for x, y in tqdm(loader, desc="cascade", disable=not progress, file=sys.stderr, leave=False):
        x = x.to(device)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = cascade.run(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        stage = out.exit_stage.cpu()
        ok = out.logits.argmax(1).cpu() == y
        for s in range(k):
            exited[s] += int((stage == s).sum())
            seen[s] += int((stage >= s).sum())
            right[s] += int(((stage == s) & ok).sum())
        n += len(y)
    stages = [{"stage": s, "seen": int(seen[s]), "exited": int(exited[s]),
               "accuracy": float(right[s]) / max(1, int(exited[s]))} for s in range(k)]
    return {"accuracy": float(right.sum()) / max(1, n), "n": n, "exit_rate": float(exited[0]) / max(1, n),
            "stages": stages, "images_per_s": n / max(seconds, 1e-9)}
