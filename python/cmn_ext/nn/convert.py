"""Conversion of a trained QAT model into a deploy model whose layers call ``torch.ops.cmn.*``.

Kernel choice per QConv2d / QLinear (groups = 1):
  binary   BinaryWeight + BinaryAct                     -> ``binary_conv2d`` (pruned filters: scale 0)
  int8     DoReFa (<= 7 bits) or linear (<= 8 bits) weights with DoReFa / linear activations (<= 8 bits)
                                                         -> ``int8_conv2d`` on the kept filters only
  apot     APoT weights (<= 4 bits) and APoT activations (<= 4 bits)   -> ``apot_conv2d`` / ``apot_matmul``
Anything else (full-precision edge layers, depthwise convs, DoReFa 8-bit weights whose 256 odd levels need
9 bits) stays a fake-quant float layer, and the report says why. A batch norm that directly follows a
converted layer is folded into the kernel's epilogue and replaced by ``nn.Identity``. The layer-wise model is
then compiled into the deploy engine (``cmn_ext.nn.engine``).
"""

import copy
import warnings

import torch
from torch import nn

from ..ops import pack_apot_conv_weight
from ..prune.graph import conv_bn_pairs
from ..quant import (APoTQuantizer, BinaryAct, BinaryWeight, DoReFaAct, DoReFaWeight, LinearQuantizer,
                     spec_of)
from ..files import load, save_atomic
from .deploy import DEPLOY_LAYERS, APoTConv2d, BinaryConv2d, DeployLayer, Int8Conv2d
from .engine import build_engine, source_of
from .qat import QConv2d, qlayers, quantize_model

FORMAT = "cmn_ext.deploy/1"


def choose_kernel(m) -> tuple[str | None, str]:
    """(kernel name or None, reason) for a QConv2d / QLinear."""
    wq, aq = m.w_quant, m.a_quant
    if isinstance(m, QConv2d) and m.groups != 1:
        return None, f"grouped conv (groups={m.groups}): the kernels are dense"
    if wq is None or aq is None:
        return None, "full-precision weights or activations"
    if isinstance(wq, BinaryWeight) and isinstance(aq, BinaryAct):
        rows = m.weight_mask.flatten(1)
        if not bool(((rows == 0).all(1) | (rows != 0).all(1)).all()):
            return None, "binary layer with an unstructured mask: +-1 weights cannot hold zeros"
        return "binary", aq.encoding
    w_int8 = (isinstance(wq, DoReFaWeight) and wq.bits <= 7) or (isinstance(wq, LinearQuantizer) and wq.signed)
    if w_int8 and isinstance(aq, (DoReFaAct, LinearQuantizer)) and aq.bits <= 8:
        if isinstance(aq, LinearQuantizer) and aq.clip == "kl" and float(aq.clip_value) == 0:
            return None, "activation clip not calibrated (run a forward pass in training mode first)"
        return "int8", ""
    if isinstance(wq, DoReFaWeight) and wq.bits == 8:
        return None, "DoReFa 8-bit weights take 256 odd levels in [-255, 255], which int8 cannot hold; use a 'linear' 8-bit weight quantizer"
    if isinstance(wq, APoTQuantizer) and isinstance(aq, APoTQuantizer) and wq.bits <= 4 and aq.bits <= 4 \
            and not aq.signed:
        return "apot", ""
    return None, f"no kernel for weights {type(wq).__name__}({wq.bits}) x activations {type(aq).__name__}({aq.bits})"


def _fold(m, bn, w_scale: torch.Tensor, a_scale: float):
    """Per-channel (scale, bias) with weight/activation scales, the layer bias and the batch norm folded."""
    k = m.weight.shape[0]
    scale = w_scale.reshape(-1).double().expand(k) * float(a_scale)
    bias = m.bias.detach().double() if m.bias is not None else torch.zeros(k, dtype=torch.float64)
    if bn is not None:
        g = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        scale, bias = scale * g, (bias - bn.running_mean.double()) * g + bn.bias.detach().double()
    return scale.float(), bias.float()


