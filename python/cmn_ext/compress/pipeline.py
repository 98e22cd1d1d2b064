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
from .. import runner
from ..bench.throughput import images_per_second
from ..files import remove_orphan_temps, run_dir_lock, write_text_atomic
from ..metrics import compression_table, model_cost
from ..nn import compare, convert, save_deploy
from ..prune import remove_pruned_filters
from ..train import evaluate

METHODS = ("spq", "ppq")
APOT_SPQ = {"weight": {"kind": "apot", "bits": 4}, "act": {"kind": "apot", "bits": 4}, "first": "8bit", "last": "8bit"}
# The paper's settings (section IV-A): SGD momentum 0.9, wd 5e-4, batch 128, lr 0.1 decayed x0.9 after 3
# epochs without improvement, 30 % of the filters of every conv layer, APoT 4/4 with 8-bit first/last layers.
DEFAULTS = {
    "ratio": 0.3,
    "exclude": [],
    "quant": APOT_SPQ,
    "baseline": {"epochs": 0},
    # Gradient-norm clipping for SPQ: right after an epoch-end zeroing the zeroed channels have zero batch
    # variance and batch norm scales their gradient by 1/sqrt(eps); measured on ResNet-20, the first step's
    # weight gradients reach |g| = 836 and the loss jumps from 1.8 to 3.2 and never recovers; clipped at 1 it
    # stays at 1.3-1.8.
    "spq": {"epochs": 200, "grad_clip": 1.0},
    "ppq": {"prune_epochs": 200, "stages": 2, "qat": {"epochs": 50, "lr": 0.01}},
    "results_dir": None,
}
TRAIN = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
         "schedule": "plateau", "factor": 0.9, "patience": 3}


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cfg: dict, method: str, progress: bool = True) -> dict:
    """Holds the run directory's lock for the whole recipe (a second process on it is refused)."""
    run_dir = runner.run_dir_of(cfg)
    with run_dir_lock(run_dir):
        remove_orphan_temps(run_dir)
        return _run({**cfg, "run_dir": run_dir}, method, progress=progress)


def _run(cfg: dict, method: str, progress: bool = True) -> dict:
    if method not in METHODS:
        raise ValueError(f"compress: 'method' expected one of {METHODS}, got {method!r}")
    cc = config_mod.merge(DEFAULTS, cfg.get("compress") or {})
    train = config_mod.merge(TRAIN, cfg.get("train") or {})
    run_dir = runner.run_dir_of(cfg)
    write_text_atomic(os.path.join(run_dir, "config.yaml"), config_mod.dump({**cfg, "compress": cc, "train": train}))
    data = runner.build_data(cfg, augment=False)
    ratio, exclude = float(cc["ratio"]), list(cc["exclude"])

    # the full-precision baseline
    base_epochs = int(cc["baseline"].get("epochs", 0))
    if cfg.get("weights") and base_epochs == 0:
        baseline_path, start = cfg["weights"], f"pretrained {os.path.basename(cfg['weights'])}"
    else:
        if not cfg.get("weights") and base_epochs == 0:
            raise ValueError("compress: no 'weights' to start from and compress.baseline.epochs is 0")
        baseline_path, _ = runner.stage(cfg, "baseline", {"train": config_mod.merge(train, cc["baseline"])}, run_dir, progress)
        start = (f"pretrained {os.path.basename(cfg['weights'])}, fine-tuned {base_epochs} epochs" if cfg.get("weights")
                 else f"trained from scratch for {base_epochs} epochs")
    fpgm = {"method": "fpgm", "ratio": ratio, "exclude": exclude}
    if method == "spq":
        epochs = int(cc["spq"]["epochs"])
        final, stage_cfg = runner.stage(cfg, "spq", {"weights": baseline_path, "quant": cc["quant"],
                                               "prune": {**fpgm, "schedule": "soft"},
                                               "train": config_mod.merge(train, cc["spq"])}, run_dir, progress)
        epoch_note = {"epochs": epochs}
    else:
        p = cc["ppq"]
        n = int(p["prune_epochs"])
        pruned, _ = runner.stage(cfg, "ppq_prune", {"weights": baseline_path,
                                              "prune": {**fpgm, "schedule": "progressive", "stages": int(p["stages"])},
                                              "train": config_mod.merge(train, {"epochs": n})}, run_dir, progress)
        qat = config_mod.merge(train, p["qat"])
        final, stage_cfg = runner.stage(cfg, "ppq_qat", {"weights": pruned, "quant": cc["quant"],
                                                   "prune": {**fpgm, "schedule": "oneshot"}, "train": qat},
                                  run_dir, progress)
        epoch_note = {"epochs": n + int(qat["epochs"]), "prune_epochs": n, "qat_epochs": int(qat["epochs"])}
    return _report(cfg, method, data, baseline_path, final, stage_cfg, start, epoch_note, cc, run_dir)


