"""APQ: joint architecture / pruning / quantization search (search space and encoding, accuracy predictor,
evolutionary search). See docs/apq.md."""

from .evolution import EvolutionConfig, EvolutionResult, evolve
from .predictor import AccuracyPredictor, fit, pairwise_accuracy, transfer
from .space import LAYERS_PER_BLOCK, Arch, Frame, Layer, SearchSpace, UniformBits

__all__ = ["Arch", "Frame", "Layer", "SearchSpace", "UniformBits", "LAYERS_PER_BLOCK", "AccuracyPredictor", "fit",
           "transfer", "pairwise_accuracy", "EvolutionConfig", "EvolutionResult", "evolve"]
