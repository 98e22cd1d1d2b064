"""What the ``cmn`` commands do, as functions: build data and models from a config, train / compress,
evaluate any weights file, convert a QAT checkpoint to a deploy model."""

import json
import os
import sys
import time

import torch

from . import config as config_mod
from .config import CascadeConfig, CompressConfig, DataConfig, ModelConfig, RunConfig, as_run_config
from .data import build_datasets
from .files import (
    BadFileError,
    load,
    load_state_into,
    remove_orphan_temps,
    run_dir_lock,
    save_atomic,
    write_text_atomic,
)
from .metrics import compression_table, model_cost
from .models import build_model, load_pretrained, read_state_dict
from .nn import compare, convert, load_deploy, quantize_model, save_deploy
from .nn.convert import FORMAT as DEPLOY_FORMAT
from .nn.convert import _fit_shapes
from .prune import Pruner, remove_pruned_filters
from .train import Trainer, evaluate
from .train import distributed as ddp


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_data(cfg: RunConfig, augment: bool = True):
    d = cfg.data
    return build_datasets(d.spec, val_fraction=d.val_fraction, seed=d.seed, augment=augment, download=d.download,
                          image_size=d.image_size, limit=d.limit)


def recipe_of(cfg: RunConfig, num_classes: int, quant="run") -> dict:
    """What a deploy file records to rebuild its model (``quant``: the run's unless given)."""
    return {"model": cfg.model.name, "num_classes": int(num_classes), "model_kwargs": dict(cfg.model.kwargs),
            "quant": cfg.quant if quant == "run" else quant}


def _build(model: ModelConfig, num_classes: int):
    return build_model(model.name, int(model.num_classes or num_classes), **model.kwargs)


def build_float(cfg: RunConfig, num_classes: int):
    model = _build(cfg.model, num_classes)
    if cfg.weights:
        load_pretrained(model, cfg.weights)
        log(f"[model] {cfg.model.name}: loaded {cfg.weights}")
    return model


