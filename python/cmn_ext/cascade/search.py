"""Algorithm 1 of CMN: the joint search of the binary net's recall rate tau and the 8-bit net's pruning
ratio phi, minimising the cascade's compute G under an accuracy floor eta.

  eta   accuracy of the full-precision net (minus ``tolerance``, 0 by default as in the paper)
  D     recall rates {5, 10, ..., 95} %;  tau0 = the first tau in D whose unpruned cascade falls below eta
  S     {tau0 - 5 span, ..., tau0 + 5 span} %, clipped to (0, 100)
  for tau in S, for phi in Phi = {5, ..., 90} %: prune the 8-bit net further to phi (magnitude, iteratively,
        the binary net frozen), fine-tune, measure the cascade; stop this tau once accuracy < eta, else keep
        the smallest G = tau G(F_lo) + (1 - tau) G(F_hi)
  T     derived from the chosen tau on the training set

Thresholds always come from the training set (``data.train_plain``); accuracies are measured on the
validation split. Every (tau, phi) point is appended to <run_dir>/search.jsonl and every pruned 8-bit net is
saved as hi_phi<phi>.pt; the search resumes from them. Both carry a key of everything that decides their
measurements (the nets' validation predictions, the labels, the pruning method, grid and fine-tune), so a
changed setting measures anew; whether a point keeps eta is decided from its accuracy on every run, so a
changed tolerance never reuses an old decision.
"""

import copy
import hashlib
import json
import math
import os
import sys

from ..config import TrainConfig
from ..metrics import model_cost
from ..prune import Pruner
from ..files import append_jsonl, load, read_jsonl, save_atomic
from ..train import Trainer
from .cascade import cascade_accuracy, confidences
from .cost import avg_bits, paper_G
from .thresholds import threshold_for_recall


def percent_grid(spec) -> list[int]:
    """[start, stop, step] in percent (inclusive) or an explicit list."""
    if isinstance(spec, (list, tuple)) and len(spec) == 3 and spec[2] < spec[1]:
        return list(range(int(spec[0]), int(spec[1]) + 1, int(spec[2])))
    return [int(v) for v in spec]


def candidate_set(tau0: int, span: int, step: int = 5) -> list[int]:
    return [t for t in (tau0 + step * k for k in range(-span, span + 1)) if 0 < t < 100]


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


