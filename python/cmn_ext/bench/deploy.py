"""End-to-end deploy benchmark (issue 14): compressed CIFAR ResNet-20s on the deploy engine against the same
network in PyTorch fp32 (the faster of NCHW and channels_last) and, when ``onnxruntime`` is installed, ONNX
Runtime fp32 and static int8 (QDQ, per-channel weights, calibrated on real images), side by side in one run.

Schemes (from the pretrained ResNet-20 when its weights are given, else a randomly initialised one):
  binary        CMN's 1-bit stage: binary weights, {0,1} activations, full-precision first and last layers
  int8          w8a8: linear 8-bit weights (per channel) and activations (KL clip), 8-bit first / last layers
  int8_pruned   int8 with 50 % of the filters FPGM-pruned (first layer kept), pruned filters removed
  apot          APoT 4-bit weights and activations (SPQ/PPQ), 8-bit first / last layers
  cascade       the CMN cascade: binary, then int8_pruned on the rows below the confidence threshold

Timing: every model is warmed up, then the models are timed in interleaved rounds (each round runs each model
once on the same batch). Images/s is each model's fastest round; "vs torch fp32" is the median over rounds of
the paired ratio (the round's torch fp32 time, the faster of NCHW and channels_last, over the model's time in
the same round), so that the slow drifts of a shared machine's speed cancel. ONNX Runtime is timed in rounds of
its own (its worker threads keep spinning after a run, its default, which would slow whatever runs next), so
its rows and every "vs ORT int8" compare fastest rounds. Agreement: the fraction of top-1 predictions equal to the QAT model's, on real
CIFAR-10 test images when a data root is given (else on random inputs, reported as such).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..models import build_model, load_pretrained
from .cpu import cpu_model
from ..nn import convert, quantize_model
from ..nn.engine import build_engine

INT8 = {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "linear", "bits": 8}, "first": "8bit", "last": "8bit"}
SCHEMES = {
    "binary": {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": "01"}, "first": "fp",
               "last": "fp"},
    "int8": INT8,
    "int8_pruned": INT8,  # pruned after quantize_model (build)
    "apot": {"weight": {"kind": "apot", "bits": 4}, "act": {"kind": "apot", "bits": 4}, "first": "8bit",
             "last": "8bit"},
}


def machine() -> dict:
    """CPU model, its flags that matter to the kernels, thread count, versions."""
    import cmn_ext

    info = cmn_ext.ops.cpu_paths()
    gpu = {"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}
    return {**gpu, "cpu": cpu_model(), "features": info["features"], "threads": torch.get_num_threads(),
            "int8_path": info["int8"]["selected"], "binary_path": info["binary"]["selected"],
            "winograd": info["winograd"], "torch": torch.__version__, "cmn_ext": cmn_ext.__version__,
            "python": platform.python_version()}


def _qat_model(scheme: str, weights: str | None, calib: torch.Tensor, arch: str = "resnet20") -> nn.Module:
    from ..prune import Pruner, remove_pruned_filters

    model = build_model(arch, 10)
    if weights:
        load_pretrained(model, weights)
    quantize_model(model, SCHEMES[scheme])
    if scheme == "int8_pruned":
        Pruner(model, "fpgm", 0.5, exclude=["first"]).prune_to(0.5)
        remove_pruned_filters(model)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(calib), 64):  # calibrates the activation clips (KL) on the first batch
            model(calib[i:i + 64])
    return model


def _time(models: dict, x: torch.Tensor, rounds: int, inner: int) -> dict:
    """Seconds per call of each model on x in each of `rounds` interleaved rounds of `inner` calls (the device
    synchronised around each round)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = {name: [] for name in models}
    with torch.no_grad():
        for fn in models.values():
            fn(x)
            fn(x)
        for _ in range(rounds):
            for name, fn in models.items():
                sync()
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn(x)
                sync()
                times[name].append((time.perf_counter() - t0) / inner)
    return times


