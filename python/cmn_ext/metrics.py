"""Cost metrics of a model, in one place: MACs and parameters per layer, BOPs, model size, average bitwidth.

Per conv / linear layer (found with forward hooks on one input of ``input_size``, batch 1):
  macs        dense multiply-accumulates: output elements x weights per output (C/groups x kh x kw)
  eff_macs    sparsity-aware: output pixels x nonzero unmasked weights (pruned filters and weights removed)
  bops        eff_macs x b_w x b_a   (Baskin et al.; SPQ/PPQ eq. 6)
  size_bits   nonzero weights x b_w (+ a float32 bias)
Totals add every other parameter (batch norm) at 32 bits to the size, as the papers' model sizes do.
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

    @property
    def bops(self) -> int:
        return self.eff_macs * self.w_bits * self.a_bits

    @property
    def size_bits(self) -> int:
        return self.nonzero * self.w_bits


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

    @property
    def avg_w_bits(self) -> float:
        return sum(r.eff_macs * r.w_bits for r in self.layers) / max(1, self.macs)

    @property
    def avg_a_bits(self) -> float:
        return sum(r.eff_macs * r.a_bits for r in self.layers) / max(1, self.macs)

    def summary(self) -> dict:
        return {"macs": self.macs, "eff_macs": self.eff_macs, "params": self.params,
                "nonzero_params": self.nonzero_params, "bops": self.bops, "size_bits": self.size_bits,
                "avg_w_bits": self.avg_w_bits, "avg_a_bits": self.avg_a_bits}


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
            outs = getattr(mod, "out_channels", None) or getattr(mod, "out_features", 1)
            pixels = output[0].numel() // outs  # output positions per output channel, one image
            rows.append(LayerCost(name, kind, pixels * dense, pixels * nnz, dense, nnz, wb, ab))

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
    other = sum(p.numel() for p in model.parameters() if id(p) not in covered and p.dim() >= 1)
    # Deploy layers hold their folded batch norm as epilogue buffers: count them like the BN parameters.
    other += sum(b.numel() for n, b in model.named_buffers() if n.endswith(("epi_scale", "epi_bias")))
    return ModelCost(rows, other)


def _fmt_ratio(base, value):
    return f"x{base / value:.2f}" if value else "-"


def compression_table(costs: dict, baseline: str | None = None) -> str:
    """A Markdown table in the SPQ/PPQ style (model size and BOPs with reduction ratios against ``baseline``,
    default the first entry) for ``{label: ModelCost}``."""
    labels = list(costs)
    base = costs[baseline or labels[0]]
    lines = ["| model | params (M) | MACs (M) | size (Mbit) | size reduction | BOPs (G) | BOPs reduction | avg bits w/a |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        c = costs[label]
        lines.append(f"| {label} | {c.nonzero_params / 1e6:.3f} | {c.eff_macs / 1e6:.2f} | {c.size_bits / 1e6:.3f} | "
                     f"{_fmt_ratio(base.size_bits, c.size_bits)} | {c.bops / 1e9:.3f} | "
                     f"{_fmt_ratio(base.bops, c.bops)} | {c.avg_w_bits:.2f}/{c.avg_a_bits:.2f} |")
    return "\n".join(lines)
