"""What the op tests share: input makers, the shared case tables, and the backends an op runs on.

Every op test runs on every backend present, against the float64 / integer reference of
``cmn_ext.ops.reference`` (exact equality for integer results):

    @pytest.mark.parametrize("backend", over_backends("binary_conv2d"))          # no geometry
    @pytest.mark.parametrize("backend,case", over_cases("int8_conv2d", CASES))   # a case table

    out = backend("int8_conv2d", x, w, *case.geometry)   # inputs moved to the backend, result back on the CPU

The backends are "cpu" (the C++ kernels) always, "cuda" (the CUDA C++ kernels, once per kernel path that an
environment variable forces, e.g. "cuda-mma" / "cuda-popc") when there is a GPU and the CUDA sources were
built, and "triton" (``torch.ops.cmn.<op>_triton``) when Triton imports and can run: on the GPU, or on CPU
tensors under TRITON_INTERPRET=1 (conftest sets it when there is no GPU). A backend that is absent, or has no
kernel for the op, is collected and skipped with the reason, never left out. The interpreter is slow: there only
the cases marked ``tiny`` run, the others are skipped saying so (they run when Triton has a GPU). Every param
carries the mark of its backend: `pytest -m triton` runs the Triton ones."""

import functools
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st

import cmn_ext

ENCODINGS = ("pm1", "01")


# ---- inputs ----------------------------------------------------------------------------------------------------
def binary_inputs(n, c, k, h, w, kh, kw, encoding):
    x = torch.randn(n, c, h, w) if encoding == "pm1" else torch.rand(n, c, h, w)
    wt = torch.randn(k, c, kh, kw)
    return torch.ops.cmn.pack_bits(x, encoding), torch.ops.cmn.pack_bits(wt, "pm1")


def int8_inputs(n, c, k, h, w, kh, kw, unsigned):
    if unsigned:
        x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    else:
        x = torch.randint(-128, 128, (n, c, h, w), dtype=torch.int8)
    wt = torch.randint(-128, 128, (k, c, kh, kw), dtype=torch.int8)
    return x, wt


def apot_conv_inputs(n, c, k, h, w, kh, kw):
    xc = torch.randint(0, 16, (n, c, h, w), dtype=torch.uint8)
    wc = torch.randint(0, 16, (k, c, kh, kw), dtype=torch.uint8)
    return cmn_ext.ops.pack_apot_conv_input(xc), cmn_ext.ops.pack_apot_conv_weight(wc)


def apot_matmul_inputs(m, n, k):
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (m, k), dtype=torch.uint8))
    b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (n, k), dtype=torch.uint8))
    return a, b


# ---- case tables -----------------------------------------------------------------------------------------------
class Conv(NamedTuple):
    """One convolution geometry of a case table. ``tiny``: cheap enough for the Triton interpreter."""

    n: int
    c: int
    k: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    tiny: bool = False

    @property
    def geometry(self):
        """(stride, padding, dilation) as the ops take them."""
        return list(self.stride), list(self.padding), list(self.dilation)

    @property
    def shape(self):
        return self.n, self.c, self.k, self.h, self.w, self.kh, self.kw

    @property
    def fits(self):
        """The dilated kernel fits the padded input (else the op refuses it: the error tests)."""
        return (self.dilation[0] * (self.kh - 1) + 1 <= self.h + 2 * self.padding[0]
                and self.dilation[1] * (self.kw - 1) + 1 <= self.w + 2 * self.padding[1])

    @property
    def id(self):
        pair = lambda name, v, default: "" if tuple(v) == default else f"-{name}{v[0]}{v[1]}"  # noqa: E731
        return (f"n{self.n}c{self.c}k{self.k}-{self.h}x{self.w}-{self.kh}x{self.kw}" + pair("s", self.stride, (1, 1))
                + pair("p", self.padding, (0, 0)) + pair("d", self.dilation, (1, 1)))


