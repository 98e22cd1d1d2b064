"""YAML experiment configs with ``key=value`` overrides (dotted keys, YAML-typed values)."""

import copy
import os
import re

import yaml

from .config_schema import validate


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-3 (no dot) as a string; read it as the float everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?$"
               r"|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def parse(text: str):
    return yaml.load(text, Loader=_Loader)

DEFAULTS = {
    "model": {"name": "resnet20", "num_classes": None, "kwargs": {}},
    "weights": None,
    "data": {"spec": "digits", "val_fraction": 0.1, "seed": 0, "limit": None, "download": False,
             "image_size": None},
    "quant": None,
    "prune": None,
    "train": {"epochs": 1, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
              "weight_decay": 5e-4, "schedule": "multistep", "amp": True, "workers": 0, "seed": 0},
    "remove_pruned": False,
    "convert": False,
    "cascade": None,
    "search": None,
    "compress": None,
    "run_dir": None,
    "name": None,
}


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, key: str, value) -> None:
    parts = key.split(".")
    cur = cfg
    for p in parts[:-1]:
        if cur.get(p) is None:
            cur[p] = {}
        if not isinstance(cur[p], dict):
            raise ValueError(f"override {key!r}: {p!r} is {cur[p]!r}, not a mapping")
        cur = cur[p]
    cur[parts[-1]] = value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """``["train.lr=0.01", "prune.ratio=0.5", "quant=null"]`` -> cfg with those keys set (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = parse(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        set_dotted(cfg, key.strip(), value)
    return cfg


def load_config(path: str | None, overrides: list[str] | None = None, base: dict | None = None) -> dict:
    """DEFAULTS <- ``base`` (a recipe's own defaults, e.g. SPQ / PPQ's plateau schedule) <- the YAML file (if
    any) <- overrides, validated."""
    cfg = merge(DEFAULTS, base or {})
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config not found: {path}")
        try:
            with open(path) as f:
                loaded = yaml.load(f, Loader=_Loader) or {}  # a stream: YAML errors name the file and line
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        validate(loaded, path)  # the file's own mistakes, named as the file's
        cfg = merge(cfg, loaded)
    cfg = apply_overrides(cfg, overrides or [])
    return validate(cfg, "config" if not overrides else f"config {'(' + path + ') ' if path else ''}with overrides")


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
