"""Cost metrics of a model, in one place: MACs and parameters per layer, BOPs, model size, average bitwidth.

Two conventions are reported side by side, each under its own name:

PHYSICAL (``size_bits``, ``bops``, ``eff_macs``): what the model as stored and run costs. Per conv / linear
layer (found with forward hooks on one input of ``input_size``, batch 1):
  macs        dense multiply-accumulates: output elements x weights per output (C/groups x kh x kw)
  eff_macs    sparsity-aware: output pixels x nonzero unmasked weights (pruned filters and weights removed;
              input channels count only where they were removed physically, ``prune.remove_pruned_filters``:
              a ResNet block output meets the residual add, so its pruned channels stay as masked zeros and the
              next layer still reads all of them)
  bops        eff_macs x b_w x b_a
  size_bits   nonzero weights x b_w
Totals add every other parameter (batch norm, biases, folded epilogues) at 32 bits to the size.

PAPER (``paper_size_bits``, ``paper_bops``, ``paper_macs``, ``paper_weights``): SPQ/PPQ Eq. 5 and 6 as the
paper counts them. Size = sum |W_i| x b_w over conv / linear weights only (no batch norm, no bias).
BOPs = sum MACs(i) x b_w(i) x b_a(i-1). The layers form a chain in execution order, and "removing filters
in a given layer also eliminates the corresponding input channels in the subsequent layer" (SPQ/PPQ
section III): layer i keeps the fraction of its input channels that layer i-1 kept of its filters, residual
adds notwithstanding. |W_i| = nonzero weights x that fraction; MACs(i) = output pixels x |W_i|. (Where the
input is wider than the previous layer's output, e.g. a classifier on flattened C x H x W features, the
fraction is applied to it as is.) On ResNet-20 with 30 % FPGM on every conv and APoT 4/4 (8-bit first and
last layers) this reproduces the paper's x15.78 size reduction and gives x115.60 BOPs (see docs/spq_ppq.md).

Average bitwidth (CMN): sum(eff_macs x b) / sum(dense macs), i.e. operations over the FP network's.
"""

import dataclasses

import torch
from torch import nn

FP_BITS = 32


@dataclasses.dataclass
class LayerCost:
    name: str
    kind: str
    macs: int
    eff_macs: int
    params: int
    nonzero: int
    w_bits: int
    a_bits: int
    in_channels: int = 0
    out_channels: int = 0
    kept_filters: int = 0   # output channels with a nonzero (unmasked) weight
    paper_weights: int = 0  # |W_i| of SPQ/PPQ Eq. 5: nonzero weights x the kept fraction of the input channels
    pixels: int = 1         # output positions per output channel, one image
    groups: int = 1

    @property
    def bops(self) -> int:
        return self.eff_macs * self.w_bits * self.a_bits

    @property
    def size_bits(self) -> int:
        return self.nonzero * self.w_bits

    @property
    def paper_macs(self) -> int:
        return self.pixels * self.paper_weights

    @property
    def paper_bops(self) -> int:
        return self.paper_macs * self.w_bits * self.a_bits

    @property
    def paper_size_bits(self) -> int:
        return self.paper_weights * self.w_bits


@dataclasses.dataclass
class ModelCost:
    layers: list
    other_params: int  # parameters outside conv/linear weights (biases, batch norm), counted at 32 bits

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def eff_macs(self) -> int:
        return sum(r.eff_macs for r in self.layers)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers) + self.other_params

    @property
    def nonzero_params(self) -> int:
        return sum(r.nonzero for r in self.layers) + self.other_params

    @property
    def bops(self) -> int:
        return sum(r.bops for r in self.layers)

    @property
    def size_bits(self) -> int:
        return sum(r.size_bits for r in self.layers) + self.other_params * FP_BITS

    # --- the SPQ/PPQ paper's convention (Eq. 5, 6; see the module docstring) -------------------------------
    @property
    def paper_weights(self) -> int:
        return sum(r.paper_weights for r in self.layers)

    @property
    def paper_macs(self) -> int:
        return sum(r.paper_macs for r in self.layers)

    @property
    def paper_size_bits(self) -> int:
        return sum(r.paper_size_bits for r in self.layers)

    @property
    def paper_bops(self) -> int:
        return sum(r.paper_bops for r in self.layers)

    @property
    def avg_w_bits(self) -> float:
        return sum(r.eff_macs * r.w_bits for r in self.layers) / max(1, self.macs)

    @property
    def avg_a_bits(self) -> float:
        return sum(r.eff_macs * r.a_bits for r in self.layers) / max(1, self.macs)

    def summary(self) -> dict:
        return {"macs": self.macs, "eff_macs": self.eff_macs, "params": self.params,
                "nonzero_params": self.nonzero_params, "bops": self.bops, "size_bits": self.size_bits,
                "avg_w_bits": self.avg_w_bits, "avg_a_bits": self.avg_a_bits,
                "paper_weights": self.paper_weights, "paper_macs": self.paper_macs,
                "paper_size_bits": self.paper_size_bits, "paper_bops": self.paper_bops}


