"""SPQ and PPQ (papers/spq_ppq_*): FPGM filter pruning combined with APoT 4-bit quantization."""

from .pipeline import METHODS, run

__all__ = ["METHODS", "run"]
