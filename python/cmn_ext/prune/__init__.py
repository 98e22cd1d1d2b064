"""Pruning: magnitude (unstructured, per layer or global) and FPGM filter pruning, one-shot / soft (SPQ) /
progressive (PPQ) schedules over the masks of QConv2d / QLinear, and physical removal of pruned filters."""

from .criteria import fpgm_scores, fpgm_select, global_magnitude_masks, magnitude_mask
from .graph import conv_bn_pairs, removable_chains
from .physical import remove_pruned_filters
from .pruner import METHODS, SCHEDULES, Pruner, pruned_fraction

__all__ = ["METHODS", "Pruner", "SCHEDULES", "conv_bn_pairs", "fpgm_scores", "fpgm_select",
           "global_magnitude_masks", "magnitude_mask", "pruned_fraction", "remove_pruned_filters",
           "removable_chains"]
