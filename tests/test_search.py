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
        assert len(vec) == SPACE.encoding_size() == 828 and set(vec) <= {0.0, 1.0}
        back = SPACE.decode(vec)
        assert back.key(SPACE) == arch.key(SPACE) and back.depths == arch.depths and back.quantized == quantized
        assert SPACE.encode(Arch.from_dict(arch.to_dict())) == vec


def test_encoding_layout():
    arch = SPACE.largest(bits=8)
    arch.depths[0] = 2  # blocks 2 and 3 of stage 0 are skipped: all-zero slots
    vec = SPACE.encode(arch)
    # per block: kernel one-hot, the block's own width choices, then w/a bits of its three layers
    sizes = [3 + len(SPACE.expand_choices(i)) + LAYERS_PER_BLOCK * 2 * 3 for i in range(SPACE.num_blocks)]
    start = [sum(sizes[:i]) for i in range(SPACE.num_blocks + 1)]
    assert sizes[0] == 3 + 5 + 18  # block 0: 16 input channels, hidden 64, 72, 80, 88, 96 (APQ: 4B-6B, step 8)
    assert sum(vec[start[2]:start[4]]) == 0
    assert vec[:sizes[0]] == [0, 0, 1] + [0, 0, 0, 0, 1] + [0, 0, 1] * (2 * LAYERS_PER_BLOCK)  # k7, 96, 8-bit
    fp = SPACE.encode(SPACE.largest())
    assert all(v == 0 for b in range(SPACE.num_blocks)
               for v in fp[start[b] + 3 + len(SPACE.expand_choices(b)):start[b + 1]])


def test_bad_arch_is_refused():
    arch = SPACE.sample(random.Random(0))
    arch.kernels[3] = 4
    with pytest.raises(ValueError, match="kernels"):
        SPACE.encode(arch)
    with pytest.raises(ValueError, match=f"'vec' expected {SPACE.encoding_size()} values, got 3"):
        SPACE.decode([0, 1, 0])
    with pytest.raises(ValueError, match="'bits' expected a non-empty tuple"):
        SearchSpace(bits=())


def test_width_choices_are_apqs_fine_grained_channels():
    """APQ section 3.1: hidden channels from 4B to 6B in steps of 8 (B: the block's input channels); the choices
    depend on the block. With channel_step 0 the listed ratios are the choices (OFA's {3, 4, 6})."""
    from cmn_ext.search.space import hidden_channels

    for i, (_s, _j, cin, _cout, _stride) in enumerate(SPACE.block_slots()):
        hidden = [SPACE.hidden(i, e) for e in SPACE.expand_choices(i)]
        assert hidden == list(range(4 * cin, 6 * cin + 1, 8)), (i, cin)
        assert all(hidden_channels(cin, e) == h for e, h in zip(SPACE.expand_choices(i), hidden))
    assert SPACE.expand_choices(4) == (4, 13 / 3, 14 / 3, 5, 16 / 3, 17 / 3, 6)  # B = 24: 96, 104, ..., 144
    ratios = SearchSpace(expands=(3, 4, 6), channel_step=0)
    assert all(ratios.expand_choices(i) == (3, 4, 6) for i in range(ratios.num_blocks))
    with pytest.raises(ValueError, match="'channel_step' expected an int >= 0"):
        SearchSpace(channel_step=-8)
    # a fractional width survives JSON and is refused where the block does not have it
    import json

    arch = SPACE.sample(random.Random(3))
    arch.expands[4] = 13 / 3
    back = Arch.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert SPACE.encode(back) == SPACE.encode(arch)
    back.expands[0] = 13 / 3  # block 0 (B = 16) has 4, 4.5, ..., 6
    with pytest.raises(ValueError, match="expands"):
        SPACE.check(back)


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


