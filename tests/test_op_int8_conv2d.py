"""cmn::int8_conv2d on every backend (CPU, CUDA, Triton), bit for bit against the integer reference
(cmn_ext.ops.reference): the case table, extreme values, keep masks (full or compacted weights and outputs),
hypothesis shapes, every epilogue, bad inputs."""


import pytest
import torch
from helpers import CONV_CASES, Conv, conv_cases, int8_inputs, over_backends, over_cases
from hypothesis import assume, given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref

OP = "int8_conv2d"
S1 = [1, 1]
CASES = CONV_CASES + [Conv(1, 64, 5, 6, 6, 3, 3, padding=(1, 1)), Conv(8, 64, 64, 14, 14, 3, 3, padding=(1, 1))]
PROPERTY = {"cpu": dict(n=2, c=40, k=9, hw=8, ks=4, s=3, p=2, d=2),
            "gpu": dict(n=3, c=150, k=70, hw=12, ks=5, s=2, p=2, d=2),
            "interp": dict(n=2, c=40, k=9, hw=7, ks=3, s=2, p=2, d=2)}
KEEP = torch.tensor([True, False, True, True, False, False, True])


@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("backend,case", over_cases(OP, CASES))
def test_int8_conv2d_exact(backend, case, unsigned):
    x, wt = int8_inputs(*case.shape, unsigned)
    out = backend(OP, x, wt, *case.geometry)
    assert out.dtype == torch.int32
    assert torch.equal(out, ref.int8_conv2d(x, wt, *case.geometry))


@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_extreme_values_exact(backend):
    # Every product at its largest magnitude: exactness must not depend on the data being small.
    x = torch.full((1, 64, 5, 5), 255, dtype=torch.uint8)
    wt = torch.full((3, 64, 3, 3), -128, dtype=torch.int8)
    out = backend(OP, x, wt, S1, S1, S1)
    assert out[0, 0, 2, 2].item() == 255 * -128 * 64 * 9
    assert torch.equal(out, ref.int8_conv2d(x, wt, S1, S1, S1))


@pytest.mark.parametrize("compacted_weights", [False, True])
@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_keep_mask(backend, compacted_weights, compact):
    x, wt = int8_inputs(2, 20, 7, 4, 4, 3, 3, True)
    w_in = wt[KEEP].contiguous() if compacted_weights else wt
    out = backend(OP, x, w_in, S1, S1, S1, KEEP, compact=compact)
    assert torch.equal(out, ref.int8_conv2d(x, wt, S1, S1, S1, KEEP, compact=compact))
    if not compact:
        assert out.shape[1] == 7 and torch.count_nonzero(out[:, ~KEEP]) == 0
    else:
        assert out.shape[1] == int(KEEP.sum())


@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_pruned_filters_are_not_read(backend):
    # The values of pruned filters must not matter: they are never computed.
    x, wt = int8_inputs(1, 8, 7, 5, 5, 3, 3, False)
    wt2 = wt.clone()
    wt2[~KEEP] = 77
    assert torch.equal(backend(OP, x, wt, S1, S1, S1, KEEP), backend(OP, x, wt2, S1, S1, S1, KEEP))


@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_all_pruned_and_none_pruned(backend):
    x, wt = int8_inputs(1, 8, 4, 5, 5, 3, 3, True)
    none = torch.zeros(4, dtype=torch.bool)
    assert torch.count_nonzero(backend(OP, x, wt, S1, S1, S1, none)) == 0
    assert backend(OP, x, wt, S1, S1, S1, none, compact=True).shape == (1, 0, 5, 5)
    full = torch.ones(4, dtype=torch.bool)
    assert torch.equal(backend(OP, x, wt, S1, S1, S1, full), backend(OP, x, wt, S1, S1, S1))


@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_unstructured_zero_weights_match_dense_reference(backend):
    # Element-wise (magnitude) pruning is honoured by zero weights: identical to the reference.
    x, wt = int8_inputs(1, 16, 6, 6, 6, 3, 3, True)
    wt[torch.rand(wt.shape) < 0.6] = 0
    assert torch.equal(backend(OP, x, wt, S1, S1, S1), ref.int8_conv2d(x, wt, S1, S1, S1))


@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_empty_batch(backend):
    x, wt = int8_inputs(0, 8, 4, 5, 5, 3, 3, True)
    assert backend(OP, x, wt, S1, S1, S1).shape == (0, 4, 5, 5)


@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_property(backend):
    @backend.examples()
    @given(conv_cases(PROPERTY[backend.kind]), st.booleans(), st.integers(0, 2**70 - 1), st.booleans())
    def check(case, unsigned, keep_bits, compact):
        assume(case.fits)  # the others are refused: the error tests
        x, wt = int8_inputs(*case.shape, unsigned)
        keep = torch.tensor([(keep_bits >> i) & 1 == 1 for i in range(case.k)])
        args = (*case.geometry, keep)
        assert torch.equal(backend(OP, x, wt, *args, compact=compact), ref.int8_conv2d(x, wt, *args, compact=compact))

    check()


