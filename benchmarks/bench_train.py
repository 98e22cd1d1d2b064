"""Training throughput of the trainer's two data paths, side by side on one device.

    python benchmarks/bench_train.py [--device auto|cpu|cuda] [--data digits|cifar10:<root>[,...]] [--images N]
                                     [--eval-images N] [--epochs E] [--warmup W] [--schemes fp,binary,int8,apot] [--paths old,new]
                                     [--batch-size 128] [--channels-last auto|on|off] [--compile [MODE]] [--threads T]
                                     [--out benchmarks/results]

old: the per-sample path (``build_datasets(..., tensors=False)``: every image decoded and transformed on each
     access, batches collated by a DataLoader, NCHW inputs).
new: the fast path (the split decoded once into the tensor cache, loaded whole onto the device, augmented,
     normalised and laid out there per batch; channels-last per --channels-last; optional torch.compile).

ResNet-20 full precision and QAT (``cmn_ext.Binary()``, ``Int8()``, ``APoT()``; edge layers as those schemes
default). Every (scheme, path) pair has its own trainer, and the epochs run interleaved (epoch e of every pair,
then epoch e + 1, ...), so a change in machine load hits both paths alike; ``epoch s`` is the fastest timed epoch
(the median is in the JSON); ``data s`` is the data path alone (one epoch of batches made and moved to the
device, no network; best of 3); after each epoch the pair evaluates --eval-images test images (timed, in the JSON).
``--data cifar10:<root>``: <root> is an ImageFolder tree with train/ and test/ (or
its .tar.gz, e.g. the CIFAR-10 JPEG set) or a torchvision CIFAR-10 directory. ``--images 0``: the whole train
split. Writes <out>/train_<device>.json (environment, shapes, every epoch's time) and .md.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch

import cmn_ext
from cmn_ext.data import build_datasets
from cmn_ext.models import build_model
from cmn_ext.train import Trainer, evaluate

SCHEMES = {"fp": None, "binary": cmn_ext.Binary(), "int8": cmn_ext.Int8(), "apot": cmn_ext.APoT()}


def data_spec(data: str) -> str:
    name, _, root = data.partition(":")
    if name == "digits":
        return "digits"
    if name != "cifar10" or not root:
        raise SystemExit(f"--data expected digits or cifar10:<root>, got {data!r}")
    if root.endswith((".tar.gz", ".tgz", ".tar")) or os.path.isdir(os.path.join(root, "train")):
        return f"imagefolder:{root}"
    return f"cifar10:{root}"


def label(spec: str) -> str:
    """The spec with its root by name only (no machine paths in the results)."""
    name, _, root = spec.partition(":")
    return f"{name}:{os.path.basename(os.path.normpath(root))}" if root else name


def label_arg(arg: str) -> str:
    """A command-line argument with data roots by name only."""
    if ":" not in arg or arg.startswith("-"):
        return arg
    return ",".join(label(part) if ":" in part else part for part in arg.split(","))


def environment(device: torch.device) -> dict:
    from cmn_ext.bench.cpu import cpu_model

    env = {"torch": torch.__version__, "python": platform.python_version(), "cmn_ext": cmn_ext.__version__
           if hasattr(cmn_ext, "__version__") else None, "threads": torch.get_num_threads(), "cpu": cpu_model()}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=p.name, cuda=torch.version.cuda, memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}")
    else:
        env["device"] = f"cpu: {env['cpu']}"
    if hasattr(os, "getloadavg"):
        env["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return env


def slug(env: dict, device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu"
    return "".join(ch if ch.isalnum() else "_" for ch in env["device"].lower()).strip("_")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--data", default="digits", help="digits or cifar10:<root>, or several, comma-separated")
    parser.add_argument("--images", type=int, default=512, help="train images per epoch (0: the whole split)")
    parser.add_argument("--eval-images", type=int, default=256, help="test images evaluated after each epoch "
                        "(0: the whole split)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per (scheme, path)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first (allocations, oneDNN / cuDNN "
                        "set-up, optimizer state, compile)")
    parser.add_argument("--schemes", default="fp,binary,int8,apot")
    parser.add_argument("--paths", default="old,new")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                        help="new path's input layout (auto: the trainer's default)")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        help="torch.compile the network on the new path (optionally a mode, e.g. reduce-overhead)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else torch.device(args.device)
    warmup = args.warmup
    schemes = [s for s in args.schemes.split(",") if s]
    paths = [p for p in args.paths.split(",") if p]
    for s in schemes:
        if s not in SCHEMES:
            raise SystemExit(f"--schemes: unknown {s!r}; expected some of {','.join(SCHEMES)}")
    for p in paths:
        if p not in ("old", "new"):
            raise SystemExit(f"--paths: unknown {p!r}; expected old and/or new")
    specs = [data_spec(d) for d in args.data.split(",") if d]
    env = environment(device)
    print(f"{env['device']}, torch {env['torch']}, {env['threads']} threads", file=sys.stderr)
    cl = {"auto": None, "on": True, "off": False}[args.channels_last]
    rows, shapes, build_s = [], {}, {}
    for spec in specs:
        r, shapes[label(spec)], build_s[label(spec)] = bench_data(spec, args, device, env, schemes, paths, warmup, cl)
        rows += r
    if hasattr(os, "getloadavg"):
        env["load_average_end"] = [round(v, 2) for v in os.getloadavg()]

    table = markdown_table(rows, paths)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"train_{slug(env, device)}")
    command = " ".join(label_arg(a) for a in sys.argv[1:])
    record = {"environment": env, "shapes": shapes, "dataset_build_s": build_s, "command": command, "results": rows}
    with open(base + ".json", "w") as f:
        json.dump(record, f, indent=2)
    some = next(iter(shapes.values()))
    with open(base + ".md", "w") as f:
        f.write(f"Device: {env['device']} ({env['threads']} threads), torch {env['torch']}, Python {env['python']}. "
                f"Batch {args.batch_size}, {args.epochs} timed epoch(s) after {warmup} warm-up, old and new "
                f"interleaved; epoch s = the fastest timed training epoch (medians, per-epoch times and "
                f"evaluation times in the JSON); data s = the data path alone (batches made and on the device, "
                f"no network; best of 3). Train images per epoch: "
                f"{ {k: v['train_images'] for k, v in shapes.items()} }, input {tuple(some['input'])}. "
                f"Load average {env.get('load_average_start')} -> {env.get('load_average_end')}. "
                f"One-time dataset build (s): {build_s}.\n\n"
                f"Command: `python benchmarks/bench_train.py {command}`\n\n{table}\n")
    print(table)
    print(f"\nwrote {base}.json and {base}.md", file=sys.stderr)


def bench_data(spec, args, device, env, schemes, paths, warmup, cl):
    print(f"data {spec}", file=sys.stderr)
    limit = {"train": args.images or None, "test": args.eval_images or None}
    data, build_s = {}, {}
    for p in paths:
        t0 = time.perf_counter()
        data[p] = build_datasets(spec, val_fraction=0.0, seed=0, limit=limit, tensors=(p == "new"))
        build_s[p] = round(time.perf_counter() - t0, 2)
    some = next(iter(data.values()))
    n_images, n_eval = len(some.train), len(some.test)

    cfg = {"epochs": warmup + args.epochs, "batch_size": args.batch_size, "lr": 0.05, "schedule": "none",
           "seed": 0, "amp": True, "weight_decay": 5e-4}
    trainers = {}
    for s in schemes:
        for p in paths:
            torch.manual_seed(0)
            model = build_model(args.model, data[p].num_classes)
            if SCHEMES[s] is not None:
                cmn_ext.quantize_(model, SCHEMES[s])
            t = Trainer(model, data[p], dict(cfg), None, device=device, progress=False)
            t.fast_data = p == "new"
            if p == "old":
                t.channels_last = False  # the old path's layout
            elif cl is not None:
                t.channels_last = cl  # else the trainer's default
            t.compile = args.compile if p == "new" else False
            trainers[s, p] = t

    for (s, p), t in trainers.items():  # one untimed step of each network first: kernel / primitive set-up
        warm = copy.deepcopy(t.model).train()
        x = torch.randn(args.batch_size, *some.input_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if p == "new" and t._channels_last() else x
        warm(x).float().sum().backward()
        del warm
    data_s = {}  # the data path alone: one epoch of batches made and on the device, no network (best of 3)
    for p in paths:
        t = trainers[schemes[0], p]
        best = float("inf")
        for _ in range(3):
            sync(device)
            t0 = time.perf_counter()
            for x, y in t._loader(0):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        data_s[p] = best
    times = {k: [] for k in trainers}
    evals = {k: [] for k in trainers}
    losses = {k: [] for k in trainers}
    for epoch in range(warmup + args.epochs):
        for (s, p), t in trainers.items():
            sync(device)
            t0 = time.perf_counter()
            row = t.train_epoch(epoch)
            sync(device)
            t1 = time.perf_counter()
            evaluate(t.model, data[p].test, batch_size=256, device=device, amp=True)
            sync(device)
            t2 = time.perf_counter()
            losses[s, p].append(round(row["train_loss"], 4))
            if epoch >= warmup:
                times[s, p].append(t1 - t0)
                evals[s, p].append(t2 - t1)
            print(f"  {s:7s} {p}  epoch {epoch + 1}{' (warm-up)' if epoch < warmup else ''}: train {t1 - t0:.2f} s, "
                  f"eval {t2 - t1:.2f} s", file=sys.stderr)

    rows = []
    for s in schemes:
        row = {"model": args.model, "scheme": s, "data": label(spec), "device": env["device"]}
        for p in paths:
            ts, es = times[s, p], evals[s, p]
            t = trainers[s, p]
            row[p] = {"epoch_s": round(min(ts), 3), "epoch_s_median": round(statistics.median(ts), 3),
                      "epoch_s_all": [round(v, 3) for v in ts], "images_per_s": round(n_images / min(ts), 1),
                      "data_only_epoch_s": round(data_s[p], 3), "eval_s": round(min(es), 3), "eval_images_per_s": round(n_eval / min(es), 1),
                      "train_loss": losses[s, p],
                      "channels_last": t._channels_last() if p == "new" else False, "compile": t.compile}
        if "old" in paths and "new" in paths:
            row["speedup"] = round(row["old"]["epoch_s"] / row["new"]["epoch_s"], 2)
            row["speedup_median"] = round(row["old"]["epoch_s_median"] / row["new"]["epoch_s_median"], 2)
            row["eval_speedup"] = round(row["old"]["eval_s"] / row["new"]["eval_s"], 2)
        rows.append(row)
    shapes = {"train_images": n_images, "eval_images": n_eval, "input": list(some.input_size),
              "batch_size": args.batch_size, "steps_per_epoch": -(-n_images // args.batch_size),
              "timed_epochs": args.epochs, "warmup_epochs": warmup}
    return rows, shapes, build_s


def markdown_table(rows: list[dict], paths: list[str]) -> str:
    head = "| model | scheme | data | device |"
    rule = "|---|---|---|---|"
    for p in paths:
        head += f" {p} images/s | {p} epoch s | {p} data s |"
        rule += "---:|---:|---:|"
    if "old" in paths and "new" in paths:
        head += " new vs old |"
        rule += "---:|"
    lines = [head, rule]
    for r in rows:
        line = f"| {r['model']} | {r['scheme']} | {r['data']} | {r['device']} |"
        for p in paths:
            line += f" {r[p]['images_per_s']:.0f} | {r[p]['epoch_s']:.2f} | {r[p]['data_only_epoch_s']:.3f} |"
        if "speedup" in r:
            line += f" x{r['speedup']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