def test_distillation_term_comes_from_a_frozen_teacher():
    """Progressive shrinking distills from the largest network (APQ 3.1, OFA): the loss with kd weight > 0 is the
    label cross-entropy plus the weighted soft-label term; the teacher takes no gradient."""
    from cmn_ext.search.supernet import distill_loss, make_teacher, shrink_step_loss

    net = _tiny_net()
    teacher = make_teacher(net)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert teacher.active.to_dict() == TINY.largest().to_dict()
    small = TINY.sample(random.Random(1), quantized=False)
    small.depths = [1, 1]
    net.set_active(small)
    net.train()
    x, y = torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    plain, kd0 = shrink_step_loss(net, x, y, teacher, kd_weight=0.0)
    torch.manual_seed(0)
    ce = torch.nn.functional.cross_entropy(net(x), y)
    assert kd0 is None and torch.allclose(plain, ce)
    torch.manual_seed(0)
    loss, kd = shrink_step_loss(net, x, y, teacher, kd_weight=0.5)
    assert kd is not None and float(kd.detach()) > 0 and not torch.allclose(loss, plain)
    torch.testing.assert_close(loss, plain + 0.5 * kd)
    net.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert net.blocks[0].expand.weight.grad is not None
    # the soft-label term: zero gradient where the student already matches the teacher; T^2-scaled
    z = torch.randn(4, 10)
    assert float(distill_loss(z, z)) == pytest.approx(float(-(z.softmax(1) * z.log_softmax(1)).sum(1).mean()))
    assert float(distill_loss(z, z, 2.0)) == pytest.approx(4 * float(distill_loss(z / 2, z / 2)), rel=1e-5)


def test_train_supernet_distills_in_the_shrinking_phases(monkeypatch):
    from cmn_ext.search import supernet as sn

    made = []
    real = sn.make_teacher

    def spy(net):
        t = real(net)
        made.append((t, {k: v.clone() for k, v in t.state_dict().items()}))
        return t
    monkeypatch.setattr(sn, "make_teacher", spy)
    torch.manual_seed(0)
    data = [(torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,))) for _ in range(2)]
    net = sn.ElasticMobileNetV2(TINY, 10, last_channels=32)
    records = sn.train_supernet(net, data, epochs={"largest": 1, "kernel": 1, "expand": 1}, kd_weight=1.0,
                                progress=False)
    assert len(made) == 1  # one teacher, made after the largest phase
    teacher, before = made[0]
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # frozen, BN statistics too
    assert not teacher.training
    assert [r["phase"] for r in records] == ["largest", "kernel", "expand"]
    assert records[0]["kd"] is None and records[1]["kd"] > 0 and records[2]["kd"] > 0
    made.clear()
    records = sn.train_supernet(sn.ElasticMobileNetV2(TINY, 10, last_channels=32), data,
                                epochs={"largest": 1, "kernel": 1}, kd_weight=0.0, progress=False)
    assert made == [] and records[1]["kd"] is None


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


def _frame():
    """The fixed part of the tiny networks (_tiny_net): 3 input channels, a 32-channel head, 10 classes."""
    from cmn_ext.search.space import Frame

    return Frame(in_channels=3, last_channels=32, num_classes=10)


def test_cost_table_sums_measured_layers(tmp_path):
    from cmn_ext.search.cost import CostTable, deployed_key

    fake = lambda layer: (layer[6] * 1e-6 + layer[1] * 1e-3, "fake")  # noqa: E731  deterministic "measurement"
    table = CostTable(str(tmp_path / "t.json"), "cpu", measure=fake)
    arch = TINY.sample(random.Random(5))
    layers = TINY.deploy_layers(arch, 12, 1, _frame())
    assert table.latency_ms(TINY, arch, 12, 1, _frame()) == pytest.approx(sum(fake(l)[0] for l in layers))
    assert table.measured == len({deployed_key(l) for l in layers})
    table.latency_ms(TINY, arch, 12, 1, _frame())
    assert table.measured == len({deployed_key(l) for l in layers})  # looked up, not measured again
    table.save()
    again = CostTable(str(tmp_path / "t.json"), "cpu", measure=lambda layer: pytest.fail("measured again"))
    total = table.latency_ms(TINY, arch, 12, 1, _frame())
    assert again.latency_ms(TINY, arch, 12, 1, _frame()) == pytest.approx(total)
    parts = again.breakdown(TINY, arch, 12, 1, _frame())
    assert parts["total"] == pytest.approx(total) and parts["layers"] == len(layers)
    with pytest.warns(UserWarning, match="measured again"):  # a table of another mode is not reused
        CostTable(str(tmp_path / "t.json"), "cpu", measure=fake, mode="kernels")