def _paired_ratio(base: list, other: list) -> float:
    """The median over rounds of base time / other time (each round ran both back to back): slow drifts of the
    machine's speed cancel in each pair."""
    ratios = sorted(b / o for b, o in zip(base, other))
    return ratios[len(ratios) // 2]


def _onnx_sessions(fp: nn.Module, calib: torch.Tensor, workdir: str) -> dict:
    """ONNX Runtime fp32 and static int8 (QDQ, per-channel, pre-processed) sessions of the float model, or {}
    when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        return {}
    os.makedirs(workdir, exist_ok=True)
    fp32_path, pre_path, int8_path = (os.path.join(workdir, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
    torch.onnx.export(fp, (calib[:1],), fp32_path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    quant_pre_process(fp32_path, pre_path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calib[i:i + 32].numpy()} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(pre_path, int8_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = {}
    for name, path in (("onnxruntime fp32", fp32_path), ("onnxruntime int8", int8_path)):
        s = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        sessions[name] = lambda x, s=s: s.run(None, {"x": x.numpy()})[0]
    return sessions


def _agreement(qat: nn.Module, deploy: nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        same = sum(int((qat(images[i:i + 250]).argmax(1) == deploy(images[i:i + 250]).argmax(1)).sum())
                   for i in range(0, len(images), 250))
    return same / len(images)


def _cascade_threshold(lo: nn.Module, images: torch.Tensor, exit_fraction: float = 0.5) -> float:
    """The softmax-confidence threshold at which `exit_fraction` of the images exit at stage 1."""
    with torch.no_grad():
        conf = torch.cat([F.softmax(lo(images[i:i + 250]), 1).amax(1) for i in range(0, len(images), 250)])
    return float(conf.quantile(1 - exit_fraction))


def run(weights: str | None = None, data: str | None = None, batches=(256, 1), rounds: int = 5,
        agree_images: int = 1000, onnx: bool = True, workdir: str = "runs/bench_deploy", log=print,
        arch: str = "resnet20", device: str = "cpu") -> dict:
    from ..cascade.cascade import Cascade

    torch.manual_seed(0)
    if data:
        from ..data import build_datasets

        ds = build_datasets(data, val_fraction=0.0, augment=False, limit={"train": 512, "test": agree_images})
        calib = torch.stack([ds.train[i][0] for i in range(256)])
        images = torch.stack([ds.test[i][0] for i in range(len(ds.test))])
        source = f"CIFAR-10 test images ({len(images)})"
    else:
        calib = torch.randn(256, 3, 32, 32)
        images = torch.randn(agree_images, 3, 32, 32)
        source = f"random inputs ({len(images)}); pass a data root for real images"
    fp = build_model(arch, 10)
    if weights:
        load_pretrained(fp, weights)
    fp.eval()
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)

    log("[bench_deploy] quantizing, converting")
    qat, engines, agree = {}, {}, {}
    for scheme in SCHEMES:
        qat[scheme] = _qat_model(scheme, weights, calib, arch)
        engines[scheme] = build_engine(convert(qat[scheme])[0])
        agree[scheme] = _agreement(qat[scheme], engines[scheme], images)
    threshold = _cascade_threshold(engines["binary"], images)
    cascade = Cascade([engines["binary"], engines["int8_pruned"]], [threshold]).eval()
    qat_cascade = Cascade([qat["binary"], qat["int8_pruned"]], [threshold]).eval()
    agree["cascade"] = _agreement(qat_cascade, cascade, images)
    with torch.no_grad():
        exit_rate = float(cascade.run(images).exit_stage.eq(0).double().mean())
    sessions = _onnx_sessions(fp, calib, workdir) if onnx and device == "cpu" else {}
    dev = torch.device(device)
    if dev.type == "cuda":  # the deploy engines on the GPU (agreement was measured on the CPU kernels)
        cascade = Cascade([engines["binary"].to(dev), engines["int8_pruned"].to(dev)], [threshold]).eval()
        for e in engines.values():
            e.to(dev)

    results = {"machine": machine(), "model": arch, "device": str(dev), "agreement_source": source, "weights": os.path.basename(weights) if weights
               else None, "cascade": {"threshold": threshold, "exit_rate": exit_rate}, "rows": []}
    for batch in batches:
        x = images[:batch] if batch <= len(images) else torch.cat([images] * (batch // len(images) + 1))[:batch]
        x = x.to(dev)
        models = {"torch fp32 NCHW": fp.to(dev), "torch fp32 channels_last": lambda t: fp_cl.to(dev)(
            t.contiguous(memory_format=torch.channels_last))}
        if dev.type == "cuda":  # what a GPU user would run: cuDNN fp16 channels_last
            fp16 = copy.deepcopy(fp_cl).to(dev).half()
            models["torch fp16 channels_last"] = lambda t: fp16(t.half().contiguous(memory_format=torch.channels_last))
        models.update({f"cmn {s}": e for s, e in engines.items()})
        models["cmn cascade"] = cascade
        log(f"[bench_deploy] timing batch {batch}")
        inner = 1 if batch >= 64 else 20
        n_rounds = rounds if batch >= 64 else 4 * rounds
        times = _time(models, x, n_rounds, inner)
        baselines = [n for n in times if n.startswith("torch fp16")] or ["torch fp32 NCHW", "torch fp32 channels_last"]
        torch_best = [min(ts) for ts in zip(*(times[n] for n in baselines))]
        rows = {name: (t, _paired_ratio(torch_best, t)) for name, t in times.items()}
        if sessions:  # rounds of their own; compared by fastest round (their spinning threads disturb pairs)
            extra = _time(sessions, x, n_rounds, inner)
            rows.update({name: (t, min(torch_best) / min(t)) for name, t in extra.items()})
        ort_int8 = min(rows["onnxruntime int8"][0]) if "onnxruntime int8" in rows else None
        for name, (t, vs_torch) in rows.items():
            scheme = name.removeprefix("cmn ")
            results["rows"].append({
                "batch": batch, "model": name, "images_per_s": batch / min(t), "ms_per_batch": min(t) * 1e3,
                "vs_torch_fp32": vs_torch, "vs_onnxruntime_int8": ort_int8 / min(t) if ort_int8 else None,
                "baseline": " / ".join(baselines),
                "agree_with_qat": agree.get(scheme) if name.startswith("cmn ") else None})
    return results


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['threads']} threads; CPU features: {', '.join(m['features']) or 'none'}; "
             f"kernel paths: int8 `{m['int8_path']}` (Winograd {'on' if m['winograd'] else 'off'}), binary "
             f"`{m['binary_path']}`; torch {m['torch']}, cmn_ext {m['cmn_ext']}.",
             f"Agreement with the QAT model on {results['agreement_source']}. Cascade: threshold "
             f"{results['cascade']['threshold']:.3f}, {100 * results['cascade']['exit_rate']:.1f} % of the images "
             "exit at the binary stage.", "",
             f"Device: {results.get('device', 'cpu')}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}. Images/s: the "
             "fastest of the interleaved rounds. vs torch: against the same network in PyTorch, the faster of fp32 "
             "NCHW and channels_last on a CPU, fp16 channels_last on a GPU; the median of per-round paired ratios "
             "(ONNX Runtime rows: ratio of fastest rounds). vs ORT int8: ratio of fastest rounds.", "",
             "| batch | model | images/s | ms / batch | vs torch | vs ORT int8 | top-1 agreement with QAT |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        ort = f"{r['vs_onnxruntime_int8']:.2f}x" if r["vs_onnxruntime_int8"] else "-"
        agree = f"{100 * r['agree_with_qat']:.1f} %" if r["agree_with_qat"] is not None else "-"
        lines.append(f"| {r['batch']} | {r['model']} | {r['images_per_s']:.0f} | {r['ms_per_batch']:.2f} | "
                     f"{r['vs_torch_fp32']:.2f}x | {ort} | {agree} |")
    return "\n".join(lines) + "\n"


SCHEME_LABELS = {"cmn binary": "binary (CMN 1-bit stage)", "cmn int8": "int8 w8a8",
                 "cmn int8_pruned": "int8, 50 % filters FPGM-pruned", "cmn apot": "APoT 4/4",
                 "cmn cascade": "CMN cascade (binary → pruned int8)"}
# The deploy-engine issue's targets on CPU: (label, model, batch, field, goal)
TARGETS = [("binary ≥ 4× torch fp32 (batch 256)", "cmn binary", "vs_torch_fp32", 4.0),
           ("int8 dense ≥ 2× torch fp32", "cmn int8", "vs_torch_fp32", 2.0),
           ("int8 dense ≥ ONNX Runtime int8", "cmn int8", "vs_onnxruntime_int8", 1.0),
           ("int8, 50 % pruned ≥ 3× torch fp32", "cmn int8_pruned", "vs_torch_fp32", 3.0),
           ("APoT 4/4 ≥ 2× torch fp32", "cmn apot", "vs_torch_fp32", 2.0)]


def summary(results: dict) -> str:
    """A short table per scheme (batch 256, its batch-1 ratio) and the targets, from the measured rows."""
    rows = results["rows"]
    batches = sorted({r["batch"] for r in rows}, reverse=True)
    big, small = batches[0], batches[-1]

    def get(batch, model):
        return next((r for r in rows if r["batch"] == batch and r["model"] == model), None)

    ratio = lambda v: f"{v:.2f}×" if v is not None else "-"  # noqa: E731
    lines = [f"| scheme | images/s, batch {big} | vs torch fp32 | vs ONNX Runtime int8 | batch {small} vs torch fp32 "
             "| top-1 agreement with QAT |", "|---|---:|---:|---:|---:|---:|"]
    for model, label in SCHEME_LABELS.items():
        a, b = get(big, model), get(small, model)
        lines.append(f"| {label} | {a['images_per_s']:.0f} | {ratio(a['vs_torch_fp32'])} | "
                     f"{ratio(a['vs_onnxruntime_int8'])} | {ratio(b['vs_torch_fp32'])} | "
                     f"{100 * a['agree_with_qat']:.1f} % |")
    lines += ["", "| target | reached | |", "|---|---:|---|"]
    for label, model, field, goal in TARGETS:
        v = get(big, model)[field]
        lines.append(f"| {label} | {ratio(v)} | {'-' if v is None else ('met' if v >= goal else 'short')} |")
    schemes = [m for m in SCHEME_LABELS if m != "cmn cascade"]
    low = min(get(small, m)["vs_torch_fp32"] for m in schemes)
    lines.append(f"| batch {small}: no scheme slower than torch fp32 | lowest {low:.2f}× (cascade "
                 f"{get(small, 'cmn cascade')['vs_torch_fp32']:.2f}×) | {'met' if low >= 1 else 'short'} |")
    agree = min(r["agree_with_qat"] for r in rows if r["agree_with_qat"] is not None)
    lines.append(f"| top-1 agreement with the QAT model ≥ 99.5 % | lowest {100 * agree:.1f} % | "
                 f"{'met' if agree >= 0.995 else 'short'} |")
    return "\n".join(lines) + "\n"


def save(results: dict, out_dir: str) -> tuple[str, str]:
    """deploy_cpu.{json,md}, or deploy_<gpu name>.{json,md} for a GPU run."""
    os.makedirs(out_dir, exist_ok=True)
    device = "cpu"
    if results.get("device", "cpu").startswith("cuda"):
        device = "".join(c if c.isalnum() else "_" for c in results["machine"].get("gpu", "cuda").lower())
    base = os.path.join(out_dir, f"deploy_{device}")
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with open(base + ".md", "w") as f:
        f.write(markdown(results) + "\n" + summary(results))
    return base + ".json", base + ".md"
