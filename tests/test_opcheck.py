"""torch.library.opcheck on every op: schema, fake kernel, autograd registration, dispatch consistency."""

import pytest
import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS, requires_cuda
from helpers import apot_conv_inputs, binary_inputs, int8_inputs


def _samples():
    xb, wb = binary_inputs(2, 40, 3, 5, 5, 3, 3, "pm1")
    xb01, _ = binary_inputs(2, 40, 3, 5, 5, 3, 3, "01")
    x8, w8 = int8_inputs(2, 9, 5, 6, 6, 3, 3, True)
    keep = torch.tensor([True, False, True, True, False])
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (3, 21), dtype=torch.uint8))
    b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (5, 21), dtype=torch.uint8))
    xp, wp = apot_conv_inputs(2, 7, 3, 5, 5, 3, 3)
    al, wl = APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
    s, p, d = [1, 1], [1, 1], [1, 1]
    cases = [
        ("pack_bits", (torch.randn(2, 40, 3, 3),), {}),
        ("pack_bits", (torch.rand(2, 5, 3, 3), "01"), {}),
        ("pack_int4", (torch.randint(0, 16, (3, 7), dtype=torch.uint8),), {}),
        ("binary_conv2d", (xb, wb, 40, s, p, d), {}),
        ("binary_conv2d", (xb01, wb, 40, [2, 2], [0, 0], d, "01"), {}),
        ("binary_conv2d", (xb, wb, 40, s, p, d), {"scale": torch.rand(3), "bias": torch.rand(3), "output": "bits"}),
        ("binary_conv2d", (xb, wb, 40, s, p, d), {"output": "float", "out_dtype": torch.float16}),
        ("int8_conv2d", (x8, w8, s, p, d), {}),
        ("int8_conv2d", (x8, w8, s, p, d, keep), {}),
        ("int8_conv2d", (x8, w8[keep].contiguous(), s, p, d, keep), {"compact": True}),
        ("int8_conv2d", (x8, w8, s, p, d, keep), {"scale": torch.rand(5), "relu": True, "output": "uint8"}),
        ("apot_matmul", (a, al, b, wl, 21), {}),
        ("apot_matmul", (a, al, b, wl, 21, "shift_add"), {"output": "float", "scale": torch.rand(5)}),
        ("apot_conv2d", (xp, al, wp, wl, 7, s, p, d), {}),
        ("apot_conv2d", (xp, al, wp, wl, 7, s, p, d, "shift_add"), {"output": "int8", "out_scale": 3.0}),
    ]
    return cases


@pytest.mark.parametrize("case", _samples(), ids=lambda c: c[0])
def test_opcheck_cpu(case):
    name, args, kwargs = case
    torch.library.opcheck(getattr(torch.ops.cmn, name).default, args, kwargs)


@requires_cuda
@pytest.mark.parametrize("case", _samples(), ids=lambda c: c[0])
def test_opcheck_cuda(case):
    name, args, kwargs = case
    move = lambda v: v.cuda() if isinstance(v, torch.Tensor) else v  # noqa: E731
    args, kwargs = tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}
    torch.library.opcheck(getattr(torch.ops.cmn, name).default, args, kwargs)


@requires_cuda
@pytest.mark.parametrize("case", [c for c in _samples() if c[0] not in ("pack_bits", "pack_int4")], ids=lambda c: c[0])
def test_opcheck_triton_cuda(case):
    """opcheck of a triton_op needs a real GPU (not the interpreter, DESIGN 5).

    A triton_op is traced through its Python body under AOT dispatch. The APoT ops read their level tables and
    the int8 op its keep mask on the host (range checks, shift-add tables, kept filters), which a trace with
    dynamic shapes cannot do: for those, test_aot_dispatch_dynamic is left out (README: use the C++ ops in
    graphs compiled with dynamic shapes)."""
    pytest.importorskip("triton")
    name, args, kwargs = case
    move = lambda v: v.cuda() if isinstance(v, torch.Tensor) else v  # noqa: E731
    args, kwargs = tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}
    data_dependent = name.startswith("apot") or (name == "int8_conv2d" and len(args) > 5)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    utils += () if data_dependent else ("test_aot_dispatch_dynamic",)
    torch.library.opcheck(getattr(torch.ops.cmn, name + "_triton").default, args, kwargs, test_utils=utils)