def layer_weights(module: nn.Module):
    """(kind, dense weight count, nonzero count, w_bits, a_bits) of a costed layer, or None.

    Modules describe themselves through ``cost_weights()`` (QAT and deploy layers); plain conv / linear
    layers are full precision."""
    if hasattr(module, "cost_weights"):
        return module.cost_weights()
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        w = module.weight
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        return kind, w.numel(), int(torch.count_nonzero(w)), FP_BITS, FP_BITS
    return None


def layer_channels(module: nn.Module) -> tuple[int, int, int]:
    """(input channels, output channels, groups) of a costed layer (a linear layer's features)."""
    meta = getattr(module, "meta", None)
    if isinstance(meta, dict) and "in_channels" in meta:  # deploy layers (dense kernels)
        return int(meta["in_channels"]), int(meta["out_channels"]), 1
    cin = getattr(module, "in_channels", None) or getattr(module, "in_features", 0)
    cout = getattr(module, "out_channels", None) or getattr(module, "out_features", 1)
    return cin, cout, getattr(module, "groups", 1)


def kept_filters(module: nn.Module) -> int:
    """Output channels (filters) of a costed layer that have at least one nonzero, unmasked weight."""
    from .nn.deploy import APoTConv2d, BinaryConv2d, Int8Conv2d
    from .ops.packing import unpack_int4

    if isinstance(module, Int8Conv2d):
        return int(module.meta["kept"])
    if isinstance(module, BinaryConv2d):  # +-1 weights: a pruned filter is one whose scale was set to 0
        return int(torch.count_nonzero(module.epi_scale))
    if isinstance(module, APoTConv2d):
        k = module.meta["out_channels"]
        codes = unpack_int4(module.w_packed.reshape(k, -1, module.w_packed.shape[-1]), module.meta["in_channels"])
        return int((module.w_levels[codes.long()] != 0).flatten(1).any(1).sum())
    w = module.weight.detach()
    mask = getattr(module, "weight_mask", None)
    if mask is not None:
        w = w * mask
    return int((w.flatten(1) != 0).any(1).sum())


def _paper_counts(rows: list) -> None:
    """Fill ``paper_weights`` of rows in execution order (the SPQ/PPQ chain rule, see the module docstring)."""
    frac = 1.0  # the first layer reads the whole image
    for r in rows:
        r.paper_weights = round(r.nonzero * frac)
        # what the next layer keeps of its inputs: the kept fraction of this layer's filters (a grouped, i.e.
        # depthwise, conv also loses the filters whose input channels were dropped)
        passed = r.kept_filters if r.groups == 1 else round(r.kept_filters * frac)
        frac = passed / max(1, r.out_channels)


