import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref
from cmn_ext.ops import unpack_bits, unpack_int4


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("c", [1, 31, 32, 33, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_pack_bits_matches_reference(encoding, c, dtype):
    x = (torch.randn(3, c, 4, 5) if encoding == "pm1" else torch.rand(3, c, 4, 5)).to(dtype)
    out = torch.ops.cmn.pack_bits(x, encoding)
    assert out.dtype == torch.int32 and out.shape == (3, 4, 5, (c + 31) // 32)
    assert torch.equal(out, ref.pack_bits(x, encoding))


def test_pack_bits_compares_in_the_input_dtype():
    # -1e-50 and 0.5 - 1e-12 round to -0.0 and 0.5 in float32; the contract is about x itself.
    x = torch.tensor([-1e-50, 0.5 - 1e-12, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.ops.cmn.pack_bits(x)[0, 0, 0, 0].item() == 0b001
    assert torch.ops.cmn.pack_bits(x, "01")[0, 0, 0, 0].item() == 0b100


def test_pack_bits_bit_order_and_zero():
    # channel c -> word c // 32, bit c % 32; x >= 0 is +1 (bit 0), so 0.0 packs as +1 (unlike torch.sign).
    x = torch.ones(1, 40, 1, 1)
    x[0, 0] = -1.0
    x[0, 33] = -2.0
    x[0, 5] = 0.0
    out = torch.ops.cmn.pack_bits(x)
    assert out[0, 0, 0].tolist() == [1, 2]


def test_pack_bits_01_threshold():
    x = torch.tensor([0.49, 0.5, 1.0, 0.0]).view(1, 4, 1, 1)
    assert torch.ops.cmn.pack_bits(x, "01")[0, 0, 0, 0].item() == 0b0110


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("c", [1, 33, 64, 100])
def test_pack_unpack_round_trip(encoding, c):
    vals = torch.randint(0, 2, (2, c, 3, 3)).float()
    x = vals * 2 - 1 if encoding == "pm1" else vals
    assert torch.equal(unpack_bits(torch.ops.cmn.pack_bits(x, encoding), c, encoding), x)


def test_pack_bits_empty_batch():
    out = torch.ops.cmn.pack_bits(torch.randn(0, 5, 3, 3))
    assert out.shape == (0, 3, 3, 1)


@given(st.lists(st.integers(0, 15), min_size=1, max_size=67), st.integers(1, 3))
def test_pack_int4_round_trip(codes, rows):
    t = torch.tensor(codes, dtype=torch.uint8).repeat(rows, 1)
    packed = torch.ops.cmn.pack_int4(t)
    assert packed.shape == (rows, (len(codes) + 1) // 2)
    assert torch.equal(packed, ref.pack_int4(t))
    assert torch.equal(unpack_int4(packed, len(codes)), t)


def test_pack_int4_nibble_order():
    out = torch.ops.cmn.pack_int4(torch.tensor([1, 2, 3], dtype=torch.uint8))
    assert out.tolist() == [0x21, 0x03]


def test_pack_int4_keeps_leading_dims():
    t = torch.randint(0, 16, (2, 3, 4, 7), dtype=torch.uint8)
    assert torch.ops.cmn.pack_int4(t).shape == (2, 3, 4, 4)