# ---- fused epilogue ----------------------------------------------------------------------------------------------
EPILOGUES = {"float": ("float", {}), "float16": ("float", {"out_dtype": torch.float16}),
             "uint8": ("uint8", {"out_scale": 40.0}), "int8": ("int8", {"out_scale": 25.0})}


@pytest.mark.parametrize("epi", list(EPILOGUES))
@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_epilogue(backend, epi):
    output, extra = EPILOGUES[epi]
    x, wt = int8_inputs(2, 12, 7, 4, 4, 3, 3, True)
    kw = dict(scale=torch.rand(7) * 0.01, bias=torch.randn(7), relu=True, output=output, **extra)
    out = backend(OP, x, wt, S1, S1, S1, KEEP, **kw)
    want = ref.int8_conv2d(x, wt, S1, S1, S1, KEEP, **kw)
    assert out.dtype == want.dtype and torch.equal(out, want)
    if output == "float":  # pruned channels carry the folded-BN bias through ReLU, like the QAT model
        assert torch.equal(out[:, 1], kw["bias"][1].clamp_min(0).to(out.dtype).expand_as(out[:, 1]))


MASKED_CASES = [Conv(3, 64, 96, 10, 10, 3, 3, padding=(1, 1)), Conv(1, 20, 9, 3, 3, 3, 3, padding=(1, 1), tiny=True)]


@pytest.mark.parametrize("backend,case", over_cases(OP, MASKED_CASES))
def test_int8_conv2d_masked_epilogue_and_compacted_weights(backend, case):
    x, wt = int8_inputs(*case.shape, True)
    keep = torch.rand(case.k) < 0.5
    for w, compact in ((wt, False), (wt[keep].contiguous(), False), (wt[keep].contiguous(), True)):
        k_out = int(keep.sum()) if compact else case.k
        kw = {"output": "float", "scale": torch.rand(k_out), "bias": torch.randn(k_out), "relu": True,
              "out_dtype": torch.float16, "compact": compact}
        assert torch.equal(backend(OP, x, w, *case.geometry, keep, **kw),
                           ref.int8_conv2d(x, wt, *case.geometry, keep, **kw))
    kw = {"output": "int8", "bias": torch.randn(case.k)}  # every filter pruned: the bias alone
    none = torch.zeros(case.k, dtype=torch.bool)
    assert torch.equal(backend(OP, x, wt, *case.geometry, none, **kw),
                       ref.int8_conv2d(x, wt, *case.geometry, none, **kw))


# ---- bad inputs --------------------------------------------------------------------------------------------------
def _bad(x, wt):
    """name: (call arguments, error, message after "cmn::<op>: " (by backend where the wording differs))."""
    return {
        "weight-dtype": ((x, wt.view(torch.uint8), S1, S1, S1), TypeError,
                         {"cpp": r"argument 'w' expected dtype Char, got Byte",
                          "triton": r"argument 'w' expected dtype int8, got uint8"}),
        "keep-length": ((x, wt, S1, S1, S1, torch.tensor([True, False])), ValueError, r"argument 'keep' has 2 entries"),
        "channels": ((x, wt[:, :2].contiguous(), S1, S1, S1), ValueError,
                     r"channel mismatch: 'x' has C=4 channels but 'w' expects 2"),
        "kernel-too-large": ((x, wt, S1, [0, 0], [3, 3]), ValueError,
                             {"cpp": r"kernel larger than padded input: dilated kernel 7x7 but padded input is 5x5",
                              "triton": r"the kernel \(3x3, dilation 3x3\) does not fit the padded input"}),
        "stride": ((x, wt, [0, 1], S1, S1), ValueError,
                   {"cpp": r"argument 'stride' expected values >= 1, got \[0, 1\]",
                    "triton": r"argument 'stride' expected two ints >= 1, got \[0, 1\]"}),
    }


@pytest.mark.parametrize("bad", ["weight-dtype", "keep-length", "channels", "kernel-too-large", "stride"])
@pytest.mark.parametrize("backend", over_backends(OP))
def test_int8_conv2d_bad_inputs(backend, bad):
    args, error, msg = _bad(*int8_inputs(1, 4, 3, 5, 5, 3, 3, False))[bad]
    with backend.raises(OP, error, msg):
        backend(OP, *args)


@pytest.mark.parametrize("backend", over_backends(OP, only=("cuda",)))
def test_int8_conv2d_mixed_devices_on_cuda(backend):
    x, wt = int8_inputs(1, 4, 3, 5, 5, 3, 3, False)
    op = backend.op(OP)
    with pytest.raises(ValueError, match="all tensors must be on one device; 'x' is on cpu but 'w' is on cuda"):
        op(x, wt.cuda(), S1, S1, S1)
    with pytest.raises(ValueError, match="'x' is on cuda:0 but 'keep' is on cpu"):
        op(x.cuda(), wt.cuda(), S1, S1, S1, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="argument 'bias' is on cpu but the inputs are on cuda"):
        op(x.cuda(), wt.cuda(), S1, S1, S1, output="float", bias=torch.zeros(3))
