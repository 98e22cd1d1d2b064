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


# ---- supernet, pairs, cost table, the whole pipeline ----------------------------------------------------------
TINY = SearchSpace(stages=((16, 1), (24, 2)), depths=(1, 2), kernels=(3, 5), expands=(2, 3), bits=(4, 8),
                   stem_channels=8, first_block_channels=8)


def _tiny_net():
    from cmn_ext.search.supernet import ElasticMobileNetV2

    torch.manual_seed(0)
    net = ElasticMobileNetV2(TINY, 10, last_channels=32)
    for m in net.modules():  # non-trivial BN statistics, so that slicing errors would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def test_extracted_subnet_equals_the_supernet():
    net, x = _tiny_net(), torch.randn(2, 3, 12, 12)
    rng = random.Random(3)
    for _ in range(6):
        arch = TINY.sample(rng, quantized=False)
        net.set_active(arch)
        sub = net.extract(arch).eval()
        assert len(sub.blocks) == sum(arch.depths)
        torch.testing.assert_close(sub(x), net(x), rtol=1e-5, atol=1e-5)


def test_channel_sorting_keeps_the_largest_network():
    net, x = _tiny_net(), torch.randn(2, 3, 12, 12)
    net.set_active(TINY.largest())
    before = net(x)
    net.sort_channels()
    torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-5)
    block = net.blocks[0]
    norms = block.project.weight.abs().sum(dim=(0, 2, 3))
    assert bool((norms[:-1] >= norms[1:]).all())


def test_progressive_shrinking_phases():
    from cmn_ext.search.supernet import phase_sampler

    rng = random.Random(0)
    big = TINY.largest()
    for phase, free in (("largest", set()), ("kernel", {"kernels"}), ("depth", {"kernels", "depths"}),
                        ("expand", {"kernels", "depths", "expands"})):
        sample = phase_sampler(TINY, phase, rng)
        seen = [sample() for _ in range(30)]
        for field in ("kernels", "depths", "expands"):
            varies = any(getattr(a, field) != getattr(big, field) for a in seen)
            assert varies == (field in free), (phase, field)
    with pytest.raises(ValueError, match="phase expected one of"):
        phase_sampler(TINY, "width", rng)


def test_quantized_subnet_has_the_policy():
    from cmn_ext.nn.qat import qlayers
    from cmn_ext.search.pairs import quantize_subnet

    net = _tiny_net()
    arch = TINY.sample(random.Random(4))
    sub = quantize_subnet(net.extract(arch), TINY, arch)
    layers = dict(qlayers(sub))
    active = [i for i, (s, j, *_r) in enumerate(TINY.block_slots()) if j < arch.depths[s]]
    for b, i in enumerate(active):
        for layer, suffix in enumerate(("conv.0.0", "conv.1.0", "conv.2.0")):
            m = layers[f"blocks.{b}.{suffix}"]
            assert (m.w_quant.bits, m.a_quant.bits) == (arch.wbits[i][layer], arch.abits[i][layer])
    assert layers["stem.0"].w_quant.bits == 8


def test_pairs_are_resumable_and_sharded(tmp_path, monkeypatch):
    from cmn_ext.search import pairs

    calls = []
    monkeypatch.setattr(pairs, "measure", lambda net, arch, *a, **k: calls.append(arch) or 0.5)
    net = _tiny_net()
    for rank in (0, 1):
        pairs.collect(net, str(tmp_path), "fp", 5, None, None, shard=(rank, 2), progress=False)
    got = pairs.load(str(tmp_path), "fp")
    assert [p["index"] for p in got] == [0, 1, 2, 3, 4] and len(calls) == 5
    pairs.collect(net, str(tmp_path), "fp", 7, None, None, progress=False)  # only 5 and 6 are new
    assert len(calls) == 7 and len(pairs.load(str(tmp_path), "fp")) == 7
    assert Arch.from_dict(got[3]["arch"]).to_dict() == pairs.arch_for_index(TINY, 0, 3, False).to_dict()
    with pytest.raises(ValueError, match="'shard' expected"):
        pairs.collect(net, str(tmp_path), "fp", 1, None, None, shard=(2, 2))


