"""Training: the loop (``Trainer``, ``evaluate``), schedules, atomic checkpoints and DDP helpers."""

from .bn import recalibrate_bn
from ..files import load, save_atomic
from .loop import Trainer, evaluate
from .schedules import PlateauDecay, make_optimizer, make_schedule

__all__ = ["PlateauDecay", "Trainer", "evaluate", "load", "make_optimizer", "make_schedule", "recalibrate_bn", "save_atomic"]
