"""Learning-rate schedules: multi-step, cosine, and the SPQ/PPQ plateau rule (x0.9 after 3 epochs without a
better validation accuracy)."""

import torch


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


def make_optimizer(params, cfg: dict):
    name = cfg.get("optimizer", "sgd")
    lr, wd = float(cfg.get("lr", 0.1)), float(cfg.get("weight_decay", 5e-4))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.9)), weight_decay=wd,
                               nesterov=bool(cfg.get("nesterov", False)))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    raise ValueError(f"train: 'optimizer' expected \"sgd\" or \"adam\", got {name!r}")


def make_schedule(optimizer, cfg: dict, epochs: int):
    """``cfg["schedule"]``: "multistep" (``milestones``, ``gamma`` 0.1), "plateau" (``factor`` 0.9,
    ``patience`` 3), "cosine", or "none". Returns (scheduler or None, whether step() takes the metric)."""
    kind = cfg.get("schedule", "multistep")
    if kind == "multistep":
        # Default: at 1/2 and 3/4 of the run; a short run keeps the distinct ones after epoch 0 (never lr/100
        # from the start).
        milestones = cfg.get("milestones") or sorted({m for m in (int(epochs * 0.5), int(epochs * 0.75)) if m > 0})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), float(cfg.get("gamma", 0.1))), False
    if kind == "plateau":
        return PlateauDecay(optimizer, float(cfg.get("factor", 0.9)), int(cfg.get("patience", 3))), True
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs)), False
    if kind == "none":
        return None, False
    raise ValueError(f"train: 'schedule' expected multistep, plateau, cosine or none, got {kind!r}")