def _meta(m, kernel: str) -> dict:
    conv = isinstance(m, QConv2d)
    k, c = m.weight.shape[:2]
    kh, kw = m.weight.shape[2:] if conv else (1, 1)
    meta = {"kind": "conv" if conv else "linear", "in_channels": int(c), "out_channels": int(k),
            "weight_shape": [int(k), int(c), int(kh), int(kw)], "weights": int(m.weight.numel()),
            "w_bits": m.w_bits, "a_bits": m.a_bits, "act": spec_of(m.a_quant)}
    if conv:
        meta.update(stride=list(m.stride), padding=list(m.padding), dilation=list(m.dilation))
    return meta


@torch.no_grad()
def _convert_layer(m, bn, kernel: str, extra: str) -> DeployLayer:
    meta = _meta(m, kernel)
    mask = m.weight_mask
    if kernel == "binary":
        signs, alpha = m.w_quant.integer(m.weight)
        keep = mask.flatten(1).amax(1) > 0
        meta["encoding"] = extra
        layer = BinaryConv2d(meta)
        w = signs.float().reshape(meta["weight_shape"])
        layer.w_bits.copy_(torch.ops.cmn.pack_bits(w.contiguous(), "pm1"))
        scale, bias = _fold(m, bn, alpha.reshape(-1).expand(len(keep)) * keep, 1.0)
    elif kernel == "int8":
        q, w_scale = m.w_quant.integer(m.weight)
        q = (q * mask.long()).reshape(meta["weight_shape"])
        if q.min() < -128 or q.max() > 127:
            raise ValueError(f"convert: integer weights span [{int(q.min())}, {int(q.max())}], outside int8")
        keep = q.flatten(1).ne(0).any(1)
        meta["kept"] = int(keep.sum())
        layer = Int8Conv2d(meta)
        layer.weight.copy_(q[keep].to(torch.int8))
        layer.keep.copy_(keep)
        _, a_scale = m.a_quant.integer(torch.zeros(1, device=m.weight.device))
        scale, bias = _fold(m, bn, w_scale, float(a_scale))
    else:  # apot
        codes = m.w_quant.codes(m.weight)
        codes = torch.where(mask > 0, codes, torch.zeros_like(codes))
        layer = APoTConv2d(meta)
        if meta["kind"] == "linear":
            layer.w_packed.copy_(torch.ops.cmn.pack_int4(codes.contiguous()))
        else:
            layer.w_packed.copy_(pack_apot_conv_weight(codes))
        layer.w_levels.copy_(m.w_quant.level_table())
        layer.x_levels.copy_(m.a_quant.level_table())
        w_scale = m.w_quant.alpha.detach().clamp_min(1e-4) / m.w_quant.denominator
        a_scale = float(m.a_quant.alpha.detach().clamp_min(1e-4)) / m.a_quant.denominator
        scale, bias = _fold(m, bn, w_scale, a_scale)
    if layer.a_quant is not None:
        layer.a_quant.load_state_dict(m.a_quant.state_dict())
    layer.epi_scale.copy_(scale)
    layer.epi_bias.copy_(bias)
    layer.nonzero.fill_(int(torch.count_nonzero(m.weight * mask)))
    return layer.to(m.weight.device)


def _set(model, name, module):
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@torch.no_grad()
def convert(model: nn.Module, engine: bool = True) -> tuple[nn.Module, list]:
    """A deploy copy of the QAT ``model`` (which is left untouched) and a report: one
    ``{"layer", "kernel", "note"}`` per QConv2d / QLinear, kernel None where it stays a float layer.

    With ``engine`` (the default) the copy is a ``DeployEngine`` (``cmn_ext.nn.engine``): the whole network as
    one integer-domain graph of kernel calls, which is what runs fast. Its layer-wise form (each deploy layer
    taking and returning float, for inspection) is ``.net``; ``engine=False`` returns that form alone. A model
    the engine cannot trace is returned layer-wise, with a warning."""
    deploy = _convert_layers(model)
    report = deploy.cmn_report
    if not engine:
        return deploy, report
    try:
        return build_engine(deploy), report
    except Exception as e:  # noqa: BLE001 - fx raises many types; the layer-wise model still works
        warnings.warn(f"convert: the deploy engine could not trace {type(model).__name__} ({e}); returning the "
                      "layer-wise deploy model", stacklevel=2)
        return deploy, report