# 1x1 and 5x5 kernels, stride 2, dilation 2, padding 0/1/2, channel counts around the 32-bit word boundary, a
# kernel that exactly fills the input, outputs that all touch padding, an empty batch. Each op file adds its own.
CONV_CASES = [
    Conv(2, 33, 5, 7, 6, 1, 1, tiny=True),
    Conv(2, 31, 4, 9, 9, 5, 5, padding=(2, 2)),
    Conv(1, 7, 2, 4, 4, 5, 5, padding=(2, 2), tiny=True),  # the 5x5 case at interpreter size
    Conv(1, 32, 3, 8, 8, 3, 3, (2, 2), (1, 1), tiny=True),
    Conv(1, 100, 6, 9, 7, 3, 3, padding=(2, 2), dilation=(2, 2)),
    Conv(2, 1, 2, 5, 5, 3, 3, (1, 2), (0, 1), tiny=True),
    Conv(1, 3, 2, 3, 3, 3, 3, tiny=True),  # the kernel exactly fills the input
    Conv(1, 16, 3, 2, 2, 3, 3, padding=(1, 1), tiny=True),  # every output pixel touches padding
    Conv(0, 3, 2, 4, 4, 3, 3, padding=(1, 1), tiny=True),  # empty batch
]


# ---- backends --------------------------------------------------------------------------------------------------
BACKENDS = ("cpu", "cuda", "triton")
# CUDA kernel paths an environment variable forces (read at every call): each is a backend of its own.
CUDA_PATHS = {"binary_conv2d": ("CMN_BINARY_CONV_PATH", ("mma", "popc")),
              "apot_matmul": ("CMN_APOT_PATH", ("mma", "gemv"))}


@functools.cache
def _build_info():
    return cmn_ext.build_info()


@functools.cache
def _cuda_absent():
    if not torch.cuda.is_available():
        return "no CUDA device in this process"
    if not _build_info()["cuda_built"]:
        return "CUDA sources were not compiled in this build"
    return None


@functools.cache
def _triton_absent():
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return "no CUDA device and TRITON_INTERPRET is not 1: the Triton kernels cannot run"
    return None


TRITON_INTERPRETED = _triton_absent() is None and not torch.cuda.is_available()


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" | "cuda" | "triton"
    device: str = "cpu"  # where the op's inputs live
    interpreted: bool = False  # Triton under TRITON_INTERPRET=1: tiny shapes only
    path: tuple = ()  # (environment variable, value): a CUDA kernel path forced around each call

    @property
    def id(self):
        return "-".join((self.name,) + self.path[1:])

    @property
    def kind(self):
        """What sizes and how many examples a property test draws here: "cpu", "gpu" or "interp"."""
        return "interp" if self.interpreted else ("gpu" if self.device == "cuda" else "cpu")

    def qualname(self, op):
        return f"cmn::{op}_triton" if self.name == "triton" else f"cmn::{op}"

    def op(self, op):
        return getattr(torch.ops.cmn, op + "_triton" if self.name == "triton" else op)

    def to(self, v):
        return v.to(self.device) if isinstance(v, torch.Tensor) else v

    @contextmanager
    def forced_path(self):
        if not self.path:
            yield
            return
        var, value = self.path
        before = os.environ.get(var)
        os.environ[var] = value
        try:
            yield
        finally:
            if before is None:
                del os.environ[var]
            else:
                os.environ[var] = before

    def __call__(self, op, *args, **kw):
        """``op`` on this backend: tensor arguments moved to its device, the result moved back to the CPU (a
        ``float_out`` tensor is written back into the caller's)."""
        moved = {k: self.to(v) for k, v in kw.items()}
        with self.forced_path():
            out = self.op(op)(*map(self.to, args), **moved)
        assert out.device.type == self.device, (op, self.id, out.device)
        if isinstance(kw.get("float_out"), torch.Tensor) and moved["float_out"] is not kw["float_out"]:
            kw["float_out"].copy_(moved["float_out"])
        return out.cpu()

    def raises(self, op, error, message):
        """pytest.raises for a refusal by this backend's ``op``: ``message`` is what follows "cmn::<op>: " (or
        "cmn::<op>_triton: "); a dict gives it by backend where the wordings differ ("cpp": the C++ validators,
        shared by the CPU and CUDA kernels)."""
        if isinstance(message, dict):
            message = message.get(self.name, message["cpp"])
        return pytest.raises(error, match=re.escape(self.qualname(op)) + ": " + message)

    def examples(self):
        """Hypothesis settings for a property test on this backend: the profile's example count on the CPU, 60 on
        a GPU, 6 under the interpreter."""
        n = {"gpu": 60, "interp": 6}.get(self.kind)
        return settings(max_examples=n) if n else settings()