def _report(cfg, method, data, baseline_path, final, stage_cfg, start, epoch_note, cc, run_dir) -> dict:
    base_cfg = config_mod.merge(cfg, {"quant": None, "prune": None})
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
                runner.recipe_of(config_mod.merge(cfg, {"quant": cc["quant"]}), data.num_classes))
    kernels = runner.kernel_counts(layers)
    result = {
        "method": method, "model": cfg["model"]["name"], "dataset": dataset_label(cfg["data"]["spec"]), "start": start,
        "baseline_acc": base_acc, "compressed_acc": acc, "acc_drop": base_acc - acc, "masked_acc": masked_acc,
        "size_bits": cost.size_bits, "baseline_size_bits": base_cost.size_bits,
        "size_reduction": base_cost.size_bits / cost.size_bits, "bops": cost.bops, "baseline_bops": base_cost.bops,
        "bops_reduction": base_cost.bops / cost.bops, "ratio": float(cc["ratio"]), **epoch_note,
        "removed_filters": {k: list(v) for k, v in removed.items()}, "test_n": len(data.test),
        "deploy": {"kernels": kernels, "check": check, "images_per_s": images_per_second(deploy, data.test),
                   "baseline_images_per_s": images_per_second(baseline, data.test)},
        "device": str(runner.ddp.default_device()), "run_dir": run_dir,
    }
    result["table"] = table([result])
    result["cost_table"] = compression_table({"baseline (FP)": base_cost, method.upper(): cost})
    write_text_atomic(os.path.join(run_dir, "result.json"), json.dumps(result, indent=2))
    write_text_atomic(os.path.join(run_dir, "result.md"), result["table"] + "\n\n" + result["cost_table"] + "\n")
    if cc.get("results_dir"):
        os.makedirs(cc["results_dir"], exist_ok=True)
        path = os.path.join(cc["results_dir"], f"spq_ppq_{result['model']}_{method}.json")
        write_text_atomic(path, json.dumps({k: v for k, v in result.items()
                                            if k not in ("table", "cost_table", "run_dir")}, indent=2))
    return result


def dataset_label(spec: str) -> str:
    """The dataset spec without the machine's directories (results files are committed)."""
    name, sep, arg = spec.partition(":")
    return f"{name}{sep}{os.path.basename(arg.rstrip('/'))}" if arg else spec


def table(results: list) -> str:
    """The paper's Table II columns for each result."""
    lines = ["| model | method | baseline acc (%) | compressed acc (%) | acc drop (%) | model size reduction | BOPs reduction |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['method'].upper()} (4/4) | {100 * r['baseline_acc']:.2f} | "
                     f"{100 * r['compressed_acc']:.2f} | {100 * r['acc_drop']:.2f} | x{r['size_reduction']:.2f} | "
                     f"x{r['bops_reduction']:.2f} |")
    return "\n".join(lines)