def _convert_layers(model: nn.Module) -> nn.Module:
    deploy = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(deploy)
    report, folded = [], []
    for name, m in qlayers(deploy):
        kernel, note = choose_kernel(m)
        report.append({"layer": name, "kernel": kernel, "note": note if kernel is None else ""})
        if kernel is None:
            continue
        bn_name = pairs.get(name)
        bn = deploy.get_submodule(bn_name) if bn_name else None
        _set(deploy, name, _convert_layer(m, bn, kernel, note))
        if bn_name:
            _set(deploy, bn_name, nn.Identity())
            folded.append(bn_name)
    deploy.cmn_folded = folded
    deploy.cmn_report = report
    deploy.requires_grad_(False)  # inference only: the kernels have no gradient
    return deploy


@torch.no_grad()
def compare(reference: nn.Module, deploy: nn.Module, batches) -> dict:
    """Run both models on ``batches`` (an iterable of inputs or (input, label) pairs): fraction of equal
    argmax, max |logit difference| and that difference relative to the largest |logit|."""
    reference.eval()
    deploy.eval()
    same = n = 0
    max_abs = max_ref = 0.0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        a, b = reference(x).float(), deploy(x).float()
        same += int((a.argmax(1) == b.argmax(1)).sum())
        n += len(x)
        max_abs = max(max_abs, float((a - b).abs().max()))
        max_ref = max(max_ref, float(a.abs().max()))
    return {"argmax_agree": same / max(1, n), "max_abs_diff": max_abs, "max_rel_diff": max_abs / max(max_ref, 1e-12),
            "n": n}


def save_deploy(model: nn.Module, path: str, recipe: dict) -> None:
    """Save a deploy model (an engine or a layer-wise model); ``recipe`` = {"model": name, "num_classes": n,
    "model_kwargs": {...}, "quant": spec} rebuilds its skeleton. Loadable with ``torch.load(weights_only=True)``."""
    model = source_of(model)
    layers = {n: {"type": type(m).__name__, "meta": m.meta} for n, m in model.named_modules()
              if isinstance(m, DeployLayer)}
    save_atomic({"format": FORMAT, "recipe": dict(recipe), "layers": layers,
                 "folded": list(getattr(model, "cmn_folded", [])), "state_dict": model.state_dict()}, path)


def _fit_shapes(model: nn.Module, state: dict) -> None:
    """Resize parameters / buffers whose saved shape differs (physically pruned layers) before loading."""
    for key, value in state.items():
        mod_name, _, attr = key.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        cur = getattr(mod, attr, None)
        if not isinstance(cur, torch.Tensor) or cur.shape == value.shape:
            continue
        new = torch.empty(value.shape, dtype=cur.dtype)
        if isinstance(cur, nn.Parameter):
            setattr(mod, attr, nn.Parameter(new, requires_grad=cur.requires_grad))
        else:
            mod.register_buffer(attr, new)
        if isinstance(mod, nn.Conv2d) and attr == "weight":
            mod.out_channels, mod.in_channels = value.shape[0], value.shape[1] * mod.groups
        elif isinstance(mod, nn.Linear) and attr == "weight":
            mod.out_features, mod.in_features = value.shape
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and attr == "weight":
            mod.num_features = value.shape[0]


def load_deploy(path: str, map_location="cpu", engine: bool = True) -> nn.Module:
    """Rebuild a deploy model saved by ``save_deploy``: a ``DeployEngine`` (or the layer-wise model with
    ``engine=False``)."""
    from ..models import build_model

    obj = load(path, map_location=map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cmn_ext deploy file (format {FORMAT!r})")
    r = obj["recipe"]
    model = build_model(r["model"], r["num_classes"], **(r.get("model_kwargs") or {}))
    quantize_model(model, r.get("quant"))
    for name in obj["folded"]:
        _set(model, name, nn.Identity())
    for name, entry in obj["layers"].items():
        _set(model, name, DEPLOY_LAYERS[entry["type"]](entry["meta"]))
    _fit_shapes(model, obj["state_dict"])
    model.load_state_dict(obj["state_dict"])
    model.cmn_folded = list(obj["folded"])
    model.requires_grad_(False).eval()
    return build_engine(model) if engine else model