def _backends(op):
    """[(Backend, reason it is skipped or None)] for ``op``, every backend, present or not."""
    out = [(Backend("cpu"), None)]
    cuda = _cuda_absent()
    if cuda is None and "CUDA" not in _build_info()["ops"].get(op, ()):
        cuda = f"cmn::{op} has no CUDA kernel in this build"
    var, paths = CUDA_PATHS.get(op, (None, ()))
    out += [(Backend("cuda", "cuda", path=(var, p)), cuda) for p in paths] or [(Backend("cuda", "cuda"), cuda)]
    triton = _triton_absent()
    if triton is None and not hasattr(torch.ops.cmn, op + "_triton"):
        triton = f"there is no Triton kernel for {op} (no cmn::{op}_triton is registered)"
    out.append((Backend("triton", "cuda" if torch.cuda.is_available() else "cpu", TRITON_INTERPRETED), triton))
    return out


def _param(values, id, backend, reason):
    marks = [getattr(pytest.mark, backend.name)]
    if reason:
        marks.append(pytest.mark.skip(reason=f"{backend.id}: {reason}"))
    return pytest.param(*values, id=id, marks=marks)


def over_backends(op, *, only=BACKENDS, unsupported=None):
    """pytest params of every backend of ``op`` (absent ones skipped with the reason). ``only``: a test that makes
    sense on some backends only (device-specific); ``unsupported``: {backend name: why this test does not apply}."""
    return [_param((b,), b.id, b, reason or (unsupported or {}).get(b.name))
            for b, reason in _backends(op) if b.name in only]


def over_cases(op, cases, *, only=BACKENDS, unsupported=None, ids=None):
    """pytest params (backend, case) of every backend of ``op`` times the table ``cases``. ``op`` may be a function
    of the case (a table of several ops). Under the Triton interpreter a case with ``tiny`` False is skipped."""
    params = []
    for i, case in enumerate(cases):
        name = op(case) if callable(op) else op
        case_id = ids[i] if ids else case.id
        for b, reason in _backends(name):
            if b.name not in only:
                continue
            reason = reason or (unsupported or {}).get(b.name)
            if not reason and b.interpreted and not getattr(case, "tiny", True):
                reason = "too large for the Triton interpreter (TRITON_INTERPRET=1); runs where Triton has a GPU"
            params.append(_param((b, case), f"{b.id}-{case_id}", b, reason))
    return params


def conv_cases(limits):
    """Hypothesis strategy of ``Conv`` geometries within ``limits`` (n, c, k, hw, ks, s, p, d: the largest
    values; n may be 0). The test calls ``assume(case.fits)``."""
    lim = limits
    return st.builds(
        Conv, st.integers(0, lim["n"]), st.integers(1, lim["c"]), st.integers(1, lim["k"]),
        st.integers(1, lim["hw"]), st.integers(1, lim["hw"]), st.integers(1, lim["ks"]), st.integers(1, lim["ks"]),
        st.tuples(st.integers(1, lim["s"]), st.integers(1, lim["s"])),
        st.tuples(st.integers(0, lim["p"]), st.integers(0, lim["p"])),
        st.tuples(st.integers(1, lim["d"]), st.integers(1, lim["d"])))
