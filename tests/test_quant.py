"""Quantizers: exact level sets, integer forms, straight-through gradients."""

import pytest
import torch

from cmn_ext.quant import (APoTQuantizer, BinaryAct, BinaryWeight, DoReFaAct, DoReFaWeight, LinearQuantizer,
                           apot_level_table, apot_magnitudes, kl_clip, make_quantizer, spec_of)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_dorefa_weight_levels(bits):
    w = torch.randn(64, 8, 3, 3) * 3
    q = DoReFaWeight(bits)(w)
    n = 2**bits - 1
    expected = {(2 * i - n) for i in range(n + 1)}
    got = set(torch.round(q * n).long().unique().tolist())
    assert got <= expected and len(got) >= min(len(expected), 3)
    assert torch.allclose(q * n, torch.round(q * n), atol=1e-4)
    ints, scale = DoReFaWeight(bits).integer(w)
    assert torch.allclose(ints * scale, q, atol=1e-6)
    assert q.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dorefa_act_levels_and_gradient(bits):
    x = torch.linspace(-0.5, 1.5, 2001, requires_grad=True)
    q = DoReFaAct(bits)(x)
    n = 2**bits - 1
    assert set(torch.round(q * n).long().unique().tolist()) == set(range(n + 1))
    q.sum().backward()
    inside = (x.detach() > 0) & (x.detach() < 1)
    assert torch.equal(x.grad, inside.float())  # STE inside (0, 1), zero where clipped


def test_dorefa_act_one_bit_matches_pack_bits_01():
    x = torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0, 2.0]).view(1, 6, 1, 1)
    q = DoReFaAct(1)(x)
    assert q.flatten().tolist() == [0, 0, 1, 1, 1, 1]
    assert torch.equal(BinaryAct("01")(x), q)
    bits = torch.ops.cmn.pack_bits(x, "01")
    assert int(bits.flatten()[0]) == 0b111100


def test_binary_weight_scale_and_sign_of_zero():
    w = torch.tensor([[1.0, -3.0, 0.0, 2.0], [-0.5, -0.5, 0.5, 0.5]]).view(2, 4, 1, 1).requires_grad_()
    q = BinaryWeight()(w)
    assert q.view(2, 4).tolist() == [[1.5, -1.5, 1.5, 1.5], [-0.5, -0.5, 0.5, 0.5]]
    q.sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.5] * 4 + [0.5] * 4).view(2, 4, 1, 1))  # identity STE x alpha


def test_binary_act_pm1_gradient_is_hardtanh():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 3.0], requires_grad=True)
    q = BinaryAct("pm1")(x)
    assert q.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    q.sum().backward()
    assert x.grad.tolist() == [0, 0, 1, 1, 1, 0, 0]  # 1 strictly inside (-1, 1)


def test_apot_magnitude_tables_are_the_papers():
    assert apot_magnitudes(4) == ((0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48), 48)
    assert apot_magnitudes(3) == ((0, 1, 2, 3, 4, 6, 8, 10), 10)
    assert apot_magnitudes(2) == ((0, 1, 2, 3), 3)  # 2-bit: uniform fallback
    mags, den = apot_magnitudes(6)
    assert len(set(mags)) == 64 and den == max(mags)
    for v in apot_magnitudes(4)[0] + apot_magnitudes(3)[0]:  # every level is 0, 2^a or 2^a + 2^b
        assert v == 0 or bin(v).count("1") <= 2


def test_apot_five_bit_weights_train_but_do_not_fit_the_kernels():
    q = APoTQuantizer(5, signed=True)
    y = q(torch.randn(4096) * 4)
    mags, den = apot_magnitudes(4)
    alpha = float(q.alpha.detach())
    assert set(torch.round(y.abs() / alpha * den).long().tolist()) <= set(mags)
    with pytest.raises(ValueError, match="4-bit codes"):
        apot_level_table(5, True)