def test_latency_table_counts_every_layer_of_the_deployed_network():
    """The table's prediction for a network sums one entry per layer the converted network runs: its conv /
    linear layers in order (same shapes, bits and kernel as convert gives them), the pooling and the engine
    call. Count-based: a fake measurement of 1 ms per layer (no timing is asserted)."""
    from cmn_ext.nn import convert
    from cmn_ext.nn.qat import qlayers
    from cmn_ext.search.cost import CostTable, deployed_kernel, deployed_key
    from cmn_ext.search.pairs import quantize_subnet

    net = _tiny_net()
    for seed in (6, 7):
        arch = TINY.sample(random.Random(seed))
        layers = TINY.deploy_layers(arch, 12, 1, _frame())
        sub = quantize_subnet(net.extract(arch), TINY, arch)
        sub.train()
        with torch.no_grad():
            sub(torch.randn(4, 3, 12, 12))  # calibrates the activation clips
        _, report = convert(sub.eval())
        q = qlayers(sub)
        convs = [l for l in layers if l.kind not in ("call", "pool")]
        assert [l.kind for l in layers if l.kind in ("call", "pool")] == ["call", "pool"]
        assert len(convs) == len(q) == len(report)
        for layer, (name, m), r in zip(convs, q, report):
            assert r["layer"] == name
            if layer.kind == "classifier":
                assert (m.in_features, m.out_features) == (layer.cin, layer.cout)
            else:
                assert (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) == \
                    (layer.cin, layer.cout, layer.k, layer.stride), name
                assert (m.groups == m.in_channels > 1) == (layer.kind == "depthwise"), name
            assert (m.w_quant.bits, m.a_quant.bits, m.a_quant.signed) == (layer.wbits, layer.abits, layer.signed), name
            assert deployed_kernel(layer) == r["kernel"], name  # int8 kernel or a float layer, as convert chose
        table = CostTable(None, "cpu", measure=lambda layer: (1.0, "fake"))
        assert table.latency_ms(TINY, arch, 12, 1, _frame()) == len(report) + 2
        parts = table.breakdown(TINY, arch, 12, 1, _frame())
        searched = TINY.layer_costs(arch, 12)
        assert parts["engine_call"] == 1 and parts["searched_on_kernels"] + parts["searched_float"] == len(searched)
        assert parts["fixed_layers"] == 3 + 3  # stem, first block (depthwise, project); head, pool, classifier
    # bits that run the same deployed program share an entry; a depthwise conv runs in float at any bits
    expand = next(l for l in searched if l.kind == "expand")
    e4, e8 = expand._replace(wbits=4, abits=4), expand._replace(wbits=8, abits=8)
    assert deployed_key(e4) == deployed_key(e8) and deployed_kernel(e4) == "int8"
    dw = next(l for l in searched if l.kind == "depthwise")
    assert deployed_key(dw._replace(wbits=4)) == deployed_key(dw._replace(wbits=8)) and deployed_kernel(dw) is None


def test_deployed_measurement_runs_each_layer_as_the_engine_does():
    from cmn_ext.search.cost import measure_deployed
    from cmn_ext.search.space import Layer

    cases = {Layer("expand", 8, 16, 1, 1, 6, 0, 4, 4, relu=True, signed=True): "cmn.int8_conv2d",
             Layer("project", 16, 8, 1, 1, 6, 0, 6, 8, residual=True): "cmn.int8_conv2d",
             Layer("depthwise", 16, 16, 3, 2, 6, 0, 8, 8, relu=True): "float fake-quant",
             Layer("classifier", 32, 10, 1, 1, 1, 0, 8, 8): "cmn.int8_conv2d",
             Layer("pool", 32, 32, 3, 1, 3, 0, 32, 32): "torch avg pool",
             Layer("call", 3, 3, 0, 1, 12, 0, 32, 32): "deploy engine call"}
    for layer, want in cases.items():
        ms, what = measure_deployed(layer, reps=1)
        assert ms >= 0 and what.startswith(want), (layer, what)


