"""cmn::pack_bits and cmn::pack_int4 on every backend, bit for bit against the reference (cmn_ext.ops.reference).
There are no Triton packing kernels: their Triton runs show as skipped."""

import pytest
import torch
from helpers import ENCODINGS, over_backends
from hypothesis import given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref
from cmn_ext.ops import unpack_bits, unpack_int4

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


# ---- pack_bits ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("c", [1, 31, 32, 33, 70, 100])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", over_backends("pack_bits"))
def test_pack_bits_matches_reference(backend, encoding, c, dtype):
    x = (torch.randn(3, c, 4, 5) if encoding == "pm1" else torch.rand(3, c, 4, 5)).to(dtype)
    x[0, 0, 0, 0] = -0.0  # packs as +1 ("pm1": x >= 0), like 0.0
    out = backend("pack_bits", x, encoding)
    assert out.dtype == torch.int32 and out.shape == (3, 4, 5, (c + 31) // 32)
    assert torch.equal(out, ref.pack_bits(x, encoding))


@pytest.mark.parametrize("backend", over_backends("pack_bits"))
def test_pack_bits_compares_in_the_input_dtype(backend):
    # -1e-50 and 0.5 - 1e-12 round to -0.0 and 0.5 in float32; the contract is about x itself.
    x = torch.tensor([-1e-50, 0.5 - 1e-12, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    assert backend("pack_bits", x)[0, 0, 0, 0].item() == 0b001
    assert backend("pack_bits", x, "01")[0, 0, 0, 0].item() == 0b100


@pytest.mark.parametrize("backend", over_backends("pack_bits"))
def test_pack_bits_bit_order_and_zero(backend):
    # channel c -> word c // 32, bit c % 32; x >= 0 is +1 (bit 0), so 0.0 packs as +1 (unlike torch.sign).
    x = torch.ones(1, 40, 1, 1)
    x[0, 0] = -1.0
    x[0, 33] = -2.0
    x[0, 5] = 0.0
    assert backend("pack_bits", x)[0, 0, 0].tolist() == [1, 2]


@pytest.mark.parametrize("backend", over_backends("pack_bits"))
def test_pack_bits_01_threshold(backend):
    x = torch.tensor([0.49, 0.5, 1.0, 0.0]).view(1, 4, 1, 1)
    assert backend("pack_bits", x, "01")[0, 0, 0, 0].item() == 0b0110


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("c", [1, 33, 64, 100])
@pytest.mark.parametrize("backend", over_backends("pack_bits"))
def test_pack_unpack_round_trip(backend, encoding, c):
    vals = torch.randint(0, 2, (2, c, 3, 3)).float()
    x = vals * 2 - 1 if encoding == "pm1" else vals
    assert torch.equal(unpack_bits(backend("pack_bits", x, encoding), c, encoding), x)


@pytest.mark.parametrize("backend", over_backends("pack_bits"))
def test_pack_bits_empty_batch(backend):
    assert backend("pack_bits", torch.randn(0, 5, 3, 3)).shape == (0, 3, 3, 1)


# ---- pack_int4 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", over_backends("pack_int4"))
def test_pack_int4_round_trip(backend):
    @backend.examples()
    @given(st.lists(st.integers(0, 15), min_size=1, max_size=67), st.integers(1, 3))
    def check(codes, rows):
        t = torch.tensor(codes, dtype=torch.uint8).repeat(rows, 1)
        packed = backend("pack_int4", t)
        assert packed.shape == (rows, (len(codes) + 1) // 2)
        assert torch.equal(packed, ref.pack_int4(t))
        assert torch.equal(unpack_int4(packed, len(codes)), t)

    check()


@pytest.mark.parametrize("backend", over_backends("pack_int4"))
def test_pack_int4_nibble_order(backend):
    assert backend("pack_int4", torch.tensor([1, 2, 3], dtype=torch.uint8)).tolist() == [0x21, 0x03]


@pytest.mark.parametrize("shape", [(2, 3, 4, 7), (4, 3, 9)])
@pytest.mark.parametrize("backend", over_backends("pack_int4"))
def test_pack_int4_keeps_leading_dims(backend, shape):
    t = torch.randint(0, 16, shape, dtype=torch.uint8)
    out = backend("pack_int4", t)
    assert out.shape == shape[:-1] + ((shape[-1] + 1) // 2,) and torch.equal(out, ref.pack_int4(t))


@pytest.mark.parametrize("backend", over_backends("pack_int4"))
def test_pack_int4_refuses_codes_above_15(backend):
    with pytest.raises(ValueError, match="expected values in 0..15, got 16 at flat index 5"):
        backend("pack_int4", torch.tensor([0, 1, 2, 3, 4, 16], dtype=torch.uint8))