@torch.no_grad()
def model_cost(model: nn.Module, input_size=(3, 32, 32), device=None) -> ModelCost:
    """Run one input of ``input_size`` through ``model`` (eval mode, restored afterwards) and cost it. A deploy
    engine is costed through its layer-wise form (the same layers)."""
    from .nn.engine import source_of

    model = source_of(model)
    rows, hooks, covered = [], [], set()
    for name, module in model.named_modules():
        info = layer_weights(module)
        if info is None:
            continue
        covered.update(id(p) for p in module.parameters(recurse=False) if p.dim() > 1)

        def hook(mod, inputs, output, name=name, info=info):
            kind, dense, nnz, wb, ab = info
            cin, cout, groups = layer_channels(mod)
            pixels = output[0].numel() // cout  # output positions per output channel, one image
            rows.append(LayerCost(name, kind, pixels * dense, pixels * nnz, dense, nnz, wb, ab, cin, cout,
                                  kept_filters(mod), 0, pixels, groups))

        hooks.append(module.register_forward_hook(hook))
    if device is None:
        device = next((t.device for t in list(model.parameters()) + list(model.buffers())), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros((1, *input_size), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    _paper_counts(rows)
    other = sum(p.numel() for p in model.parameters() if id(p) not in covered and p.dim() >= 1)
    # Deploy layers hold their folded batch norm as epilogue buffers: count them like the BN parameters.
    other += sum(b.numel() for n, b in model.named_buffers() if n.endswith(("epi_scale", "epi_bias")))
    return ModelCost(rows, other)


def _fmt_ratio(base, value):
    return f"x{base / value:.2f}" if value else "-"


CONVENTIONS = {
    "physical": "physical: the stored, deployable model - nonzero conv/linear weights at their bits + batch norm, "
                "biases and folded epilogues at 32 bits; BOPs on the channels each layer really reads (pruned "
                "channels that meet a residual add stay)",
    "paper": "paper: SPQ/PPQ Eq. 5 / Eq. 6 - conv/linear weights only; every layer loses the input channels "
             "its predecessor pruned, residual adds notwithstanding",
}


def reduction_figures(base: ModelCost, cost: ModelCost) -> dict:
    """Size and BOPs of ``cost`` against ``base`` in both conventions, flat and labelled by name:
    size_bits, baseline_size_bits, size_reduction, bops, baseline_bops, bops_reduction (physical) and the same
    six keys prefixed ``paper_`` (SPQ/PPQ Eq. 5 / 6, the numbers comparable with the paper's Table II)."""
    out = {}
    for prefix in ("", "paper_"):
        size, bsize = getattr(cost, prefix + "size_bits"), getattr(base, prefix + "size_bits")
        bops, bbops = getattr(cost, prefix + "bops"), getattr(base, prefix + "bops")
        out.update({f"{prefix}size_bits": size, f"{prefix}baseline_size_bits": bsize,
                    f"{prefix}size_reduction": bsize / size if size else None,
                    f"{prefix}bops": bops, f"{prefix}baseline_bops": bbops,
                    f"{prefix}bops_reduction": bbops / bops if bops else None})
    return out


def compression_table(costs: dict, baseline: str | None = None) -> str:
    """A Markdown table in the SPQ/PPQ style for ``{label: ModelCost}``: model size and BOPs with reduction
    ratios against ``baseline`` (default the first entry), in the physical convention and the paper's
    (Eq. 5 / 6), each labelled, followed by a legend saying what each counts."""
    labels = list(costs)
    base = costs[baseline or labels[0]]
    lines = ["| model | params (M) | MACs (M) | size physical (Mbit) | size reduction physical | "
             "size paper Eq.5 (Mbit) | size reduction paper | BOPs physical (G) | BOPs reduction physical | "
             "BOPs paper Eq.6 (G) | BOPs reduction paper | avg bits w/a |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        c = costs[label]
        lines.append(f"| {label} | {c.nonzero_params / 1e6:.3f} | {c.eff_macs / 1e6:.2f} | "
                     f"{c.size_bits / 1e6:.3f} | {_fmt_ratio(base.size_bits, c.size_bits)} | "
                     f"{c.paper_size_bits / 1e6:.3f} | {_fmt_ratio(base.paper_size_bits, c.paper_size_bits)} | "
                     f"{c.bops / 1e9:.3f} | {_fmt_ratio(base.bops, c.bops)} | "
                     f"{c.paper_bops / 1e9:.3f} | {_fmt_ratio(base.paper_bops, c.paper_bops)} | "
                     f"{c.avg_w_bits:.2f}/{c.avg_a_bits:.2f} |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"* {v}" for v in CONVENTIONS.values())