class Algorithm1:
    def __init__(self, lo, hi, data, eta: float, run_dir: str, *, recall=(5, 95, 5), prune=(5, 90, 5),
                 span: int = 2, tolerance: float = 0.0, method: str = "magnitude",
                 finetune: TrainConfig | dict | None = None,
                 exclude=("first", "last"), device="cpu", progress=True, input_size=None, fp_cost=None):
        self.lo, self.hi, self.data = lo.eval(), hi, data
        if fp_cost is None:
            raise ValueError("Algorithm1: 'fp_cost' (the full-precision model's ModelCost) is needed for avg bits")
        self.fp_cost = fp_cost
        self.eta, self.floor = eta, eta - tolerance
        self.run_dir, self.device, self.progress = run_dir, device, progress
        self.recall, self.prune = percent_grid(recall), percent_grid(prune)
        self.span, self.method, self.exclude = int(span), method, list(exclude)
        self.finetune = TrainConfig.from_dict(finetune or {"epochs": 1})
        self.input_size = input_size or data.input_size
        for p in self.lo.parameters():
            p.requires_grad_(False)  # the binary net is frozen during the search
        self.rows_path = os.path.join(run_dir, "search.jsonl")

    def _stage_outputs(self):
        dev = self.device
        self.lo_train_conf, _, _ = confidences(self.lo, self.data.train_plain, device=dev, desc="binary/train")
        self.lo_val_conf, self.lo_val_pred, self.val_labels = confidences(self.lo, self.data.val, device=dev,
                                                                           desc="binary/val")
        self.lo_cost = model_cost(self.lo, self.input_size)

    def accuracy(self, hi, tau: float) -> tuple[float, float, float]:
        """(cascade val accuracy, val exit rate, threshold) for recall tau (a fraction)."""
        t = threshold_for_recall(self.lo_train_conf, tau)
        _, hi_pred, _ = confidences(hi, self.data.val, device=self.device, desc="8-bit/val")
        acc, ex = cascade_accuracy(self.lo_val_conf, self.lo_val_pred, hi_pred, self.val_labels, t)
        return acc, ex, t

    def initial_recall(self) -> int:
        """Lines 7-9: the first tau in D where the unpruned cascade's accuracy falls below eta."""
        _, hi_pred, _ = confidences(self.hi, self.data.val, device=self.device, desc="8-bit/val")
        self.setting = self._setting_key(hi_pred)
        self.initial = []
        for tau in self.recall:
            t = threshold_for_recall(self.lo_train_conf, tau / 100)
            acc, ex = cascade_accuracy(self.lo_val_conf, self.lo_val_pred, hi_pred, self.val_labels, t)
            self.initial.append({"tau": tau, "accuracy": acc, "exit_rate": ex, "threshold": t})
            if acc < self.floor:
                return tau
        return self.recall[-1]

    def _setting_key(self, hi_pred) -> str:
        """A digest of what decides every measurement: both nets (through their validation predictions), the
        labels, the pruning method, layers, grid and fine-tune. Not the tolerance: ``ok`` is recomputed."""
        h = hashlib.sha1()
        for t in (self.lo_val_pred, hi_pred, self.val_labels):
            h.update(t.detach().cpu().numpy().tobytes())
        h.update(json.dumps([self.method, self.exclude, self.prune, self.finetune.to_dict()], sort_keys=True,
                            default=str).encode())
        return h.hexdigest()[:16]

    def _done(self) -> dict:
        """The stored (tau, phi) points measured under this setting."""
        return {(r["tau"], r["phi"]): r for r in read_jsonl(self.rows_path) if r.get("setting") == self.setting}

    def _finetune(self, hi, phi: float):
        pruner = Pruner(hi, self.method, phi, schedule="oneshot", exclude=self.exclude)
        Trainer(hi, self.data, self.finetune, None, pruner=pruner, device=self.device, progress=self.progress).fit()

    def _pruned(self, phi: int):
        """The 8-bit net pruned (iteratively) to ``phi`` % and fine-tuned, with its validation predictions and
        cost. The binary net is frozen and the fine-tune is seeded, so this sequence is the same for every tau:
        each phi is computed once (and saved, for resume) and shared by all candidate recall rates."""
        if phi in self.cache:
            return self.cache[phi]
        path = os.path.join(self.run_dir, f"hi_phi{phi}.pt")
        previous = [p for p in self.prune if p < phi]
        hi = copy.deepcopy(self._pruned(previous[-1])[0] if previous else self.hi)
        stored = load(path) if os.path.exists(path) else None
        if isinstance(stored, dict) and stored.get("setting") == self.setting and "model" in stored:
            hi.load_state_dict(stored["model"])
        else:
            self._finetune(hi, phi / 100)
            save_atomic({"model": hi.state_dict(), "phi": phi, "setting": self.setting}, path)
        _, pred, _ = confidences(hi, self.data.val, device=self.device, desc="8-bit/val")
        self.cache[phi] = (hi, pred, model_cost(hi, self.input_size))
        return self.cache[phi]

    def run(self) -> dict:
        os.makedirs(self.run_dir, exist_ok=True)
        self._stage_outputs()
        tau0 = self.initial_recall()
        S = candidate_set(tau0, self.span)
        _log(f"[cmn] eta = {self.eta:.4f} (floor {self.floor:.4f}); tau0 = {tau0}%; S = {S}; Phi = {self.prune}")
        done = self._done()
        self.cache = {}
        hi0 = self.hi
        best, rows = None, []
        for tau in S:
            t = threshold_for_recall(self.lo_train_conf, tau / 100)
            for phi in self.prune:
                if (tau, phi) in done and math.isclose(done[(tau, phi)]["threshold"], t, rel_tol=1e-12):
                    row = dict(done[(tau, phi)], ok=done[(tau, phi)]["accuracy"] >= self.floor)
                else:
                    hi, hi_pred, hi_cost = self._pruned(phi)
                    acc, ex = cascade_accuracy(self.lo_val_conf, self.lo_val_pred, hi_pred, self.val_labels, t)
                    g = paper_G(tau / 100, self.lo_cost, hi_cost)
                    row = {"tau": tau, "phi": phi, "accuracy": acc, "exit_rate": ex, "threshold": t, "G": g,
                           "avg_bits": avg_bits(g, self.fp_cost), "pruned": 1 - hi_cost.nonzero_params / max(1, hi_cost.params),
                           "ok": acc >= self.floor, "setting": self.setting}
                    append_jsonl(self.rows_path, row)
                    _log(f"[cmn] tau {tau:>2}%  phi {phi:>2}%  val acc {acc:.4f}  exit {ex:.3f}  "
                         f"G {g / 1e6:.2f} M  avg bits {row['avg_bits']:.2f}" + ("" if row["ok"] else "  < eta: next tau"))
                rows.append(row)
                if not row["ok"]:
                    break
                if best is None or row["G"] < best["G"]:
                    best = row
        if best is None:
            # No operating point keeps eta (the paper's G-bar stays infinite): the degenerate cascade that sends
            # every row to the unpruned 8-bit net (tau = 0, T = +inf) is what remains.
            _log("[cmn] no (tau, phi) kept the cascade at eta: falling back to tau = 0 (every row to the 8-bit "
                 "net, unpruned); raise 'tolerance' or train the stages longer")
            acc, ex, t = self.accuracy(hi0, 0.0)
            g = paper_G(0.0, self.lo_cost, model_cost(hi0, self.input_size))
            best = {"tau": 0, "phi": 0, "accuracy": acc, "exit_rate": ex, "threshold": t, "G": g,
                    "avg_bits": avg_bits(g, self.fp_cost), "pruned": 0.0, "ok": False, "fallback": True}
            return {"best": best, "threshold": t, "tau0": tau0, "S": S, "rows": rows, "initial": self.initial,
                    "hi": hi0}
        hi_best = self._pruned(best["phi"])[0]
        threshold = threshold_for_recall(self.lo_train_conf, best["tau"] / 100)
        return {"best": best, "threshold": threshold, "tau0": tau0, "S": S, "rows": rows, "initial": self.initial,
                "hi": hi_best}
