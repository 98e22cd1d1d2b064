"""APQ search building blocks: the space and its encoding, the accuracy predictor, the evolutionary search."""

import random

import pytest
import torch

from cmn_ext.search import (LAYERS_PER_BLOCK, AccuracyPredictor, Arch, EvolutionConfig, SearchSpace, evolve, fit,
                            pairwise_accuracy, transfer)

SPACE = SearchSpace()


@pytest.mark.parametrize("quantized", [True, False])
def test_encoding_round_trip(quantized):
    rng = random.Random(1)
    for _ in range(50):
        arch = SPACE.sample(rng, quantized)
        vec = SPACE.encode(arch)
        assert len(vec) == SPACE.encoding_size() == 480 and set(vec) <= {0.0, 1.0}
        back = SPACE.decode(vec)
        assert back.key(SPACE) == arch.key(SPACE) and back.depths == arch.depths and back.quantized == quantized
        assert SPACE.encode(Arch.from_dict(arch.to_dict())) == vec


def test_encoding_layout():
    arch = SPACE.largest(bits=8)
    arch.depths[0] = 2  # blocks 2 and 3 of stage 0 are skipped: all-zero slots
    vec = SPACE.encode(arch)
    per_block = 3 + 3 + LAYERS_PER_BLOCK * 2 * 3
    assert sum(vec[2 * per_block:4 * per_block]) == 0
    assert vec[:per_block] == [0, 0, 1, 0, 0, 1] + [0, 0, 1] * (2 * LAYERS_PER_BLOCK)  # k7, e6, 8-bit everywhere
    fp = SPACE.encode(SPACE.largest())
    assert all(v == 0 for b in range(SPACE.num_blocks) for v in fp[b * per_block + 6:(b + 1) * per_block])


def test_bad_arch_is_refused():
    arch = SPACE.sample(random.Random(0))
    arch.kernels[3] = 4
    with pytest.raises(ValueError, match="kernels"):
        SPACE.encode(arch)
    with pytest.raises(ValueError, match="'vec' expected 480 values, got 3"):
        SPACE.decode([0, 1, 0])
    with pytest.raises(ValueError, match="'bits' expected a non-empty tuple"):
        SearchSpace(bits=())


def test_mutation_and_crossover():
    rng = random.Random(2)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    assert SPACE.mutate(a, rng, 0.0).to_dict() == a.to_dict()
    SPACE.check(SPACE.mutate(a, rng, 1.0))
    child = SPACE.crossover(a, b, rng)
    SPACE.check(child)
    assert all(c in (x, y) for c, x, y in zip(child.kernels, a.kernels, b.kernels))
    assert any(c != x for c, x in zip(child.kernels, a.kernels)) and any(c != y for c, y in zip(child.kernels, b.kernels))


def test_bops_counts_bits_and_depth():
    big8, big4 = SPACE.largest(8), SPACE.largest(4)
    assert SPACE.bops(big8) == 4 * SPACE.bops(big4)
    small = SPACE.largest(8)
    small.depths = [2] * len(SPACE.stages)
    assert SPACE.bops(small) < SPACE.bops(big8)


def test_pairwise_accuracy():
    assert pairwise_accuracy([1, 2, 3], [10, 20, 30]) == 1.0
    assert pairwise_accuracy([3, 2, 1], [10, 20, 30]) == 0.0
    assert pairwise_accuracy([1, 3, 2], [10, 20, 20]) == 1.0  # tied targets have no order and are left out
    with pytest.raises(ValueError, match="every target is equal"):
        pairwise_accuracy([1, 2], [5, 5])


def _synthetic(n, quantized, seed):
    """Accuracy as a fixed random linear function of the encoding, plus noise (a stand-in for measured pairs)."""
    rng = random.Random(seed)
    weights = torch.Generator().manual_seed(123)
    w = torch.randn(SPACE.encoding_size(), generator=weights) * 0.01
    x = torch.tensor([SPACE.encode(SPACE.sample(rng, quantized)) for _ in range(n)])
    y = 0.7 + x @ w + 0.002 * torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return x, y


def test_predictor_learns_a_ranking():
    torch.manual_seed(0)
    x, y = _synthetic(400, False, 0)
    model = AccuracyPredictor(SPACE.encoding_size(), hidden=64)
    losses = fit(model, x[:300], y[:300], epochs=60)
    assert losses[-1] < 0.2 * losses[0]
    assert pairwise_accuracy(model.predict(x[300:]), y[300:]) > 0.75


def test_transfer_starts_from_the_fp_predictor():
    torch.manual_seed(0)
    xf, yf = _synthetic(300, False, 1)
    fp = AccuracyPredictor(SPACE.encoding_size(), hidden=64)
    fit(fp, xf, yf, epochs=40)
    xq, yq = _synthetic(120, True, 2)
    q, losses = transfer(fp, xq[:60], yq[:60], epochs=30)
    assert q is not fp and torch.equal(fp.base, q.base)  # the base is kept, the FP predictor is untouched
    assert losses[-1] < losses[0]
    assert pairwise_accuracy(q.predict(xq[60:]), yq[60:]) > 0.6


def test_predictor_refuses_bad_data():
    with pytest.raises(ValueError, match="expected x \\[n, features\\] and y \\[n\\]"):
        fit(AccuracyPredictor(4, hidden=8), torch.zeros(3, 4), torch.zeros(2))


def test_evolution_improves_under_the_budget():
    w = torch.randn(SPACE.encoding_size(), generator=torch.Generator().manual_seed(5))
    score = lambda archs: (torch.tensor([SPACE.encode(a) for a in archs]) @ w).tolist()  # noqa: E731
    rng = random.Random(0)
    budget = sorted(SPACE.bops(SPACE.sample(rng)) for _ in range(50))[25]  # the median of random samples
    cfg = EvolutionConfig(population=20, parents=5, mutations=10, crossovers=10, generations=15, seed=0)
    res = evolve(SPACE, score, SPACE.bops, budget, cfg)
    assert res.best_cost <= budget and all(c <= budget for _, _, c in res.population)
    assert all(b >= a for a, b in zip(res.history, res.history[1:]))  # the parents survive: never worse
    assert res.history[-1] > res.history[0]
    assert res.best_score == max(s for _, s, _ in res.population)


def test_evolution_reports_an_impossible_budget():
    with pytest.raises(RuntimeError, match="no candidate within the budget"):
        evolve(SPACE, lambda archs: [0.0] * len(archs), SPACE.bops, 1.0,
               EvolutionConfig(population=2, parents=1, generations=1, max_tries=3))
    with pytest.raises(ValueError, match="'parents' expected 1..population"):
        EvolutionConfig(population=4, parents=5)
