"""SPQ and PPQ end to end (``cmn compress --method spq|ppq``).

  baseline   the full-precision start: a pretrained checkpoint (``weights=``), optionally fine-tuned first
             (``compress.baseline.epochs``; e.g. on the JPEG CIFAR-10 files the checkpoint was not trained
             on), or trained from scratch when no checkpoint is given
  SPQ        (Algorithm 1) APoT 4-bit fake quantization of weights and activations (first / last layer
             8-bit) with FPGM soft filter pruning: at every epoch end p % of each conv's filters, chosen on
             the full-precision weights, are zeroed; they start the next epoch at zero (contributing
             nothing), keep training and may come back (SFP semantics; see ``nn.qat``)
  PPQ        (Algorithm 2) full-precision training with progressive hard FPGM pruning (the ratio rises every
             floor(n / s) epochs up to p; pruned filters frozen at zero), then APoT QAT of the pruned model
             for m epochs at lr 0.01, masks kept
  report     the final model is compacted (``remove_pruned_filters``), costed (size Eq. 5, BOPs Eq. 6),
             evaluated, converted to the kernels, checked against the QAT model and timed against the
             baseline on the CPU

Every step lives in its own folder of the run directory and is reused when its final.pt exists.
"""

import json
import os
import sys

import torch

from .. import config as config_mod
from ..config import Prune, RunConfig, as_run_config
from .. import runner
from ..bench.throughput import images_per_second
from ..files import remove_orphan_temps, run_dir_lock, write_text_atomic
from ..metrics import compression_table, model_cost, reduction_figures
from ..nn import compare, convert, save_deploy
from ..prune import remove_pruned_filters
from ..train import evaluate

METHODS = ("spq", "ppq")
# The paper's settings (section IV-A) are cmn_ext.config.CompressConfig's defaults, its training settings the
# "compress" recipe of cmn_ext.config.load_config (the plateau schedule).


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cfg: RunConfig | dict, method: str, progress: bool = True) -> dict:
    """SPQ or PPQ for ``cfg`` (its ``compress`` section; build it with ``load_config(..., recipe="compress")``
    for the papers' training schedule). Holds the run directory's lock for the whole recipe (a second process
    on it is refused). Returns the result (also written to <run_dir>/result.json)."""
    if method not in METHODS:
        raise ValueError(f"compress: 'method' expected one of {METHODS}, got {method!r}")
    cfg = as_run_config(cfg)
    run_dir = runner.run_dir_of(cfg)
    with run_dir_lock(run_dir):
        remove_orphan_temps(run_dir)
        return _run(cfg.replace(run_dir=run_dir), method, progress=progress)


def _run(cfg: RunConfig, method: str, progress: bool = True) -> dict:
    cc, train, run_dir = cfg.compress, cfg.train, cfg.run_dir
    config_mod.save(cfg, run_dir)
    data = runner.build_data(cfg, augment=False)

    # the full-precision baseline
    base_epochs = cc.baseline["epochs"]
    if cfg.weights and base_epochs == 0:
        baseline_path, start = cfg.weights, f"pretrained {os.path.basename(cfg.weights)}"
    else:
        if not cfg.weights and base_epochs == 0:
            raise ValueError("compress: no 'weights' to start from and compress.baseline.epochs is 0")
        baseline_path, _ = runner.stage(cfg, "baseline", run_dir, progress, train=train.replace(**cc.baseline))
        start = (f"pretrained {os.path.basename(cfg.weights)}, fine-tuned {base_epochs} epochs" if cfg.weights
                 else f"trained from scratch for {base_epochs} epochs")
    fpgm = Prune("fpgm", cc.ratio, exclude=cc.exclude)
    if method == "spq":
        spq = train.replace(**cc.spq)
        final, stage_cfg = runner.stage(cfg, "spq", run_dir, progress, weights=baseline_path, quant=cc.quant,
                                        prune=fpgm.replace(schedule="soft"), train=spq)
        epoch_note = {"epochs": spq.epochs}
    else:
        n = cc.ppq.prune_epochs
        pruned, _ = runner.stage(cfg, "ppq_prune", run_dir, progress, weights=baseline_path,
                                 prune=fpgm.replace(schedule="progressive", stages=cc.ppq.stages),
                                 train=train.replace(epochs=n))
        qat = train.replace(**cc.ppq.qat)
        final, stage_cfg = runner.stage(cfg, "ppq_qat", run_dir, progress, weights=pruned, quant=cc.quant,
                                        prune=fpgm.replace(schedule="oneshot"), train=qat)
        epoch_note = {"epochs": n + qat.epochs, "prune_epochs": n, "qat_epochs": qat.epochs}
    return _report(cfg, method, data, baseline_path, final, stage_cfg, start, epoch_note, run_dir)