def test_cost_table_sums_measured_layers(tmp_path):
    from cmn_ext.search.cost import CostTable, kernel_for, layer_key, measure_layer

    fake = lambda layer: (layer[6] * 1e-6 + layer[7] * 1e-3, "fake")  # noqa: E731  deterministic "measurement"
    table = CostTable(str(tmp_path / "t.json"), "cpu", measure=fake)
    arch = TINY.sample(random.Random(5))
    layers = TINY.layer_costs(arch, 12)
    assert table.latency_ms(TINY, arch, 12) == pytest.approx(sum(fake(l)[0] for l in layers))
    assert table.measured == len({layer_key(l) for l in layers})
    table.latency_ms(TINY, arch, 12)
    assert table.measured == len({layer_key(l) for l in layers})  # looked up, not measured again
    table.save()
    again = CostTable(str(tmp_path / "t.json"), "cpu", measure=lambda layer: pytest.fail("measured again"))
    assert again.latency_ms(TINY, arch, 12) == pytest.approx(table.latency_ms(TINY, arch, 12))
    # the real measurement: our kernels for dense 1x1 layers (which one depends on the bits), PyTorch's conv for
    # depthwise ones
    dense = next(l for l in layers if l[0] == "expand")
    dw = next(l for l in layers if l[0] == "depthwise")
    (ms1, k1), (ms2, k2) = measure_layer(dense, reps=2), measure_layer(dw, reps=2)
    want = {"apot": "cmn.apot_conv2d", "int8": "cmn.int8_conv2d"}[kernel_for(dense)]
    assert ms1 > 0 and ms2 > 0 and k1 == want and k2.startswith("torch conv2d")


