"""The CMN recipe end to end (``cmn cascade``): full-precision net -> 1-bit and 8-bit nets initialised from it
(first and last layers full precision) -> Algorithm 1 (recall / pruning search, for each pruning method)
-> deploy cascade on the kernels -> report table, JSON and plots.

Every step writes into its own folder of the run directory and is skipped when its result exists, so an
interrupted run continues where it stopped (the search resumes point by point).
"""

import copy
import json
import os
import sys
import time

import torch

from .. import config as config_mod
from ..config import RunConfig, as_run_config
from .. import runner
from ..bench.throughput import images_per_second
from ..files import remove_orphan_temps, run_dir_lock, write_text_atomic
from ..metrics import model_cost
from ..nn import convert, save_deploy
from ..train import evaluate
from .cascade import Cascade, evaluate_cascade
from .cost import avg_bits, bit_macs, paper_G, real_bops, real_G
from .search import Algorithm1

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "default.yaml")


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _stage(cfg: RunConfig, name: str, run_dir: str, progress: bool, **changes):
    """Train one stage (or reuse it) and return the model loaded from its final.pt, and that path."""
    final, step = runner.stage(cfg, name, run_dir, progress, **changes)
    model, _ = runner.load_any(final, step, 0)
    return model.eval(), final


def run(cfg: RunConfig | dict, progress: bool = True) -> dict:
    """The CMN recipe for ``cfg`` (its ``cascade`` section; see cmn_ext.config.CascadeConfig). Holds the run
    directory's lock for the whole recipe (a second process on it is refused). Returns the report."""
    cfg = as_run_config(cfg)
    run_dir = runner.run_dir_of(cfg)
    with run_dir_lock(run_dir):
        remove_orphan_temps(run_dir)
        return _run(cfg.replace(run_dir=run_dir), progress=progress)


