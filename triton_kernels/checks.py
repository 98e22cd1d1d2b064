"""Input checks of the Triton ops: the same rules and messages as the C++ validators (csrc/common/validate.cpp),
so that ``torch.ops.cmn.<op>`` and ``torch.ops.cmn.<op>_triton`` refuse exactly the same inputs."""

import torch

INT32_MAX = 2**31 - 1


def dtype(op, name, t, *allowed):
    if t.dtype not in allowed:
        want = " or ".join(str(a).replace("torch.", "") for a in allowed)
        raise TypeError(f"{op}: argument '{name}' expected dtype {want}, got {str(t.dtype).replace('torch.', '')}")


def rank(op, name, t, n, layout):
    if t.dim() != n:
        raise ValueError(f"{op}: argument '{name}' expected a {n}-d tensor {layout}, got shape {list(t.shape)}")


def same_device(op, **tensors):
    items = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{op}: all tensors must be on one device; '{first_name}' is on {first.device} but "
                             f"'{name}' is on {t.device}")


def pair(op, name, v, minimum):
    v = list(v)
    if len(v) != 2 or any(int(i) < minimum for i in v):
        raise ValueError(f"{op}: argument '{name}' expected two ints >= {minimum}, got {v}")
    return int(v[0]), int(v[1])


def packed_width(op, length_name, length, per, unit, **tensors):
    """``length`` values packed ``per`` to a ``unit`` along the last dim of each tensor (name=(tensor, "pixel" |
    "tap" | "row")). Checks the length is positive and every width matches; returns the width."""
    if length < 1:
        raise ValueError(f"{op}: argument '{length_name}' expected a positive int, got {length}")
    width = (length + per - 1) // per
    for name, (t, what) in tensors.items():
        if t.shape[-1] != width:
            raise ValueError(f"{op}: argument '{name}' expected {width} {unit} per {what} for {length_name}={length}, "
                             f"got shape {list(t.shape)}")
    return width


def conv_out(op, h, w, kh, kw, stride, padding, dilation):
    sh, sw = pair(op, "stride", stride, 1)
    ph, pw = pair(op, "padding", padding, 0)
    dh, dw = pair(op, "dilation", dilation, 1)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: the kernel ({kh}x{kw}, dilation {dh}x{dw}) does not fit the padded input "
                         f"({h}x{w}, padding {ph}x{pw}): output would be {ho}x{wo}")
    return ho, wo, (sh, sw, ph, pw, dh, dw)


def accumulator_range(op, terms, max_a, max_b):
    if terms * max_a * max_b > INT32_MAX:
        raise ValueError(f"{op}: the int32 accumulator could overflow: {terms} terms x max|a| {max_a} x max|b| "
                         f"{max_b} exceeds 2^31 - 1; split the reduction or use smaller levels")


def encoding(op, name, enc):
    if enc not in ("pm1", "01"):
        raise ValueError(f"{op}: argument '{name}' expected \"pm1\" or \"01\", got \"{enc}\"")
    return enc


def levels(op, name, t):
    """Returns (values, max_abs, fits_int8, first code that is not shift-add representable or -1)."""
    dtype(op, name, t, torch.int32)
    if t.dim() != 1 or t.shape[0] != 16:
        raise ValueError(f"{op}: argument '{name}' expected an int32 level table of shape [16], got shape "
                         f"{list(t.shape)}")
    vals = [int(v) for v in t.cpu()]
    bad = next((c for c, v in enumerate(vals) if abs(v) >= 2**30 or bin(abs(v)).count("1") > 2), -1)
    max_abs = max(abs(v) for v in vals)
    return vals, max_abs, all(-128 <= v <= 127 for v in vals), bad


def apot_method(op, method, a, a_name, b, b_name):
    """``a``/``b``: results of ``levels``. Returns "int8" or "shift_add" by the rule of choose_apot_method."""
    def shift_error(t, name):
        raise ValueError(f"{op}: method=\"shift_add\" needs every level to be 0, +-2^p or +-(2^p + 2^q); "
                         f"'{name}'[{t[3]}] = {t[0][t[3]]} is not")

    def int8_error(t, name):
        raise ValueError(f"{op}: method=\"int8\" needs every level in [-128, 127]; '{name}' has max |level| = {t[1]}")

    if method == "shift_add":
        for t, name in ((a, a_name), (b, b_name)):
            if t[3] >= 0:
                shift_error(t, name)
        return "shift_add"
    if method == "int8":
        for t, name in ((a, a_name), (b, b_name)):
            if not t[2]:
                int8_error(t, name)
        return "int8"
    if method != "auto":
        raise ValueError(f"{op}: argument 'method' expected \"auto\", \"shift_add\" or \"int8\", got \"{method}\"")
    if a[2] and b[2]:
        return "int8"
    if a[3] < 0 and b[3] < 0:
        return "shift_add"
    raise ValueError(f"{op}: method=\"auto\" found no valid path: levels neither fit int8 (max |{a_name}| = {a[1]}, "
                     f"max |{b_name}| = {b[1]}) nor are all shift-add representable")
