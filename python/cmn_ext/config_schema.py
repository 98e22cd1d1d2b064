"""The value checks of the typed config (cmn_ext.config): each ``Field`` knows what it expects and says so. A
problem is a (dotted key, message template) pair, so that a section nested in another can prefix its keys."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Field:
    expected: str
    ok: Callable[[object], bool]
    optional: bool = False  # None allowed
    coerce: Callable | None = None  # applied to an accepted value (ints given for a float field become floats)

    def check(self, value) -> bool:
        return (self.optional and value is None) or self.ok(value)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def Int(lo: int | None = None, hi: int | None = None, optional: bool = False) -> Field:
    text = "an integer" + (f" >= {lo}" if lo is not None and hi is None else "") + \
        (f" in [{lo}, {hi}]" if lo is not None and hi is not None else "")
    return Field(text, lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), optional)


def Num(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
        optional: bool = False) -> Field:
    if lo is not None and hi is not None:
        text = f"a finite number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"a finite number {'>' if lo_open else '>='} {lo}"
    else:
        text = "a finite number"

    def ok(v):
        if not _is_num(v):
            return False
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return False
        return hi is None or (v < hi or (not hi_open and v == hi))

    return Field(text, ok, optional, coerce=float)


def OneOf(*choices, optional: bool = False) -> Field:
    return Field(f"one of {list(choices)}", lambda v: v in choices, optional)


BOOL = Field("true or false", lambda v: isinstance(v, bool))
STR = Field("a string", lambda v: isinstance(v, str) and v != "")
OPT_STR = Field("a string or null", lambda v: isinstance(v, str) and v != "", optional=True)
ANY = Field("any value", lambda v: True, optional=True)
INT_LIST = Field("a list of integers", lambda v: isinstance(v, list) and all(_is_int(i) for i in v), optional=True)
STR_LIST = Field("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v))
GRID = Field("[start, stop, step] or a list of integer percents in [0, 100]",
             lambda v: isinstance(v, list) and v != [] and all(_is_int(i) and 0 <= i <= 100 for i in v))


def _limit_ok(v) -> bool:
    if v is None or (_is_int(v) and v >= 1):
        return True
    return isinstance(v, dict) and set(v) <= {"train", "val", "test"} and \
        all(x is None or (_is_int(x) and x >= 1) for x in v.values())


LIMIT = Field("null, an integer >= 1, or {train, val, test: integer >= 1}", _limit_ok)
POS_LIST = Field("a non-empty list of positive integers", lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and
                 all(_is_int(i) and i >= 1 for i in v))
MAPPING = Field("a mapping", lambda v: isinstance(v, dict))  # keys checked by the code that receives it


def _is_model(v) -> bool:
    from .models import MODELS

    return v in MODELS


MODEL_NAME = Field("a model name (cmn_ext.models.MODELS)", _is_model)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the dotted key and what follows it in the message (" expected ..., got
    ..." or ": <why>"); an ``unknown`` key reads "unknown key 'a.b' (did you mean ...)". ``under`` prefixes a
    section's key with the section's own."""

    key: str
    text: str
    unknown: bool = False

    def under(self, prefix: str) -> "Problem":
        return dataclasses.replace(self, key=f"{prefix}.{self.key}" if prefix and self.key else prefix or self.key)

    def __str__(self) -> str:
        return f"unknown key '{self.key}'{self.text}" if self.unknown else f"'{self.key}'{self.text}"


def unknown(key: str, name: str, known) -> Problem:
    """A key that is not in ``known``, with the nearest known one suggested."""
    near = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return Problem(key, f"{hint}; known here: {', '.join(sorted(known))}", unknown=True)


def check(field: Field, value, key: str) -> Problem | None:
    if field.check(value):
        return None
    return Problem(key, f" expected {field.expected}{' or null' if field.optional else ''}, got {value!r}")


def check_quant(value, key: str) -> list[Problem]:
    """A quantization spec ({weight, act, first, last, layers}) checked by building its quantizers."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Problem(key, " expected a mapping like {weight: {kind: linear, bits: 8}, act: ...} or null, got "
                             f"{value!r}")]
    from .nn.qat import EDGE_PRESETS
    from .quant import make_quantizer

    problems = []
    for k, v in value.items():
        sub = f"{key}.{k}"
        if k in ("weight", "act"):
            try:
                make_quantizer(v, k)
            except (TypeError, ValueError) as e:
                problems.append(Problem(sub, f": {e}"))
        elif k in ("first", "last"):
            if v not in EDGE_PRESETS:
                problems.append(Problem(sub, f" expected one of {list(EDGE_PRESETS)}, got {v!r}"))
        elif k == "layers":
            if not isinstance(v, dict):
                problems.append(Problem(sub, f" expected a mapping layer name -> {{weight, act}}, got {v!r}"))
        else:
            problems.append(unknown(sub, k, ["weight", "act", "first", "last", "layers"]))
    return problems
