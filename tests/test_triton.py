"""The Triton ops (torch.ops.cmn.<op>_triton) against the C++ ops, bit for bit. Without a GPU they run under
TRITON_INTERPRET=1 on CPU tensors (conftest), so the shapes stay tiny."""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from cmn_ext.ops.reference import pack_int4
from helpers import CONV_EDGE_CASES, apot_conv_inputs, binary_inputs, int8_inputs

pytest.importorskip("triton")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
W_LEVELS = torch.tensor([0, 1, 2, 3, 4, 6, 8, 10, -1, -2, -3, -4, -6, -8, -10, 0], dtype=torch.int32)
A_LEVELS = torch.tensor([0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48], dtype=torch.int32)
CASES = CONV_EDGE_CASES[:3] + [(0, 3, 2, 4, 4, 3, 3, (1, 1), (1, 1), (1, 1))]  # plus an empty batch
few = hsettings(max_examples=6, deadline=None)
conv_shapes = st.tuples(st.integers(1, 2), st.integers(1, 40), st.integers(1, 9), st.integers(3, 7),
                        st.integers(3, 7), st.sampled_from([1, 3]), st.sampled_from([1, 2]), st.integers(0, 2),
                        st.sampled_from([1, 2]))


def _same(op, *args, **kw):
    """Run the C++ op on CPU and the Triton op on DEV; return both (Triton result moved to CPU)."""
    want = getattr(torch.ops.cmn, op)(*args, **kw)
    moved = [a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args]
    kw = {k: v.to(DEV) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    got = getattr(torch.ops.cmn, op + "_triton")(*moved, **kw).cpu()
    return got, want


def _fits(h, w, kh, kw, pad, dil):
    return h + 2 * pad >= dil * (kh - 1) + 1 and w + 2 * pad >= dil * (kw - 1) + 1


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("case", CASES)
def test_binary_conv2d_edge_cases(case, encoding):
    n, c, k, h, w, kh, kw, s, p, d = case
    xb, wb = binary_inputs(n, c, k, h, w, kh, kw, encoding)
    got, want = _same("binary_conv2d", xb, wb, c, s, p, d, encoding)
    assert torch.equal(got, want)


@few
@given(conv_shapes, st.sampled_from(["pm1", "01"]))
def test_binary_conv2d_property(shape, encoding):
    n, c, k, h, w, ksz, s, p, d = shape
    assume(_fits(h, w, ksz, ksz, p, d))
    xb, wb = binary_inputs(n, c, k, h, w, ksz, ksz, encoding)
    got, want = _same("binary_conv2d", xb, wb, c, [s, s], [p, p], [d, d], encoding)
    assert torch.equal(got, want)


def test_binary_conv2d_epilogue_outputs():
    xb, wb = binary_inputs(2, 40, 35, 5, 5, 3, 3, "pm1")
    scale, bias = torch.rand(35) + 0.5, torch.randn(35)
    for kw in ({"output": "float", "scale": scale, "bias": bias, "relu": True},
               {"output": "float", "scale": scale, "out_dtype": torch.float16},
               {"output": "bits", "scale": scale, "bias": bias, "out_encoding": "01"},
               {"output": "int8", "scale": scale, "out_scale": 0.5}):
        got, want = _same("binary_conv2d", xb, wb, 40, [1, 1], [1, 1], [1, 1], "pm1", **kw)
        assert got.dtype == want.dtype and torch.equal(got, want), kw


@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_int8_conv2d_edge_cases(case, unsigned):
    n, c, k, h, w, kh, kw, s, p, d = case
    x, wt = int8_inputs(n, c, k, h, w, kh, kw, unsigned)
    got, want = _same("int8_conv2d", x, wt, s, p, d)
    assert torch.equal(got, want)


@few
@given(conv_shapes, st.booleans())
def test_int8_conv2d_property(shape, unsigned):
    n, c, k, h, w, ksz, s, p, d = shape
    assume(_fits(h, w, ksz, ksz, p, d))
    x, wt = int8_inputs(n, c, k, h, w, ksz, ksz, unsigned)
    got, want = _same("int8_conv2d", x, wt, [s, s], [p, p], [d, d])
    assert torch.equal(got, want)


@pytest.mark.parametrize("compact", [False, True])
def test_int8_conv2d_keep_mask_full_and_compacted_weights(compact):
    x, wt = int8_inputs(2, 12, 6, 6, 6, 3, 3, True)
    keep = torch.tensor([True, False, True, True, False, True])
    bias = torch.randn(4 if compact else 6)
    for w in (wt, wt[keep]):
        got, want = _same("int8_conv2d", x, w, [1, 1], [1, 1], [1, 1], keep, output="float", bias=bias,
                          compact=compact)
        assert torch.equal(got, want)
    got, want = _same("int8_conv2d", x, wt, [1, 1], [1, 1], [1, 1], keep, compact=compact)
    assert torch.equal(got, want)
    if not compact:
        assert torch.all(got[:, ~keep] == 0)


@pytest.mark.parametrize("method", ["int8", "shift_add"])
@pytest.mark.parametrize("m,n,k", [(1, 5, 7), (6, 9, 64), (0, 3, 4), (17, 33, 40)])
def test_apot_matmul(m, n, k, method):
    a = pack_int4(torch.randint(0, 16, (m, k), dtype=torch.uint8))
    b = pack_int4(torch.randint(0, 16, (n, k), dtype=torch.uint8))
    got, want = _same("apot_matmul", a, A_LEVELS, b, W_LEVELS, k, method)
    assert torch.equal(got, want)
    assert torch.equal(got, torch.ops.cmn.apot_matmul(a, A_LEVELS, b, W_LEVELS, k, "shift_add"))


@pytest.mark.parametrize("method", ["int8", "shift_add"])
@pytest.mark.parametrize("case", CASES)
def test_apot_conv2d(case, method):
    n, c, k, h, w, kh, kw, s, p, d = case
    xp, wp = apot_conv_inputs(n, c, k, h, w, kh, kw)
    levels0 = A_LEVELS.clone()
    levels0[0] = 5  # a nonzero level for code 0: padding must still count as 0
    got, want = _same("apot_conv2d", xp, levels0, wp, W_LEVELS, c, s, p, d, method)
    assert torch.equal(got, want)


def test_apot_conv2d_epilogue():
    xp, wp = apot_conv_inputs(2, 9, 5, 5, 5, 3, 3)
    scale, bias = torch.rand(5), torch.randn(5)
    got, want = _same("apot_conv2d", xp, A_LEVELS, wp, W_LEVELS, 9, [1, 1], [1, 1], [1, 1], "auto",
                      scale=scale, bias=bias, output="uint8", relu=True, out_scale=0.25)
    assert torch.equal(got, want)


def test_bad_inputs_are_refused_like_the_cpp_ops():
    xb, wb = (t.to(DEV) for t in binary_inputs(1, 40, 3, 5, 5, 3, 3, "pm1"))
    with pytest.raises(ValueError, match=r"binary_conv2d_triton: argument 'x_bits' expected 3 packed words per pixel"):
        torch.ops.cmn.binary_conv2d_triton(xb, wb, 70, [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="argument 'encoding' expected"):
        torch.ops.cmn.binary_conv2d_triton(xb, wb, 40, [1, 1], [1, 1], [1, 1], "xnor")
    with pytest.raises(ValueError, match="output=\"int\" returns the raw int32"):
        torch.ops.cmn.binary_conv2d_triton(xb, wb, 40, [1, 1], [1, 1], [1, 1], scale=torch.ones(3, device=DEV))
    x, wt = (t.to(DEV) for t in int8_inputs(1, 4, 3, 5, 5, 3, 3, False))
    with pytest.raises(TypeError, match="argument 'w' expected dtype int8, got uint8"):
        torch.ops.cmn.int8_conv2d_triton(x, wt.view(torch.uint8), [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="'keep' has 2 entries"):
        torch.ops.cmn.int8_conv2d_triton(x, wt, [1, 1], [1, 1], [1, 1], torch.tensor([True, False], device=DEV))
    with pytest.raises(ValueError, match="does not fit the padded input"):
        torch.ops.cmn.int8_conv2d_triton(x, wt, [1, 1], [0, 0], [3, 3])
    a = pack_int4(torch.randint(0, 16, (2, 8), dtype=torch.uint8))
    big, wl = A_LEVELS * 100, W_LEVELS
    on = lambda *ts: [t.to(DEV) for t in ts]  # noqa: E731
    with pytest.raises(ValueError, match="method=\"int8\" needs every level in \\[-128, 127\\]"):
        torch.ops.cmn.apot_matmul_triton(*on(a, big, a, wl), 8, "int8")
    with pytest.raises(ValueError, match="method=\"shift_add\" needs every level"):
        torch.ops.cmn.apot_matmul_triton(*on(a, torch.where(A_LEVELS == 3, 7, A_LEVELS).int(), a, wl), 8, "shift_add")
    # the C++ op refuses the same inputs with the same message (op name aside)
    with pytest.raises(ValueError, match="method=\"int8\" needs every level in \\[-128, 127\\]"):
        torch.ops.cmn.apot_matmul(a, big, a, W_LEVELS, 8, "int8")


def test_fake_kernels_give_the_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    xb, wb = binary_inputs(2, 40, 35, 5, 5, 3, 3, "pm1")
    with FakeTensorMode() as mode:
        fx, fw = mode.from_tensor(xb), mode.from_tensor(wb)
        out = torch.ops.cmn.binary_conv2d_triton(fx, fw, 40, [2, 2], [1, 1], [1, 1], output="bits")
    assert tuple(out.shape) == (2, 3, 3, 2) and out.dtype == torch.int32


def test_cpu_tensors_without_the_interpreter_are_refused_clearly():
    import os
    import subprocess
    import sys

    code = ("import cmn_ext, torch\n"
            "x = torch.zeros(1, 2, 2, 1, dtype=torch.int32)\n"
            "torch.ops.cmn.binary_conv2d_triton(x, torch.zeros(1, 1, 1, 1, dtype=torch.int32), 3, [1, 1], [0, 0], [1, 1])\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "Triton kernels run on CUDA tensors; got CPU tensors" in r.stderr


def test_annotations_spell_the_declared_schemas():
    # torch releases without triton_op(schema=...) (2.11) infer the schema from the annotations: it must be the same
    from torch._library.infer_schema import infer_schema

    from triton_kernels import ops

    for name in ops.TRITON_OPS:
        # the registered schema is the declared one, or the inferred one on older torch: compare both spelled alike
        plain = lambda s: s.replace("SymInt", "int").replace("int[2]", "int[]").replace("=1.,", "=1.0,").replace(  # noqa: E731
            "=1.)", "=1.0)")
        declared = plain(str(getattr(torch.ops.cmn, name).default._schema).split("(", 1)[1])
        inferred = plain(infer_schema(ops.PYTHON_FNS[name], mutates_args=()).lstrip("("))
        assert inferred == declared, name
