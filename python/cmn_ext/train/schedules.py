"""Learning-rate schedules: multi-step, cosine, and the SPQ/PPQ plateau rule (x0.9 after 3 epochs without a
better validation accuracy)."""

import torch

from ..config import TrainConfig


class PlateauDecay:
    """Multiply every learning rate by ``factor`` once ``patience`` consecutive epochs passed without the
    monitored metric improving on its best (higher is better), then count again from zero."""

    def __init__(self, optimizer, factor: float = 0.9, patience: int = 3, min_lr: float = 0.0):
        if not 0 < factor < 1:
            raise ValueError(f"PlateauDecay: 'factor' expected in (0, 1), got {factor}")
        if patience < 1:
            raise ValueError(f"PlateauDecay: 'patience' expected >= 1, got {patience}")
        self.optimizer, self.factor, self.patience, self.min_lr = optimizer, factor, patience, min_lr
        self.best, self.bad = float("-inf"), 0

    def step(self, metric: float) -> None:
        if metric > self.best:
            self.best, self.bad = metric, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            for g in self.optimizer.param_groups:
                g["lr"] = max(self.min_lr, g["lr"] * self.factor)
            self.bad = 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = float(state["best"]), int(state["bad"])


def make_optimizer(params, cfg):
    """SGD (momentum, nesterov) or Adam from a ``TrainConfig`` (or a mapping of its keys)."""
    cfg = TrainConfig.from_dict(cfg)  # as given, or built and checked from a mapping
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(optimizer, cfg, epochs: int):
    """``cfg.schedule``: "multistep" (``milestones``, ``gamma``), "plateau" (``factor``, ``patience``), "cosine",
    or "none". Returns (scheduler or None, whether step() takes the metric)."""
    cfg = TrainConfig.from_dict(cfg)  # as given, or built and checked from a mapping
    if cfg.schedule == "multistep":
        # Default: at 1/2 and 3/4 of the run; a short run keeps the distinct ones after epoch 0 (never lr/100
        # from the start).
        milestones = cfg.milestones or sorted({m for m in (int(epochs * 0.5), int(epochs * 0.75)) if m > 0})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), cfg.gamma), False
    if cfg.schedule == "plateau":
        return PlateauDecay(optimizer, cfg.factor, cfg.patience), True
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs)), False
    return None, False  # "none" (TrainConfig admits no other value)