def test_cost_table_is_keyed_by_bits_and_measures_each_bitwidth_on_its_kernel(tmp_path):
    """The measured table: one entry per bitwidth, each timed on the kernel those bits run on (no assertion on
    the times themselves: tests never depend on the machine's speed)."""
    import json

    from cmn_ext.search.cost import TABLE_VERSION, CostTable, kernel_for, layer_key, measure_layer

    table = CostTable(str(tmp_path / "t.json"), "cpu", measure=lambda layer: measure_layer(layer, "cpu", reps=1))
    bits = [(1, 1), (2, 2), (4, 4), (4, 8), (6, 6), (8, 8), (32, 32)]
    dense = [("expand", 8, 16, 1, 1, 4, 4 * 4 * 8 * 16, w, a) for w, a in bits]
    dw = [("depthwise", 16, 16, 3, 1, 4, 4 * 4 * 16 * 9, w, a) for w, a in bits[:3]]
    for layer in dense + dw:
        assert table.layer_ms(layer) > 0
    assert len(table.entries) == len(dense) + len(dw)  # distinct keys: the bits are part of the key
    kernels = [table.entries[layer_key(l)]["kernel"] for l in dense]
    assert kernels == ["cmn.binary_conv2d", "cmn.apot_conv2d", "cmn.apot_conv2d", "cmn.int8_conv2d",
                       "cmn.int8_conv2d", "cmn.int8_conv2d", "torch conv2d float32"]
    assert [kernel_for(l) for l in dense] == ["binary", "apot", "apot", "int8", "int8", "int8", "float"]
    assert {table.entries[layer_key(l)]["kernel"] for l in dw} == {"torch conv2d float32"}  # no low-bit depthwise
    assert layer_key(dense[2]).endswith(":w4:a4") and layer_key(dense[5]).endswith(":w8:a8")
    table.save()
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["version"] == TABLE_VERSION and len(saved["entries"]) == len(table.entries)
    # a table from before the bit-specific kernels (no version: every <= 8-bit layer timed on int8) is re-measured
    saved.pop("version")
    (tmp_path / "old.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="measured again"):
        old = CostTable(str(tmp_path / "old.json"), "cpu", measure=lambda layer: (1.0, "fake"))
    assert old.entries == {} and old.layer_ms(dense[0]) == 1.0


def test_bitfusion_cost_falls_with_every_bit():
    """The BitFusion model: a b_w x b_a multiply is ceil(b_w/2) x ceil(b_a/2) 2-bit BitBrick products."""
    from cmn_ext.search.cost import bitbricks, bitfusion_cost, layer_bitfusion

    assert [bitbricks(b, b) for b in (1, 2, 3, 4, 5, 6, 7, 8)] == [1, 1, 4, 4, 9, 9, 16, 16]
    assert bitbricks(8, 4) == 8 and bitbricks(32, 32) == 256
    for kind in ("expand", "depthwise", "project"):
        costs = [layer_bitfusion((kind, 16, 16, 3, 1, 8, 1000, b, b)) for b in (8, 6, 4, 2)]
        assert costs == [16_000, 9_000, 4_000, 1_000]  # strictly lower with fewer bits, in every layer kind
    # an architecture: hand count from its MACs
    arch8, arch4 = TINY.largest(8), TINY.largest(4)
    macs = sum(l[6] for l in TINY.layer_costs(arch8, 12))
    assert bitfusion_cost(TINY, arch8, 12) == 16 * macs and bitfusion_cost(TINY, arch4, 12) == 4 * macs
    # one layer's bits alone move the cost (the joint search has something to gain from bits)
    one = TINY.largest(8)
    one.wbits[0][1] = 4  # the first block's depthwise weights: 8 -> 4 bits
    dw_macs = TINY.layer_costs(one, 12)[1][6]
    assert bitfusion_cost(TINY, one, 12) == 16 * macs - (16 - 8) * dw_macs


@pytest.mark.slow
def test_cmn_search_end_to_end(tmp_path):
    import json

    from cmn_ext.cli import main

    run = tmp_path / "apq"
    args = ["search", f"run_dir={run}", "data.image_size=8", "data.limit={train: 192, val: 96, test: 96}",
            "search.supernet.epochs={largest: 1, kernel: 1, depth: 1, expand: 1}", "search.supernet.last_channels=32",
            "search.pairs.fp=16", "search.pairs.quant=12", "search.pairs.calib_batches=1",
            "search.pairs.finetune_steps=1", "search.predictor.hidden=32", "search.predictor.epochs=10",
            "search.predictor.transfer_epochs=5", "search.predictor.budgets=[4]", "search.evolution.population=12",
            "search.evolution.parents=4", "search.evolution.mutations=4", "search.evolution.crossovers=4",
            "search.evolution.generations=3", "search.finalize.latency_reps=2",
            # the BOPs objective: a budget from measured latencies depends on the machine's load (it once left
            # no candidate within budget on a busy CI machine); the latency table has its own test
            "search.cost.objective=bops", "--no-progress", "--json"]
    assert main(args + ["--stage", "supernet,pairs"]) == 0
    assert not (run / "evolve.json").exists()
    assert main(args) == 0  # continues: the supernet and pairs are reused
    final = json.loads((run / "final.json").read_text())
    for key in ("predictor_pairwise_acc", "pairs_fp", "pairs_quant", "chosen_acc", "chosen_latency_ms",
                "baseline_8bit_acc", "baseline_8bit_latency_ms", "device"):
        assert key in final
    assert final["pairs_fp"] == 16 and final["pairs_quant"] == 12
    chosen = final["candidates"]["chosen"]
    assert chosen["cost"] <= final["budget"] + 1e-9
    assert chosen["layers_on_kernels"] > 0 and chosen["deploy_argmax_agree"] >= 0.9


def test_uniform_bits_view_keeps_one_bitwidth():
    from cmn_ext.search import UniformBits

    view = UniformBits(SPACE, 6)
    rng = random.Random(7)
    archs = [view.sample(rng)] + [view.mutate(SPACE.sample(rng), rng, 0.5) for _ in range(3)]
    archs.append(view.crossover(SPACE.sample(rng), SPACE.sample(rng), rng))
    for a in archs:
        SPACE.check(a)
        assert {v for row in a.wbits + a.abits for v in row} == {6}
    with pytest.raises(ValueError, match="'bits' expected one of"):
        UniformBits(SPACE, 5)
