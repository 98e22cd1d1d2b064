"""CMN: cascaded mixed-precision networks with early exit, thresholds from a recall rate, Algorithm 1."""

from .cascade import Cascade, CascadeOutput, cascade_accuracy, confidences, evaluate_cascade
from .cost import avg_bits, bit_macs, paper_G, real_bops, real_G
from .search import Algorithm1, candidate_set, percent_grid
from .thresholds import exit_rate, threshold_for_recall

__all__ = ["Algorithm1", "Cascade", "CascadeOutput", "avg_bits", "bit_macs", "candidate_set", "cascade_accuracy",
           "confidences", "evaluate_cascade", "exit_rate", "paper_G", "percent_grid", "real_G", "real_bops",
           "threshold_for_recall"]
