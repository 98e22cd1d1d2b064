"""The ``cmn`` command line.

    cmn info [--json] [--bench]
    cmn train    [CONFIG.yaml] [key=value ...] [--resume] [--run-dir DIR] [--json]
    cmn compress [CONFIG.yaml] [key=value ...] [--method spq|ppq] [--resume] [--run-dir DIR] [--json]
    cmn eval     [CONFIG.yaml] [key=value ...] --weights FILE [--model NAME] [--data SPEC] [--split test] [--json]
    cmn convert  [CONFIG.yaml] [key=value ...] --checkpoint FILE --out FILE [--batches N] [--json]
    cmn cascade  [CONFIG.yaml] [key=value ...] [--restart] [--device auto|cpu|cuda] [--json]
                 (default config: the digits demo)

Progress and logs go to stderr; stdout holds only the result (JSON with --json), so it stays parseable.
"""

import argparse
import json
import sys


def _cmd_info(args) -> int:
    import cmn_ext

    info = cmn_ext.build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"cmn_ext {info['version']}  (torch {info['torch']}, built against {info['built_with_torch']})")
        print(f"  compiler: {info['compiler']}")
        cuda = f"yes ({info['cuda_compiler']}, architectures {', '.join(info['cuda_archs'])})" if info["cuda_built"] else "no"
        print(f"  CUDA sources compiled: {cuda};  CUDA device available: {'yes' if info['cuda_available'] else 'no'}")
        print("  ops (backends with a kernel):")
        for name, keys in info["ops"].items():
            print(f"    torch.ops.cmn.{name:<14} {', '.join(keys) or '-'}")
        cpu = info["cpu"]
        print(f"  CPU features: {' '.join(cpu['features']) or '-'};  int8 Winograd: {'on' if cpu['winograd'] else 'off'}")
        for family in ("int8", "binary"):
            paths = cpu[family]
            print(f"    {family:<6} path {paths['selected']:<14} (this CPU runs: {', '.join(paths['available'])}) "
                  f"for {', '.join(paths['ops'])}")
    if args.bench:
        from .bench import cpu as bench_cpu

        env = bench_cpu.environment()
        print(f"\nQuick CPU benchmark ({env['device']}, {env['threads']} threads): cmn kernel vs PyTorch, same shape")
        rows = bench_cpu.run(bench_cpu.QUICK_CASES, repeats=args.repeats, progress=False)
        print(bench_cpu.markdown_table(rows))
    return 0


def _config(args, extra: list[str] | None = None, recipe: str | None = None):
    from .config import load_config

    path = None
    rest = list(args.args)
    if rest and rest[0].endswith((".yaml", ".yml")):
        path = rest.pop(0)
    bad = [a for a in rest if "=" not in a]
    if bad:
        raise SystemExit(f"cmn: expected key=value overrides after the config, got {bad}")
    return load_config(path, rest + (extra or []), recipe)