@pytest.mark.parametrize("bits,signed", [(4, True), (3, True), (2, True), (4, False), (3, False), (2, False)])
def test_apot_levels_codes_and_integer_form(bits, signed):
    q = APoTQuantizer(bits, signed=signed)
    x = torch.randn(4096) * 4 if signed else torch.rand(4096) * 12
    y = q(x)
    table, den = apot_level_table(bits, signed)
    alpha = float(q.alpha.detach())
    levels = set(torch.round(y / alpha * den).long().tolist())
    assert levels <= set(table.tolist())
    codes = q.codes(x)
    assert codes.dtype == torch.uint8 and int(codes.max()) < 16
    assert torch.allclose(table[codes.long()].float() * alpha / den, y, atol=1e-5)
    ints, scale = q.integer(x)
    assert torch.allclose(ints * scale, y, atol=1e-5)


def test_apot_weights_are_standardized_and_alpha_gets_the_rcf_gradient():
    q = APoTQuantizer(4, signed=True, alpha=2.0)
    w = (torch.randn(1000) * 0.01 + 5.0).requires_grad_()  # scale and offset removed by standardisation
    y = q(w)
    assert float(y.abs().max()) <= 2.0 + 1e-6
    assert abs(float(y.mean())) < 0.2
    q2 = APoTQuantizer(4, signed=False, alpha=1.0)
    x = torch.tensor([0.3, 2.0])  # 0.3 inside the range, 2.0 clipped
    out = q2(x)
    out.sum().backward()
    proj = float(out[0])  # proj(0.3) * alpha with alpha = 1
    assert q2.alpha.grad.item() == pytest.approx((proj - 0.3) + 1.0, abs=1e-6)


def test_apot_rejects_unsupported_bits():
    with pytest.raises(ValueError, match="'bits' expected one of"):
        APoTQuantizer(6, signed=False)


def test_linear_quantizer_levels_per_channel_and_kl_clip():
    w = torch.randn(8, 4, 3, 3)
    q = LinearQuantizer(8, signed=True, per_channel=True)
    ints, s = q.integer(w)
    assert ints.abs().max() <= 127 and s.shape == (8, 1, 1, 1)
    assert torch.equal(ints.flatten(1).abs().amax(1), torch.full((8,), 127))  # max maps to the top level
    assert torch.allclose(q(w), ints * s)
    a = LinearQuantizer(4, signed=False, clip="kl")
    x = torch.randn(20000).relu()
    y = a(x)
    assert float(a.clip_value) > 0 and len(y.unique()) <= 16 and float(y.min()) == 0.0
    x[:5] = 100.0  # a few outliers: clipping them costs less than a 25x coarser grid
    t = kl_clip(x, 4, signed=False)
    assert 0.5 < t < 20.0


def test_linear_gradient_zero_outside_clip():
    q = LinearQuantizer(4, signed=False, clip="kl")
    q.clip_value.fill_(1.0)
    x = torch.tensor([-0.5, 0.2, 0.9, 1.5], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 0]  # (0.9 is inside the clip of 1.0)


@pytest.mark.parametrize("spec,role,cls", [
    ({"kind": "dorefa", "bits": 4}, "weight", DoReFaWeight), ({"kind": "dorefa", "bits": 4}, "act", DoReFaAct),
    ({"kind": "binary"}, "weight", BinaryWeight), ({"kind": "binary", "encoding": "01"}, "act", BinaryAct),
    ({"kind": "apot", "bits": 4}, "weight", APoTQuantizer), ({"kind": "linear", "bits": 6}, "act", LinearQuantizer),
])
def test_make_quantizer_and_spec_roundtrip(spec, role, cls):
    q = make_quantizer(spec, role)
    assert isinstance(q, cls)
    again = make_quantizer(spec_of(q), role)
    assert type(again) is cls and again.bits == q.bits and again.signed == q.signed


def test_make_quantizer_errors():
    assert make_quantizer(None, "weight") is None and make_quantizer({"kind": "fp"}, "act") is None
    with pytest.raises(ValueError, match="'kind' expected one of"):
        make_quantizer({"kind": "ternary"}, "weight")
    with pytest.raises(ValueError, match="unknown keys"):
        make_quantizer({"kind": "dorefa", "bitz": 4}, "weight")
    with pytest.raises(ValueError, match="'bits' expected one of"):
        make_quantizer({"kind": "dorefa", "bits": 9}, "weight")
    with pytest.raises(ValueError, match="1-bit"):
        make_quantizer({"kind": "binary", "bits": 2}, "weight")