def _run(cfg: RunConfig, progress: bool = True) -> dict:
    cc = cfg.cascade
    run_dir = cfg.run_dir
    config_mod.save(cfg, run_dir)
    from ..train import distributed as ddp

    device = ddp.default_device()  # QAT models and the search; deploy layers run where their kernels exist (CPU)
    # augmented training batches for every stage and Algorithm 1's fine-tunes; thresholds and accuracies are
    # measured on the un-augmented splits (train_plain, val, test)
    data = runner.build_data(cfg, augment=True)
    if data.val is None:
        raise ValueError("cmn cascade: needs a validation split (data.val_fraction > 0) for the search")

    # 1. the full-precision net, then the 1-bit and 8-bit nets initialised from it (Table 2)
    fp_epochs = cc.fp.train.get("epochs", cfg.train.epochs)
    if cfg.weights and fp_epochs == 0:
        fp = runner.build_float(cfg, data.num_classes).eval()
        fp_path, fp_source = cfg.weights, f"{os.path.basename(cfg.weights)} as loaded (not fine-tuned here)"
    else:  # from scratch, or fine-tuned from the checkpoint on this run's data like the other two nets
        fp, fp_path = _stage(cfg, "fp", run_dir, progress, weights=cfg.weights, train=cfg.train.replace(**cc.fp.train))
        epochs = f"{fp_epochs} epoch{'s' if fp_epochs != 1 else ''}"
        fp_source = f"{os.path.basename(cfg.weights)} fine-tuned {epochs}" if cfg.weights else f"trained {epochs}"
    lo, _ = _stage(cfg, "lo", run_dir, progress, weights=fp_path, quant=cc.lo.quant,
                   train=cfg.train.replace(**cc.lo.train))
    hi, _ = _stage(cfg, "hi", run_dir, progress, weights=fp_path, quant=cc.hi.quant,
                   train=cfg.train.replace(**cc.hi.train))

    fp, lo, hi = fp.to(device), lo.to(device), hi.to(device)
    size = data.input_size
    fp_cost, lo_cost, hi_cost = model_cost(fp, size), model_cost(lo, size), model_cost(hi, size)
    fp_val = evaluate(fp, data.val, device=device)["top1"]
    hi_val = evaluate(hi, data.val, device=device)["top1"]
    eta = fp_val if cc.search.eta == "fp" else min(fp_val, hi_val)
    _log(f"[cmn] validation top-1: full precision {fp_val:.4f}, 8-bit {hi_val:.4f}; eta = {eta:.4f} "
         f"({'full precision' if cc.search.eta == 'fp' else 'the lower of the two'})")
    test = {name: evaluate(m, data.test, device=device)["top1"] for name, m in (("fp", fp), ("lo", lo), ("hi", hi))}
    _log(f"[cmn] test accuracy: full precision {test['fp']:.4f}, 1-bit {test['lo']:.4f}, 8-bit {test['hi']:.4f}")

    # 2. Algorithm 1, once per pruning method (magnitude = the paper; fpgm = structured, real int8 speed)
    sc = cc.search
    results = {}
    for method in sc.methods:
        search = Algorithm1(lo, copy.deepcopy(hi), data, eta, os.path.join(run_dir, f"search_{method}"),
                            recall=sc.recall, prune=sc.prune, span=sc.span, tolerance=sc.tolerance,
                            method=method, finetune=cfg.train.replace(**sc.finetune),
                            device=device, progress=progress, fp_cost=fp_cost)
        results[method] = search.run()

    # 3. evaluate each searched cascade on the test split; deploy the first method's
    rows, summary = [], None
    for i, (method, res) in enumerate(results.items()):
        best, hi_p = res["best"], res["hi"].eval()
        hp_cost = model_cost(hi_p, size)
        qat = Cascade([lo, hi_p], [res["threshold"]])
        ev = evaluate_cascade(qat, data.test, batch_size=cc.batch_size, device=device)
        tau = best["tau"] / 100
        g_paper, g_real = paper_G(tau, lo_cost, hp_cost), real_G(ev["exit_rate"], lo_cost, hp_cost)
        entry = {"method": method, "tau": tau, "threshold": res["threshold"], "prune_ratio": best["phi"] / 100,
                 "cascade_acc": ev["accuracy"], "exit_rate": ev["exit_rate"], "stages": ev["stages"],
                 "hi_pruned_acc": evaluate(hi_p, data.test, device=device)["top1"],
                 "hi_pruned_avg_bits": avg_bits(bit_macs(hp_cost), fp_cost), "hi_pruned_bops": hp_cost.bops,
                 "G": g_paper, "G_real": g_real, "avg_bits": avg_bits(g_paper, fp_cost),
                 "avg_bits_real": avg_bits(g_real, fp_cost), "bops": real_bops(ev["exit_rate"], lo_cost, hp_cost),
                 "tau0": res["tau0"], "search": res["rows"], "initial": res["initial"], "val_eta": eta,
                 "val_floor": eta - sc.tolerance}
        if i == 0 and cc.deploy:
            deploy_device = _deploy_device(cc.deploy_device)
            entry["deploy"] = _deploy(cfg, lo, hi_p, res["threshold"], data, run_dir, cc.batch_size,
                                      deploy_device)
            entry["fp_images_per_s"] = _float_images_per_second(fp, data.test, cc.batch_size, deploy_device)
            entry["fp_baseline"] = "fp16 channels_last" if deploy_device.type == "cuda" else "fp32 channels_last"
            fp.to(device)
        rows.append(entry)
        summary = summary or entry
    report = {"fp_acc": test["fp"], "lo_acc": test["lo"], "hi_acc": test["hi"], **{k: summary[k] for k in (
        "cascade_acc", "tau", "threshold", "exit_rate", "prune_ratio", "avg_bits", "avg_bits_real", "bops", "G",
        "G_real", "hi_pruned_acc")}, "method": summary["method"], "val_eta": eta, "val_floor": summary["val_floor"],
        "eta_source": cc.search.eta, "val_fp_acc": fp_val, "val_hi_acc": hi_val, "fp_source": fp_source,
        "costs": {"fp": fp_cost.summary(), "lo": lo_cost.summary(), "hi": hi_cost.summary()},
        "fp_avg_bits": avg_bits(bit_macs(fp_cost), fp_cost), "lo_avg_bits": avg_bits(bit_macs(lo_cost), fp_cost),
        "hi_avg_bits": avg_bits(bit_macs(hi_cost), fp_cost), "cascades": rows, "run_dir": run_dir,
        "device": str(device),
        "deploy_device": str(_deploy_device(cc.deploy_device)) if cc.deploy else None}
    from .report import plots, search_table, table

    report["table"] = table(report)
    report["plots"] = plots(report, run_dir)
    write_text_atomic(os.path.join(run_dir, "report.json"), json.dumps(report, indent=2, default=str))
    write_text_atomic(os.path.join(run_dir, "report.md"), report["table"] + "\n\n## Algorithm 1 search (validation "
                      "split)\n\n" + search_table(report) + "\n")
    return report