def _report(cfg, method, data, baseline_path, final, stage_cfg, start, epoch_note, run_dir) -> dict:
    cc = cfg.compress
    base_cfg = cfg.replace(quant=None, prune=None)
    baseline, _ = runner.load_any(baseline_path, base_cfg, data.num_classes)
    model, _ = runner.load_any(final, stage_cfg, data.num_classes)
    baseline, model = baseline.eval(), model.eval()
    masked_acc = evaluate(model, data.test)["top1"]
    removed = remove_pruned_filters(model)
    size = data.input_size
    base_cost, cost = model_cost(baseline, size), model_cost(model, size)
    base_acc, acc = evaluate(baseline, data.test)["top1"], evaluate(model, data.test)["top1"]
    deploy, layers = convert(model)
    loader = torch.utils.data.DataLoader(data.test, batch_size=256, shuffle=False)
    check = compare(model, deploy, [b for b, _ in zip(loader, range(4))])
    save_deploy(deploy, os.path.join(run_dir, "deploy.pt"),
                runner.recipe_of(cfg, data.num_classes, quant=cc.quant))
    kernels = runner.kernel_counts(layers)
    result = {
        "method": method, "model": cfg.model.name, "dataset": dataset_label(cfg.data.spec), "start": start,
        "baseline_acc": base_acc, "compressed_acc": acc, "acc_drop": base_acc - acc, "masked_acc": masked_acc,
        # physical (deployable) figures and the paper's convention (Eq. 5 / 6), each labelled
        **reduction_figures(base_cost, cost), "ratio": cc.ratio, **epoch_note,
        "removed_filters": {k: list(v) for k, v in removed.items()}, "test_n": len(data.test),
        "deploy": {"kernels": kernels, "check": check, "images_per_s": images_per_second(deploy, data.test),
                   "baseline_images_per_s": images_per_second(baseline, data.test)},
        "device": str(runner.ddp.default_device()), "run_dir": run_dir,
    }
    result["table"] = table([result])
    result["cost_table"] = compression_table({"baseline (FP)": base_cost, method.upper(): cost})
    write_text_atomic(os.path.join(run_dir, "result.json"), json.dumps(result, indent=2))
    write_text_atomic(os.path.join(run_dir, "result.md"), result["table"] + "\n\n" + result["cost_table"] + "\n")
    if cc.results_dir:
        os.makedirs(cc.results_dir, exist_ok=True)
        path = os.path.join(cc.results_dir, f"spq_ppq_{result['model']}_{method}.json")
        write_text_atomic(path, json.dumps({k: v for k, v in result.items()
                                            if k not in ("table", "cost_table", "run_dir")}, indent=2))
    return result


def dataset_label(spec: str) -> str:
    """The dataset spec without the machine's directories (results files are committed)."""
    name, sep, arg = spec.partition(":")
    return f"{name}{sep}{os.path.basename(arg.rstrip('/'))}" if arg else spec


def table(results: list) -> str:
    """The paper's Table II columns for each result."""
    lines = ["| model | method | baseline acc (%) | compressed acc (%) | acc drop (%) | size reduction (paper Eq. 5) | "
             "BOPs reduction (paper Eq. 6) | size reduction (physical) | BOPs reduction (physical) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    x = lambda v: f"x{v:.2f}" if v is not None else "-"  # noqa: E731
    for r in results:
        lines.append(f"| {r['model']} | {r['method'].upper()} (4/4) | {100 * r['baseline_acc']:.2f} | "
                     f"{100 * r['compressed_acc']:.2f} | {100 * r['acc_drop']:.2f} | {x(r.get('paper_size_reduction'))} | "
                     f"{x(r.get('paper_bops_reduction'))} | {x(r['size_reduction'])} | {x(r['bops_reduction'])} |")
    return "\n".join(lines)
