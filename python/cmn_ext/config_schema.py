"""The schema of an experiment config, checked before a run writes or trains anything: unknown keys at any depth
(with the nearest known one suggested), value types and ranges. Each error names the dotted key, what was
expected and what was given; every error of a config is reported at once.

Leaves are ``Field``s; a dict is a section (its keys are the only ones allowed); ``Free`` is a mapping passed to a
constructor that checks it itself (model kwargs, quantizer specs are checked by building their quantizers)."""

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

    return Field(text, ok, optional)


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


@dataclasses.dataclass(frozen=True)
class Free:
    """A mapping (or null) whose keys the code that receives it checks."""

    what: str = "a mapping"


def _train(epochs_min: int = 1) -> dict:
    return {
        "epochs": Int(epochs_min), "batch_size": Int(1), "eval_batch_size": Int(1),
        "optimizer": OneOf("sgd", "adam"), "lr": Num(0, lo_open=True), "momentum": Num(0, 1, hi_open=True),
        "nesterov": BOOL, "weight_decay": Num(0),
        "schedule": OneOf("multistep", "plateau", "cosine", "none"), "milestones": INT_LIST,
        "gamma": Num(0, 1, lo_open=True), "factor": Num(0, 1, lo_open=True), "patience": Int(0),
        "amp": BOOL, "workers": Int(0), "seed": Int(0), "grad_clip": Num(0, lo_open=True, optional=True),
        "bn_recalibrate": Int(0),
    }


TRAIN = _train()


def _limit_ok(v) -> bool:
    if v is None or (_is_int(v) and v >= 1):
        return True
    return isinstance(v, dict) and set(v) <= {"train", "val", "test"} and \
        all(x is None or (_is_int(x) and x >= 1) for x in v.values())


LIMIT = Field("null, an integer >= 1, or {train, val, test: integer >= 1}", _limit_ok)
QUANT = "quant"  # checked by building its quantizers (below)
PRUNE = {"method": OneOf("magnitude", "fpgm"), "ratio": Num(0, 1, hi_open=True),
         "schedule": OneOf("oneshot", "soft", "progressive"), "stages": Int(1), "epochs": Int(1),
         "scope": OneOf("layer", "global"), "layers": Field("a list of layer names", lambda v: isinstance(v, list),
                                                           optional=True),
         "exclude": STR_LIST, "ratios": Free("a mapping layer -> ratio")}

CASCADE = {
    "fp": {"train": _train(0)},
    "lo": {"quant": QUANT, "train": _train(0)},
    "hi": {"quant": QUANT, "train": _train(0)},
    "search": {"recall": GRID, "prune": GRID, "span": Int(0), "tolerance": Num(0, 1),
               "methods": Field('a list of "magnitude" / "fpgm"', lambda v: isinstance(v, list) and v != [] and
                                all(m in ("magnitude", "fpgm") for m in v)),
               "finetune": _train()},
    "deploy": BOOL, "batch_size": Int(1), "deploy_device": OneOf("auto", "cpu", "cuda"),
}

COMPRESS = {
    "ratio": Num(0, 1, hi_open=True), "exclude": STR_LIST, "quant": QUANT, "baseline": _train(0),
    "spq": _train(), "ppq": {"prune_epochs": Int(1), "stages": Int(1), "qat": _train()}, "results_dir": OPT_STR,
}

_POS = Int(1)
SEARCH = {
    "space": {"stages": Field("a list of [channels, stride] pairs", lambda v: isinstance(v, list) and v != [] and
                              all(isinstance(s, list) and len(s) == 2 and all(_is_int(i) and i >= 1 for i in s)
                                  for s in v)),
              **{k: Field("a non-empty list of positive integers", lambda v: isinstance(v, list) and v != [] and
                          all(_is_int(i) and i >= 1 for i in v)) for k in ("depths", "kernels", "expands", "bits")},
              "stem_channels": _POS, "first_block_channels": _POS},
    "supernet": {"last_channels": _POS, "stem_stride": OneOf(1, 2), "batch_size": _POS, "lr": Num(0, lo_open=True),
                 "epochs": {k: Int(0) for k in ("largest", "kernel", "depth", "expand")}},
    "pairs": {"fp": Int(0), "quant": Int(0), "holdout": Num(0, 1, hi_open=True), "calib_batches": _POS,
              "finetune_steps": Int(0), "lr": Num(0, lo_open=True), "seed": Int(0),
              "shard": Field("[rank, world] with 0 <= rank < world", lambda v: isinstance(v, list) and len(v) == 2
                             and all(_is_int(i) for i in v) and 0 <= v[0] < v[1])},
    "predictor": {"hidden": _POS, "epochs": _POS, "lr": Num(0, lo_open=True), "transfer_epochs": _POS,
                  "budgets": Field("a list of positive integers", lambda v: isinstance(v, list) and
                                   all(_is_int(i) and i >= 1 for i in v))},
    "device": OneOf("cpu", "cuda", optional=True),
    "cost": {"objective": OneOf("latency", "bops"), "budget": Num(0, lo_open=True)},
    "evolution": {"population": _POS, "parents": _POS, "mutations": Int(0), "crossovers": Int(0),
                  "mutate_prob": Num(0, 1), "generations": Int(0), "seed": Int(0)},
    "finalize": {"finetune_epochs": Int(0), "lr": Num(0, lo_open=True), "latency_reps": _POS},
    "results_dir": OPT_STR, "results_name": OPT_STR,
}