def _deploy_device(choice: str) -> torch.device:
    """``auto``: the fastest device present (CUDA when available), else the named one."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cascade.deploy_device={choice!r}: no CUDA device in this process")
    return device


def _float_images_per_second(fp, dataset, batch_size, device) -> float:
    """The float model as a user would run it on ``device``: fp32 channels_last on the CPU, fp16 channels_last
    on a GPU."""
    model = copy.deepcopy(fp).to(device).eval().to(memory_format=torch.channels_last)
    if device.type == "cuda":
        model = model.half()
    return images_per_second(model, dataset, batch_size, device,
                             prepare=lambda x: x.to(memory_format=torch.channels_last).to(
                                 torch.float16 if device.type == "cuda" else torch.float32))


def _deploy(cfg, lo, hi_p, threshold, data, run_dir, batch_size, device) -> dict:
    """Convert both stages into deploy engines, run the deploy cascade on ``device``, compare it with the QAT
    cascade (on the CPU), and time it (images/s, and the share spent between the stages: confidence,
    compaction of the remaining rows, scatter)."""
    lo, hi_p = copy.deepcopy(lo).cpu(), copy.deepcopy(hi_p).cpu()
    qat_cascade = Cascade([lo, hi_p], [threshold])
    lo_d, lo_rep = convert(lo)
    hi_d, hi_rep = convert(hi_p)
    for name, model in (("lo", lo_d), ("hi", hi_d)):
        save_deploy(model, os.path.join(run_dir, f"deploy_{name}.pt"),
                    runner.recipe_of(cfg, data.num_classes, quant=getattr(cfg.cascade, name).quant))
    dep = Cascade([lo_d.to(device), hi_d.to(device)], [threshold])
    # one pass over the test split: the deploy cascade's accuracy and exit rate, and its agreement with QAT
    loader = torch.utils.data.DataLoader(data.test, batch_size=batch_size, shuffle=False)
    same = right = exits = n = 0
    between = total = 0.0
    for x, y in loader:
        a = qat_cascade.run(x)
        t0 = time.perf_counter()
        b = dep.run(x.to(device), timing=True)
        total += time.perf_counter() - t0
        between += dep.last_timing["between"]
        pred = b.logits.argmax(1).cpu()
        same += int((a.logits.argmax(1) == pred).sum())
        right += int((pred == y).sum())
        exits += int((b.exit_stage == 0).sum())
        n += len(x)
    kernels = runner.kernel_counts(lo_rep + hi_rep)
    return {"accuracy": right / max(1, n), "exit_rate": exits / max(1, n), "images_per_s": images_per_second(
        dep, data.test, batch_size, device), "agree_with_qat": same / max(1, n), "kernels": kernels,
        "device": str(device), "between_stages_fraction": between / max(total, 1e-12),
        "files": ["deploy_lo.pt", "deploy_hi.pt"]}
