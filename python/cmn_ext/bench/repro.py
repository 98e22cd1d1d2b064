"""The papers' reproductions on a device (benchmarks/repro_gpu.sh): collect a finished (or interrupted) run into
one results file, and pack its checkpoints so that a later device call continues it.

    python -m cmn_ext.bench.repro collect METHOD RUN_DIR OUT_DIR WALL_S [--dry-run]
    python -m cmn_ext.bench.repro pack RUN_DIR TAR_PATH
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tarfile

import torch

from ..files import write_text_atomic

METHODS = ("cmn", "ppq", "spq", "apq")
RESULT_FILE = {"cmn": "report.json", "ppq": "result.json", "spq": "result.json", "apq": "final.json"}
LIMIT = 16 * 2**20  # what one file back from the device may weigh
# what a continued run needs: finished stages (final.pt), search points and their pruned nets, the APQ stages
KEEP = ("final.pt", ".json", ".jsonl", ".yaml", "supernet.pt", "predictor.pt")


def _device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or 'x86_64'})"


def _epochs(cfg: dict, method: str) -> dict:
    """The training epochs of each step, from the run's resolved config."""
    if method == "cmn":
        c, train = cfg["cascade"], cfg["train"]["epochs"]
        return {"fp": c["fp"]["train"].get("epochs", train), "lo": c["lo"]["train"].get("epochs", train),
                "hi": c["hi"]["train"].get("epochs", train), "search_finetune": c["search"]["finetune"]["epochs"]}
    if method in ("ppq", "spq"):
        c = cfg["compress"]
        out = {"baseline": c["baseline"]["epochs"]}
        out.update({"spq": c["spq"]["epochs"]} if method == "spq" else
                   {"ppq_prune": c["ppq"]["prune_epochs"], "ppq_qat": c["ppq"]["qat"]["epochs"]})
        return out
    s = cfg["search"]
    return {"supernet": s["supernet"]["epochs"], "finalize_finetune": s["finalize"]["finetune_epochs"]}


def _headline(method: str, r: dict) -> dict:
    """The numbers the paper's claim is about, by name."""
    if method == "cmn":
        keys = ("fp_acc", "lo_acc", "hi_acc", "cascade_acc", "tau", "exit_rate", "prune_ratio", "avg_bits",
                "avg_bits_real", "val_eta", "eta_source", "fp_source")
    elif method in ("ppq", "spq"):
        keys = ("baseline_acc", "compressed_acc", "acc_drop", "size_reduction", "bops_reduction",
                "paper_size_reduction", "paper_bops_reduction", "start")
    else:
        keys = ("predictor_pairwise_acc", "chosen_acc", "chosen_latency_ms", "baseline_8bit_acc",
                "baseline_8bit_latency_ms", "uniform_same_budget")
    return {k: r.get(k) for k in keys}


def collect(method: str, run_dir: str, out_dir: str, wall_s: float, dry_run: bool = False) -> str:
    """Write <out_dir>/<method>.json (device, versions, epochs, wall time, the headline numbers, the whole
    result) and copy the run's plots beside it; a run that did not finish says so (``finished: false``)."""
    if method not in METHODS:
        raise ValueError(f"collect: 'method' expected one of {METHODS}, got {method!r}")
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = os.path.join(run_dir, "config.yaml")
    cfg = {}
    if os.path.exists(cfg_path):
        import yaml

        with open(cfg_path) as f:
            cfg = yaml.safe_load(f) or {}
    result_path = os.path.join(run_dir, RESULT_FILE[method])
    result = None
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    plots = []
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if name.endswith(".png"):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(out_dir, f"{method}_{name}"))
            plots.append(f"{method}_{name}")
    summary = {
        "method": method, "finished": result is not None, "dry_run": dry_run, "device": _device(),
        "torch": torch.__version__, "python": platform.python_version(), "wall_s": round(float(wall_s), 1),
        "epochs": _epochs(cfg, method) if cfg else None, "data": cfg.get("data", {}).get("spec"),
        **(_headline(method, result) if result else {}), "plots": plots,
        "result": {k: v for k, v in (result or {}).items() if k not in ("table", "cost_table", "run_dir", "plots")},
    }
    path = os.path.join(out_dir, f"{method}.json")
    write_text_atomic(path, json.dumps(summary, indent=2, default=str))
    return path


def pack(run_dir: str, tar_path: str, limit: int = LIMIT) -> dict:
    """Pack what continuing ``run_dir`` needs into ``tar_path`` (gzip), the smallest files first, leaving out
    what would take it past ``limit`` bytes (uncompressed sizes: weights hardly compress). Returns what was
    packed and left out."""
    files = []
    for root, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(KEEP) or (name.startswith("hi_phi") and name.endswith(".pt")):
                files.append((os.path.getsize(path), path))
    packed, left, total = [], [], 0
    with tarfile.open(tar_path, "w:gz") as tar:
        for size, path in sorted(files):
            rel = os.path.relpath(path, run_dir)
            if total + size > limit:
                left.append(rel)
                continue
            tar.add(path, arcname=rel)
            packed.append(rel)
            total += size
    return {"packed": len(packed), "left_out": left, "bytes": total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cmn_ext.bench.repro")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("method", choices=METHODS)
    c.add_argument("run_dir")
    c.add_argument("out_dir")
    c.add_argument("wall_s", type=float)
    c.add_argument("--dry-run", action="store_true")
    k = sub.add_parser("pack")
    k.add_argument("run_dir")
    k.add_argument("tar_path")
    args = p.parse_args(argv)
    if args.cmd == "collect":
        print(collect(args.method, args.run_dir, args.out_dir, args.wall_s, args.dry_run))
    else:
        print(json.dumps(pack(args.run_dir, args.tar_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