def _model_names() -> tuple:
    from .models import MODELS

    return tuple(MODELS)


SCHEMA = {
    "model": {"name": Field("a model name (cmn_ext.models.MODELS)", lambda v: v in _model_names()),
              "num_classes": Int(1, optional=True), "kwargs": Free("model constructor kwargs")},
    "weights": OPT_STR,
    "data": {"spec": STR, "val_fraction": Num(0, 1, hi_open=True), "seed": Int(0), "limit": LIMIT,
             "download": BOOL, "image_size": Int(1, optional=True)},
    "quant": QUANT,
    "prune": PRUNE,
    "train": TRAIN,
    "remove_pruned": BOOL,
    "convert": BOOL,
    "cascade": CASCADE,
    "search": SEARCH,
    "compress": COMPRESS,
    "run_dir": OPT_STR,
    "name": OPT_STR,
}


def _check_quant(value, key: str, errors: list) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        errors.append(f"'{key}' expected a mapping like {{weight: {{kind: linear, bits: 8}}, act: ...}} or null, "
                      f"got {value!r}")
        return
    from .nn.qat import EDGE_PRESETS
    from .quant import make_quantizer

    for k, v in value.items():
        if k in ("weight", "act"):
            try:
                make_quantizer(v, k)
            except (TypeError, ValueError) as e:
                errors.append(f"'{key}.{k}': {e}")
        elif k in ("first", "last"):
            if v not in EDGE_PRESETS:
                errors.append(f"'{key}.{k}' expected one of {list(EDGE_PRESETS)}, got {v!r}")
        elif k == "layers":
            if not isinstance(v, dict):
                errors.append(f"'{key}.layers' expected a mapping layer name -> {{weight, act}}, got {v!r}")
        else:
            errors.append(_unknown(f"{key}.{k}", k, ["weight", "act", "first", "last", "layers"]))


def _unknown(key: str, name: str, known) -> str:
    near = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return f"unknown key '{key}'{hint}; known here: {', '.join(sorted(known))}"


def _walk(value, schema, key: str, errors: list) -> None:
    if schema == QUANT:
        _check_quant(value, key, errors)
    elif isinstance(schema, Field):
        if not schema.check(value):
            errors.append(f"'{key}' expected {schema.expected}{' or null' if schema.optional else ''}, "
                          f"got {value!r}")
    elif isinstance(schema, Free):
        if value is not None and not isinstance(value, dict):
            errors.append(f"'{key}' expected {schema.what}, got {value!r}")
    elif isinstance(schema, dict):
        if value is None:
            return  # a section left out: its defaults apply
        if not isinstance(value, dict):
            errors.append(f"'{key}' expected a mapping, got {value!r}")
            return
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in schema:
                errors.append(_unknown(sub, str(k), schema))
            else:
                _walk(v, schema[k], sub, errors)


def validate(cfg: dict, source: str = "config") -> dict:
    """``cfg`` unchanged if it fits the schema; otherwise a ValueError listing every problem, each naming its
    dotted key. ``source`` (a file name) heads the message."""
    errors: list[str] = []
    _walk(cfg, SCHEMA, "", errors)
    if errors:
        raise ValueError(f"{source}: {len(errors)} problem{'s' if len(errors) > 1 else ''}:\n  " + "\n  ".join(errors))
    return cfg


__all__ = ["SCHEMA", "validate"]