def run_dir_of(cfg: RunConfig) -> str:
    if cfg.run_dir:
        return cfg.run_dir
    return os.path.join("runs", cfg.name or f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")


# What a training run writes into its run directory (``--overwrite`` removes exactly these).
RUN_FILES = ("last.pt", "best.pt", "final.pt", "deploy.pt", "metrics.jsonl", "metrics.csv", "summary.json",
             "table.md", "config.yaml")


def train(cfg: RunConfig | dict, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train (or compress: quantize / prune + fine-tune) as the config says; returns the summary that is
    also written to <run_dir>/summary.json. Writes final.pt (QAT state + config) and, with convert: true,
    deploy.pt. The run directory is locked for the run; one that already holds a run is continued with
    ``resume``, started over with ``overwrite`` (its run files removed), and refused otherwise."""
    cfg = as_run_config(cfg)
    run_dir = run_dir_of(cfg)
    cfg = cfg.replace(run_dir=run_dir)
    rank, _ = ddp.world()
    if rank != 0:
        return _train(cfg, run_dir, resume, progress)
    with run_dir_lock(run_dir):
        remove_orphan_temps(run_dir)
        started = [f for f in ("last.pt", "final.pt") if os.path.exists(os.path.join(run_dir, f))]
        if started and overwrite:
            for f in RUN_FILES:
                if os.path.exists(os.path.join(run_dir, f)):
                    os.unlink(os.path.join(run_dir, f))
        elif started and not resume:
            raise ValueError(f"run directory {run_dir} already holds a run ({', '.join(started)}); pass --resume "
                             "to continue it, --overwrite to start it over, or choose another --run-dir")
        return _train(cfg, run_dir, resume, progress)


def _train(cfg: RunConfig, run_dir: str, resume: bool, progress: bool) -> dict:
    data = build_data(cfg)
    num_classes = int(cfg.model.num_classes or data.num_classes)
    cfg = cfg.replace(model=cfg.model.replace(num_classes=num_classes))
    torch.manual_seed(cfg.train.seed)  # the initial weights too, not only the training order
    model = build_float(cfg.replace(weights=None), num_classes)
    fp_cost = model_cost(model, data.input_size)  # the dense full-precision architecture: the reference
    if cfg.needs_qat_layers():
        quantize_model(model, cfg.quant)
    if cfg.weights:  # after quantize_model: a QAT checkpoint brings its masks along
        load_pretrained(model, cfg.weights)
        log(f"[model] {cfg.model.name}: loaded {cfg.weights}")
    pruner = Pruner(model, **cfg.prune.pruner_kwargs(cfg.train.epochs)) if cfg.prune is not None else None
    rank, _ = ddp.world()
    # The trainer reads last.pt when resuming: a bad checkpoint fails here, before anything is written.
    trainer = Trainer(model, data, cfg.train, run_dir, pruner=pruner, progress=progress, resume=resume,
                      record=cfg.to_dict())
    if rank == 0:
        config_mod.save(cfg, run_dir)
    result = trainer.fit()
    model = trainer.model
    summary = {"run_dir": run_dir, "best_val_top1": result["best_top1"], "epochs": result["epochs"]}
    if cfg.remove_pruned:
        summary["removed"] = {k: list(v) for k, v in remove_pruned_filters(model).items()}
    test = evaluate(model, data.test, device=trainer.device, progress=progress, desc="test")
    summary["test"] = test
    if rank != 0:
        ddp.cleanup()
        return summary
    cost = model_cost(model, data.input_size)
    summary["cost"] = cost.summary()
    summary["fp_cost"] = fp_cost.summary()
    summary["table"] = compression_table({"full precision": fp_cost, "this run": cost})
    save_atomic({"model": model.state_dict(), "config": cfg.to_dict()}, os.path.join(run_dir, "final.pt"))
    if cfg.convert:
        summary["convert"] = convert_model(model.cpu(), data, recipe_of(cfg, num_classes),
                                           os.path.join(run_dir, "deploy.pt"))
    write_text_atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2))
    write_text_atomic(os.path.join(run_dir, "table.md"), summary["table"] + "\n")
    ddp.cleanup()
    return summary


def stage(cfg: RunConfig, name: str, run_dir: str, progress: bool = True, **changes) -> tuple[str, RunConfig]:
    """One training step of a multi-step recipe (cascade, SPQ/PPQ): trains in <run_dir>/<name> with ``changes``
    (RunConfig fields) to ``cfg`` (no quantization, pruning, conversion unless changed; the recipe's own sections
    back to their defaults), or reuses its final.pt when it exists. Returns (final.pt path, the step's config)."""
    final = os.path.join(run_dir, name, "final.pt")
    step = cfg.replace(**{"run_dir": os.path.join(run_dir, name), "prune": None, "quant": None, "convert": False,
                          "remove_pruned": False, "cascade": CascadeConfig(), "compress": CompressConfig(),
                          **changes})
    if os.path.exists(final):
        log(f"[{name}] reusing {final}")
    else:
        log(f"[{name}] training -> {os.path.dirname(final)}")
        train(step, resume=True, progress=progress)
    return final, step


def kernel_counts(report: list) -> dict:
    """{kernel or "float": number of layers} from a ``convert`` report."""
    counts = {}
    for r in report:
        counts[r["kernel"] or "float"] = counts.get(r["kernel"] or "float", 0) + 1
    return counts


def convert_model(model, data, recipe: dict, out: str, batches: int = 4, batch_size: int = 64) -> dict:
    """Convert a QAT model, compare it with the deploy model on ``batches`` test batches, save it."""
    deploy, report = convert(model)
    loader = torch.utils.data.DataLoader(data.test, batch_size=batch_size, shuffle=False)
    sample = [b for b, _ in zip(loader, range(batches))]
    check = compare(model, deploy, sample)
    save_deploy(deploy, out, recipe)
    kernels = kernel_counts(report)
    log(f"[convert] {out}: layers by kernel {kernels}; argmax agreement {check['argmax_agree']:.4f}, "
        f"max |logit diff| {check['max_abs_diff']:.3g} ({check['max_rel_diff']:.3g} relative) on {check['n']} images")
    return {"path": out, "layers": report, "kernels": kernels, "check": check}


def load_any(path: str, cfg: RunConfig, num_classes: int):
    """A model from any weights file: a deploy file, a trainer checkpoint / final.pt (rebuilt from the config
    stored in it), or a bare full-precision state dict (built from cfg.model). Returns (model, kind)."""
    obj = load(path)
    if isinstance(obj, dict) and obj.get("format") == DEPLOY_FORMAT:
        return load_deploy(path), "deploy"
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict):
        saved = config_mod.build(obj["config"], f"{path}: the config stored in it")
        model = _build(saved.model, num_classes)
        if saved.needs_qat_layers():
            quantize_model(model, saved.quant)
        _fit_shapes(model, obj["model"])
        load_state_into(model, obj["model"], path)
        return model, "checkpoint"
    model = _build(cfg.model, num_classes)
    load_state_into(model, read_state_dict(path), path)
    return model, "state_dict"


def evaluate_weights(cfg: RunConfig, weights: str, split: str = "test", progress: bool = True) -> dict:
    data = build_data(cfg, augment=False)
    model, kind = load_any(weights, cfg, data.num_classes)
    device = ddp.default_device() if kind != "deploy" else torch.device("cpu")
    model = model.to(device).eval()
    log(f"[eval] {weights} ({kind}) on {cfg.data.spec} / {split}")
    res = evaluate(model, data.split(split), device=device, progress=progress, desc=split)
    cost = model_cost(model, data.input_size)
    out = {"top1": res["top1"], "top5": res["top5"], "n": res["n"], "loss": res["loss"], "macs": cost.macs,
           "params": cost.params, "eff_macs": cost.eff_macs, "nonzero_params": cost.nonzero_params,
           "bops": cost.bops, "size_bits": cost.size_bits, "split": split, "data": cfg.data.spec,
           "model": cfg.model.name if kind == "state_dict" else None, "weights": weights, "kind": kind}
    return out


def convert_checkpoint(cfg: RunConfig, checkpoint: str, out: str, batches: int = 4) -> dict:
    if os.path.abspath(out) == os.path.abspath(checkpoint):
        raise ValueError(f"convert: 'out' must differ from 'checkpoint' (both {out}): it would replace the "
                         "checkpoint with the deploy file")
    obj = load(checkpoint)
    if not (isinstance(obj, dict) and isinstance(obj.get("config"), dict)):
        raise BadFileError(f"{checkpoint}: expected a trainer checkpoint (best.pt / last.pt / final.pt) holding "
                         "its config")
    saved = config_mod.build(obj["config"], f"{checkpoint}: the config stored in it")
    if cfg.data != DataConfig():  # a dataset named for the check replaces the checkpoint's
        saved = saved.replace(data=cfg.data)
    data = build_data(saved, augment=False)
    model, _ = load_any(checkpoint, saved, data.num_classes)
    return convert_model(model.eval(), data, recipe_of(saved, data.num_classes), out, batches=batches)
