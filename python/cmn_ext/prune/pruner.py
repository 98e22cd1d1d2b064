"""Pruning of QConv2d / QLinear masks with a schedule: one-shot, soft (SPQ) or progressive hard (PPQ).

  oneshot       prune to ``ratio`` once, before training; masks hard
  soft          SPQ / soft filter pruning (SFP, FPGM): at every epoch end re-select from the full-precision
                weights and zero the selected ones; they keep training from zero and may come back at the
                next selection (see ``nn.qat`` for why the mask is not held in the forward pass)
  progressive   PPQ: the ratio rises to ``ratio`` in ``stages`` equal steps, one at the start of epochs
                0, e, 2e, ... with e = max(1, epochs // stages) (PPQ's Algorithm 2, "epoch mod floor(n/s) = 0");
                pruned weights are frozen at zero (hard mask, re-zeroed after every optimizer step) and stay
                pruned at later stages. CMN's iterative magnitude pruning is this schedule with method=magnitude.

Filter pruning (``fpgm``) in hard modes also zeroes the pruned channels' batch-norm scale and shift, so a
pruned channel outputs exactly zero: removing it physically (``remove_pruned_filters``) then changes nothing.
"""

import warnings

import torch
from torch import nn

from ..nn.qat import QConv2d, qlayers
from .criteria import fpgm_select, global_magnitude_masks, magnitude_mask
from .graph import conv_bn_pairs

METHODS = ("magnitude", "fpgm")
SCHEDULES = ("oneshot", "soft", "progressive")


