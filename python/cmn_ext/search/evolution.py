"""Evolutionary search of APQ (section 3.4): a population scored by the accuracy predictor, each generation
keeps the best ``parents`` and adds ``mutations`` mutated parents (each gene resampled with ``mutate_prob``)
and ``crossovers`` children of two parents; every candidate must satisfy the cost budget (resampled until it
does, as in the paper). Defaults: population 100, parents 25, 50 mutations (p = 0.1), 50 crossovers, 500
generations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from ..config import EvolutionConfig  # the settings (defaults, checks) live with the other config sections
from .space import Arch, SearchSpace


@dataclass
class EvolutionResult:
    best: Arch
    best_score: float
    best_cost: float
    history: list = field(default_factory=list)      # best predicted score per generation
    population: list = field(default_factory=list)   # final (arch, score, cost), best first


def evolve(space: SearchSpace, score: Callable[[list[Arch]], list[float]], cost: Callable[[Arch], float],
           budget: float, cfg: EvolutionConfig | None = None, progress: bool = False) -> EvolutionResult:
    """Maximise ``score`` (a batch scorer, e.g. the predictor) subject to ``cost(arch) <= budget``."""
    cfg = cfg or EvolutionConfig()
    rng = random.Random(cfg.seed)

    def feasible(make):
        for _ in range(cfg.max_tries):
            arch = make()
            c = cost(arch)
            if c <= budget:
                return arch, c
        raise RuntimeError(f"evolution: no candidate within the budget {budget:g} after {cfg.max_tries} tries; "
                           "raise the budget or shrink the space")

    pop = [feasible(lambda: space.sample(rng, cfg.quantized)) for _ in range(cfg.population)]
    scores = list(score([a for a, _ in pop]))
    history = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.generations, desc="evolution", unit="gen")
    for _ in range(cfg.generations):
        ranked = sorted(zip(pop, scores), key=lambda t: -t[1])
        parents = ranked[:cfg.parents]
        history.append(parents[0][1])
        children = [feasible(lambda: space.mutate(rng.choice(parents)[0][0], rng, cfg.mutate_prob))
                    for _ in range(cfg.mutations)]
        children += [feasible(lambda: space.crossover(rng.choice(parents)[0][0], rng.choice(parents)[0][0], rng))
                     for _ in range(cfg.crossovers)]
        child_scores = list(score([a for a, _ in children])) if children else []
        pop = [p for p, _ in parents] + children
        scores = [s for _, s in parents] + child_scores
        if bar:
            bar.update(1)
            bar.set_postfix(best=f"{history[-1]:.4f}")
    if bar:
        bar.close()
    ranked = sorted(zip(pop, scores), key=lambda t: -t[1])
    history.append(ranked[0][1])
    (best, best_cost), best_score = ranked[0]
    return EvolutionResult(best, best_score, best_cost, history, [(a, s, c) for (a, c), s in ranked])