def _emit(args, result: dict, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif text is not None:
        print(text)
    else:
        print(json.dumps(result, indent=2, default=str))


def _cmd_train(args, compress: bool = False) -> int:
    from . import runner

    extra = [f"run_dir={args.run_dir}"] if args.run_dir else []
    if compress and getattr(args, "method", None):
        from .compress import pipeline

        # The recipe's training settings (the papers' plateau schedule) sit under the file and the overrides.
        cfg = _config(args, extra, recipe="compress")
        res = pipeline.run(cfg, args.method, progress=not args.no_progress)
        _emit(args, {k: v for k, v in res.items() if k not in ("table", "cost_table")},
              f"{res['table']}\n\n{res['cost_table']}\n\nstart: {res['start']}; run directory: {res['run_dir']}")
        return 0
    cfg = _config(args, extra)
    if compress and not cfg.needs_qat_layers():
        raise SystemExit("cmn compress: the config has neither 'quant' nor 'prune'; use cmn train for plain training")
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    summary = runner.train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if "table" not in summary:  # a non-zero torchrun rank
        return 0
    test = summary["test"]
    text = (f"run directory: {summary['run_dir']}\n"
            f"test top-1 {test['top1']:.4f}  top-5 {test['top5']:.4f}  (n = {test['n']})\n\n{summary['table']}")
    if "convert" in summary:
        c = summary["convert"]
        text += (f"\n\ndeploy model: {c['path']}  kernels {c['kernels']}  argmax agreement "
                 f"{c['check']['argmax_agree']:.4f}  max |logit diff| {c['check']['max_abs_diff']:.3g}")
    _emit(args, summary, text)
    return 0


def _cmd_eval(args) -> int:
    from . import runner

    extra = []
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.data:
        extra.append(f"data.spec={args.data}")
    cfg = _config(args, extra)
    res = runner.evaluate_weights(cfg, args.weights, split=args.split, progress=not args.no_progress)
    text = (f"{res['split']} top-1 {res['top1']:.4f}  top-5 {res['top5']:.4f}  (n = {res['n']})  "
            f"MACs {res['macs'] / 1e6:.2f} M  params {res['params'] / 1e6:.3f} M")
    _emit(args, res, text)
    return 0


def _cmd_convert(args) -> int:
    from . import runner

    extra = [f"data.spec={args.data}"] if args.data else []
    cfg = _config(args, extra)
    res = runner.convert_checkpoint(cfg, args.checkpoint, args.out, batches=args.batches)
    lines = [f"{r['layer']:<28} {r['kernel'] or 'float':<7} {r['note']}" for r in res["layers"]]
    c = res["check"]
    lines.append(f"\nsaved {res['path']}: argmax agreement {c['argmax_agree']:.4f}, max |logit diff| "
                 f"{c['max_abs_diff']:.3g} ({c['max_rel_diff']:.3g} relative), n = {c['n']}")
    _emit(args, res, "\n".join(lines))
    return 0


def _cmd_cascade(args) -> int:
    import os
    import shutil

    from . import runner
    from .cascade import pipeline

    rest = list(args.args)
    if not (rest and rest[0].endswith((".yaml", ".yml"))):
        args.args = [pipeline.DEFAULT_CONFIG] + rest
    cfg = _config(args, [f"cascade.deploy_device={args.device}"] if args.device else None)
    run_dir = runner.run_dir_of(cfg)
    if args.restart and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    elif os.path.isdir(run_dir):
        runner.log(f"[cmn] continuing in {run_dir} (finished steps are reused; --restart starts over)")
    report = pipeline.run(cfg.replace(run_dir=run_dir), progress=not args.no_progress)
    if args.json:
        keep = {k: v for k, v in report.items() if k not in ("table", "cascades")}
        keep["cascades"] = [{k: v for k, v in c.items() if k not in ("search", "initial", "stages")}
                            for c in report["cascades"]]
        print(json.dumps(keep, indent=2, default=str))
    else:
        print(report["table"])
        if report["plots"]:
            print("\nplots: " + ", ".join(report["plots"]))
        print(f"report: {os.path.join(run_dir, 'report.json')}")
    return 0


def _cmd_search(args) -> int:
    import os
    import shutil

    from . import runner
    from .search import pipeline

    rest = list(args.args)
    if not (rest and rest[0].endswith((".yaml", ".yml"))):
        args.args = [pipeline.DEFAULT_CONFIG] + rest
    extra = []
    if args.shard:
        rank, _, world = args.shard.partition("/")
        if not (rank.isdigit() and world.isdigit() and int(rank) < int(world)):
            raise SystemExit(f"cmn search: --shard expected RANK/WORLD like 0/4, got {args.shard!r}")
        extra.append(f"search.pairs.shard=[{rank}, {world}]")
    cfg = _config(args, extra)
    run_dir = runner.run_dir_of(cfg)
    if args.restart and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    elif os.path.isdir(run_dir):
        runner.log(f"[cmn] continuing in {run_dir} (finished stages are reused; --restart starts over)")
    stages = pipeline.STAGES if args.stage == "all" else tuple(args.stage.split(","))
    search = pipeline.Search(cfg.replace(run_dir=run_dir), progress=not args.no_progress)
    result = search.run(stages)
    if "finalize" in stages:
        with open(os.path.join(run_dir, "final.json")) as f:
            final = json.load(f)
        keys = ("predictor_pairwise_acc", "pairs_fp", "pairs_quant", "chosen_acc", "chosen_latency_ms",
                "baseline_8bit_acc", "baseline_8bit_latency_ms", "baseline_4bit_acc", "baseline_4bit_latency_ms",
                "device", "plot")
        result["final"] = {k: final[k] for k in keys}
    _emit(args, result)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cmn", description="cmn_ext: compressed networks on real low-bit kernels")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print how the extension was built and which op backends exist")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--bench", action="store_true", help="also run a quick CPU benchmark against PyTorch")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per case (median is reported)")
    p.set_defaults(func=_cmd_info)

    def common(p):
        p.add_argument("args", nargs="*", metavar="CONFIG|key=value",
                       help="an optional YAML config (configs/*.yaml) followed by key=value overrides")
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")

    for name, helptext, compress in (("train", "train a model from a config", False),
                                     ("compress", "quantize and/or prune a (pretrained) model and fine-tune it", True)):
        p = sub.add_parser(name, help=helptext)
        common(p)
        p.add_argument("--resume", action="store_true", help="continue from <run_dir>/last.pt")
        p.add_argument("--overwrite", action="store_true",
                       help="start over in a run directory that already holds a run (its run files are removed)")
        p.add_argument("--run-dir", help="run directory (default runs/<name or model-time>)")
        if compress:
            p.add_argument("--method", choices=["spq", "ppq"],
                           help="run the SPQ or PPQ pipeline (FPGM + APoT 4-bit) instead of a generic compress")
        p.set_defaults(func=lambda a, c=compress: _cmd_train(a, c))

    p = sub.add_parser("eval", help="evaluate a weights file: state dict, trainer checkpoint or deploy model")
    common(p)
    p.add_argument("--weights", required=True, help="weights file")
    p.add_argument("--model", help="model name for a bare state dict (e.g. resnet20)")
    p.add_argument("--data", help="dataset spec: digits, cifar10[:root], cifar100[:root], imagefolder:<root>")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("convert", help="convert a QAT checkpoint into a deploy model on torch.ops.cmn kernels")
    common(p)
    p.add_argument("--checkpoint", required=True, help="trainer checkpoint: <run_dir>/final.pt, best.pt or last.pt")
    p.add_argument("--out", required=True, help="deploy file to write")
    p.add_argument("--data", help="dataset for the equality check (default: the checkpoint's)")
    p.add_argument("--batches", type=int, default=4, help="test batches compared between QAT and deploy models")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("cascade", help="the CMN recipe: FP -> 1-bit and 8-bit nets -> Algorithm 1 -> deploy cascade")
    common(p)
    p.add_argument("--restart", action="store_true", help="delete the run directory first instead of continuing")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where the deploy cascade runs (cascade.deploy_device; default auto: the fastest present)")
    p.set_defaults(func=_cmd_cascade)

    p = sub.add_parser("search", help="APQ: supernet, accuracy predictor, latency table, evolutionary search")
    common(p)
    p.add_argument("--stage", default="all",
                   help="all, or a comma-separated list of: supernet, pairs, predictor, cost, evolve, finalize")
    p.add_argument("--shard", help="RANK/WORLD: measure only this worker's share of the pairs (run the 'pairs' "
                                   "stage in several processes, then the rest in one)")
    p.add_argument("--restart", action="store_true", help="delete the run directory first instead of continuing")
    p.set_defaults(func=_cmd_search)

    # key=value overrides may come after flags too (argparse alone stops collecting positionals at a flag).
    args, rest = parser.parse_known_args(argv)
    stray = [a for a in rest if a.startswith("-") or "=" not in a or not hasattr(args, "args")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if rest:
        args.args = list(args.args) + rest
    from .files import RunDirBusyError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, RunDirBusyError) as e:
        print(f"cmn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