class Pruner:
    def __init__(self, model: nn.Module, method: str = "fpgm", ratio: float = 0.3, schedule: str = "oneshot",
                 stages: int = 1, epochs: int = 1, scope: str = "layer", layers=None, exclude=("first", "last"),
                 ratios: dict | None = None):
        if method not in METHODS:
            raise ValueError(f"Pruner: 'method' expected one of {METHODS}, got {method!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"Pruner: 'schedule' expected one of {SCHEDULES}, got {schedule!r}")
        if scope not in ("layer", "global"):
            raise ValueError(f"Pruner: 'scope' expected \"layer\" or \"global\", got {scope!r}")
        if scope == "global" and method != "magnitude":
            raise ValueError("Pruner: scope=\"global\" is for method=\"magnitude\"")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"Pruner: 'ratio' expected in [0, 1), got {ratio}")
        if stages < 1:
            raise ValueError(f"Pruner: 'stages' expected >= 1, got {stages}")
        self.model, self.method, self.ratio, self.schedule = model, method, ratio, schedule
        self.stages, self.epochs, self.scope = stages, epochs, scope
        self.targets = self._targets(layers, exclude)
        self.ratios = dict(ratios or {})
        unknown = set(self.ratios) - set(self.targets)
        if unknown:
            raise ValueError(f"Pruner: 'ratios' names layers that are not pruned: {sorted(unknown)}")
        self.current = 0.0  # the ratio applied so far
        self.bn_of = conv_bn_pairs(model) if method == "fpgm" else {}
        for _, m in self.modules():
            m.mask_mode = "soft" if schedule == "soft" else "hard"

    def _targets(self, layers, exclude):
        all_q = qlayers(self.model)
        if not all_q:
            raise ValueError("Pruner: the model has no QConv2d/QLinear layers; call cmn_ext.nn.quantize_model "
                             "first (spec None keeps full precision and only adds masks)")
        names = [n for n, _ in all_q]
        special = {"first": names[0], "last": names[-1]}
        excluded = {special.get(e, e) for e in (exclude or ())}
        if layers is not None:
            unknown = set(layers) - set(names)
            if unknown:
                raise ValueError(f"Pruner: 'layers' names {sorted(unknown)} that are not QConv2d/QLinear layers")
            names = list(layers)
        out = []
        for n in names:
            m = self.model.get_submodule(n)
            if n in excluded:
                continue
            if self.method == "fpgm" and not (isinstance(m, QConv2d) and m.groups == 1):
                continue  # filter pruning: dense convs only
            out.append(n)
        if not out:
            raise ValueError("Pruner: no layer left to prune after 'layers' / 'exclude'")
        return out

    def modules(self):
        return [(n, self.model.get_submodule(n)) for n in self.targets]

    # --- selection -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def prune_to(self, ratio: float, fresh: bool = False) -> None:
        """Set masks so that each target layer has ``ratio`` pruned (a layer listed in ``ratios`` gets its own
        ratio, scaled by ratio / self.ratio so it follows the schedule); ``fresh`` re-selects from scratch instead of growing the current masks."""
        scale = ratio / self.ratio if self.ratio else 0.0
        mods = self.modules()
        if self.method == "magnitude" and self.scope == "global":
            masks = global_magnitude_masks([m.weight for _, m in mods], ratio,
                                           None if fresh else [m.weight_mask for _, m in mods])
            for (_, m), mask in zip(mods, masks):
                m.weight_mask.copy_(mask)
        else:
            for name, m in mods:
                r = self.ratios.get(name, self.ratio) * scale
                if self.method == "magnitude":
                    m.weight_mask.copy_(magnitude_mask(m.weight, r, None if fresh else m.weight_mask))
                else:
                    keep = fpgm_select(m.weight, r, None if fresh else m.filter_keep())
                    m.weight_mask.copy_(keep.view(-1, *([1] * (m.weight.dim() - 1))).expand_as(m.weight).float())
        self.current = ratio
        for _, m in mods:
            m.weight.mul_(m.weight_mask.to(m.weight.dtype))
        if self.schedule != "soft":
            self.enforce()

    def enforce(self) -> None:
        """Hard modes: re-zero pruned weights (and pruned channels' BN scale/shift) after an optimizer step."""
        if self.schedule != "soft":
            self._zero_pruned()

    @torch.no_grad()
    def _zero_pruned(self) -> None:
        for name, m in self.modules():
            m.weight.mul_(m.weight_mask.to(m.weight.dtype))
            bn_name = self.bn_of.get(name)
            if bn_name is not None:
                keep = m.filter_keep().to(m.weight.dtype)
                bn = self.model.get_submodule(bn_name)
                bn.weight.mul_(keep)
                bn.bias.mul_(keep)

    # --- schedule hooks (the trainer calls these) -------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        if self.schedule == "oneshot" and epoch == 0 and self.current < self.ratio:
            self.prune_to(self.ratio)
        elif self.schedule == "progressive":
            every = max(1, self.epochs // self.stages)
            stage = min(self.stages, epoch // every + 1)
            target = self.ratio * stage / self.stages
            if target > self.current + 1e-12:
                self.prune_to(target)

    def on_epoch_end(self, epoch: int) -> None:
        if self.schedule == "soft":
            self.prune_to(self.ratio, fresh=True)

    def after_step(self) -> None:
        self.enforce()

    def finalize(self) -> None:
        """End of training: masks become hard (the pruned weights are exactly zero). A schedule that did not
        reach its final ratio (fewer epochs than stages) is reported, not silently completed untrained."""
        if self.current < self.ratio - 1e-12:
            warnings.warn(f"Pruner: training ended at pruning ratio {self.current:.3g}, short of the target "
                          f"{self.ratio:.3g} (epochs={self.epochs}, stages={self.stages})", stacklevel=2)
        for _, m in self.modules():
            m.mask_mode = "hard"
        # A soft schedule ends with zeroed filters whose batch norms still add a constant shift; zero that
        # too, so the pruned channels output exactly zero and physical removal keeps the function (the
        # trainer then recalibrates the BN statistics, see Trainer.fit).
        self._zero_pruned()

    def state_dict(self) -> dict:
        return {"current": self.current}

    def load_state_dict(self, state: dict) -> None:
        self.current = float(state.get("current", 0.0))

    def sparsity(self) -> dict:
        """{layer: fraction of masked weights} of the target layers."""
        return {n: 1.0 - float(m.weight_mask.mean()) for n, m in self.modules()}


def pruned_fraction(model: nn.Module) -> float:
    """Fraction of masked weights over all QConv2d / QLinear layers."""
    total = masked = 0
    for _, m in qlayers(model):
        total += m.weight_mask.numel()
        masked += int((m.weight_mask == 0).sum())
    return masked / max(1, total)


__all__ = ["METHODS", "Pruner", "SCHEDULES", "pruned_fraction"]