def test_cost_table_is_keyed_by_bits_and_measures_each_bitwidth_on_its_kernel(tmp_path):
    """The measured table: one entry per bitwidth, each timed on the kernel those bits run on (no assertion on
    the times themselves: tests never depend on the machine's speed)."""
    import json

    from cmn_ext.search.cost import TABLE_VERSION, CostTable, kernel_for, layer_key, measure_layer

    table = CostTable(str(tmp_path / "t.json"), "cpu", measure=lambda layer: measure_layer(layer, "cpu", reps=1),
                      mode="kernels")
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
    assert ":w4:a4:" in layer_key(dense[2]) and ":w8:a8:" in layer_key(dense[5])
    table.save()
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["version"] == TABLE_VERSION and saved["mode"] == "kernels"
    assert len(saved["entries"]) == len(table.entries)
    # a table from before the bit-specific kernels (no version: every <= 8-bit layer timed on int8) is re-measured
    saved.pop("version")
    (tmp_path / "old.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="measured again"):
        old = CostTable(str(tmp_path / "old.json"), "cpu", measure=lambda layer: (1.0, "fake"), mode="kernels")
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
                "baseline_8bit_acc", "baseline_8bit_latency_ms", "device", "latency_fields", "latency_table"):
        assert key in final
    assert final["pairs_fp"] == 16 and final["pairs_quant"] == 12
    chosen = final["candidates"]["chosen"]
    assert chosen["cost"] <= final["budget"] + 1e-9
    assert chosen["layers_on_kernels"] > 0 and chosen["deploy_argmax_agree"] >= 0.9
    for c in final["candidates"].values():  # the table's prediction beside the measured latency, every candidate
        assert c["table_latency_ms_batch1"] > 0 and c["deploy_latency_ms_batch1"] > 0
        assert c["table_over_measured"] == pytest.approx(c["table_latency_ms_batch1"] / c["deploy_latency_ms_batch1"])
        assert (c["table_layers"], c["table_layers_on_kernels"]) == (c["layers"], c["layers_on_kernels"])
    records = torch.load(run / "supernet.pt", weights_only=False)["records"]
    assert records[0]["kd"] is None and all(r["kd"] is not None for r in records[1:])  # distilled after 'largest'
    assert_no_machine_paths(final, str(tmp_path))
    assert final["plot"] in (None, "pareto.png") and (final["plot"] is None or (run / final["plot"]).exists())


def assert_no_machine_paths(summary, *roots):
    """No string in ``summary`` is an absolute path or contains one of ``roots``."""
    import os

    def walk(o, where):
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{where}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{where}[{i}]")
        elif isinstance(o, str):
            assert not os.path.isabs(o) and not any(r in o for r in roots), f"{where} = {o!r}"
            assert ":/" not in o, f"{where} = {o!r} (a spec with an absolute root)"
    walk(summary, "summary")


def test_committed_apq_results_hold_no_machine_paths():
    import json
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "apq_cifar10.json")
    summary = json.load(open(path))
    assert_no_machine_paths(summary, "/work/", "/home/", "/tmp/")
    assert summary["plot"] == "pareto.png"


def test_summary_names_datasets_without_their_root():
    from cmn_ext.search.pipeline import portable_spec

    assert portable_spec("imagefolder:/work/shared/data/cifar10-jpeg.tar.gz") == "imagefolder:cifar10-jpeg.tar.gz"
    assert portable_spec("cifar10:/data/cifar/") == "cifar10:cifar"
    assert portable_spec("digits") == "digits" and portable_spec("imagefolder:cifar10-jpeg") == "imagefolder:cifar10-jpeg"


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
