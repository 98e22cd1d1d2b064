"""The experiment config, typed: one ``RunConfig`` of frozen dataclass sections (model, data, train, prune,
cascade, compress, search), each default defined here and only here. A config is built from a YAML file and
``key=value`` overrides (dotted keys, YAML-typed values) by ``load_config``; every section checks itself when it
is made, so a ``RunConfig`` that exists is valid: unknown keys at any depth (with the nearest known one
suggested), wrong types and out-of-range values are all reported at once, each naming its dotted key, what was
expected and what was given.

    cfg = load_config("configs/resnet20_spq.yaml", ["train.epochs=3"], recipe="compress")
    cfg.train.lr, cfg.compress.ratio              # typed attributes
    cfg.replace(train=cfg.train.replace(lr=0.01)) # changed copies, checked again
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from .config_schema import (
    BOOL,
    GRID,
    INT_LIST,
    LIMIT,
    MAPPING,
    MODEL_NAME,
    OPT_STR,
    POS_LIST,
    STR,
    STR_LIST,
    Field,
    Int,
    Num,
    OneOf,
    Problem,
    check,
    check_quant,
    unknown,
)


NAMES = dataclasses.replace(STR_LIST, coerce=tuple)  # layer names, kept hashable in a frozen section


class ConfigError(ValueError):
    """Everything wrong with a config, one problem per line, each naming its dotted key."""

    def __init__(self, problems: list[Problem], source: str = "config"):
        self.problems, self.source = list(problems), source
        n = len(self.problems)
        super().__init__(f"{source}: {self.problems[0]}" if n == 1 else
                         f"{source}: {n} problems:\n  " + "\n  ".join(map(str, self.problems)))


# ---- field kinds -----------------------------------------------------------------------------------------------
def value(default, field: Field, doc: str = ""):
    """A checked leaf."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"check": field, "doc": doc})
    return dataclasses.field(default=default, metadata={"check": field, "doc": doc})


def section(cls, optional: bool = False):
    """A nested section (a mapping given for it is built into ``cls``); ``optional``: absent (None) by default."""
    if optional:
        return dataclasses.field(default=None, metadata={"section": cls, "optional": True})
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


def overrides_of(cls, default: dict | None = None, **checks: Field):
    """A partial ``cls`` (e.g. a stage's changes to the run's training settings): a mapping of some of its keys,
    checked like ``cls`` checks them (``checks`` replaces a key's check); given keys are laid over ``default``."""
    return dataclasses.field(default_factory=lambda: dict(default or {}),
                             metadata={"partial": cls, "checks": checks, "base": dict(default or {})})


def quant_spec(default=None):
    """A quantization spec ({weight, act, first, last, layers}, or a ``cmn_ext.Int8()``-style scheme object),
    checked by building its quantizers."""
    return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"quant": True})


def _plain(v):
    if isinstance(v, Section):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


@dataclasses.dataclass(frozen=True)
class Section:
    """A frozen config section that checks its fields when made (``ConfigError`` listing every problem)."""

    def __post_init__(self):
        problems = []
        for f in dataclasses.fields(self):
            v, problems_here = self._resolve(f, getattr(self, f.name))
            problems += problems_here
            object.__setattr__(self, f.name, v)
        if not problems:
            problems += self._cross_checks()
        if problems:
            raise ConfigError(problems, type(self).__name__)

    @staticmethod
    def _resolve(f, v) -> tuple[Any, list[Problem]]:
        m = f.metadata
        if "section" in m:
            if v is None and m.get("optional"):
                return None, []
            try:
                return m["section"].from_dict(v), []
            except ConfigError as e:
                return v, [p.under(f.name) for p in e.problems]
        if "partial" in m:
            return _partial(m["partial"], m["checks"], m["base"], v, f.name)
        if m.get("quant"):
            v = v.spec() if hasattr(v, "spec") else v  # cmn_ext.Int8(), Binary(), ... (cmn_ext.api)
            return copy.deepcopy(v), check_quant(v, f.name)
        if "check" in m:
            problem = check(m["check"], v, f.name)
            if problem:
                return v, [problem]
            coerce = m["check"].coerce
            return (coerce(v) if coerce is not None and v is not None else v), []
        return v, []

    def _cross_checks(self) -> list[Problem]:
        """Checks that involve several fields (after each field passed its own)."""
        return []

    @classmethod
    def from_dict(cls, d) -> Section:
        """``cls`` from a mapping (None: the defaults). Unknown keys are problems like any other."""
        if d is None:
            return cls()
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError([Problem("", f" expected a mapping, got {d!r}")], cls.__name__)
        names = [f.name for f in dataclasses.fields(cls)]
        problems = [unknown(str(k), str(k), names) for k in d if k not in names]
        try:
            obj = cls(**{k: v for k, v in d.items() if k in names})
        except ConfigError as e:
            problems += e.problems
        if problems:
            raise ConfigError(problems, cls.__name__)
        return obj

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> Section:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)


def _partial(cls, checks: dict, base: dict, v, key: str) -> tuple[dict, list[Problem]]:
    if v is None:
        return dict(base), []
    if not isinstance(v, Mapping):
        return v, [Problem(key, f" expected a mapping of {cls.__name__} keys, got {v!r}")]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out, problems = dict(base), []
    for k, x in v.items():
        sub = f"{key}.{k}"
        if k not in fields:
            problems.append(unknown(sub, str(k), fields))
            continue
        field = checks.get(k) or fields[k].metadata.get("check")
        problem = check(field, x, sub) if field is not None else None
        if problem:
            problems.append(problem)
        else:
            out[k] = field.coerce(x) if field is not None and field.coerce is not None and x is not None else x
    return out, problems


# ---- the sections ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    name: str = value("resnet20", MODEL_NAME)
    num_classes: int | None = value(None, Int(1, optional=True), "default: the dataset's")
    kwargs: dict = value({}, MAPPING, "model constructor keyword arguments")


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    spec: str = value("digits", STR, "digits, cifar10[:root], cifar100[:root], imagefolder:<root>")
    val_fraction: float = value(0.1, Num(0, 1, hi_open=True), "share of the training split held out")
    seed: int = value(0, Int(0))
    limit: Any = value(None, LIMIT, "images per split: n, or {train: n, val: n, test: n}")
    download: bool = value(False, BOOL)
    image_size: int | None = value(None, Int(1, optional=True), "resize to this side (digits: 8 -> 16 ...)")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    epochs: int = value(1, Int(1))
    batch_size: int = value(128, Int(1))
    eval_batch_size: int = value(256, Int(1))
    optimizer: str = value("sgd", OneOf("sgd", "adam"))
    lr: float = value(0.1, Num(0, lo_open=True))
    momentum: float = value(0.9, Num(0, 1, hi_open=True))
    nesterov: bool = value(False, BOOL)
    weight_decay: float = value(5e-4, Num(0))
    schedule: str = value("multistep", OneOf("multistep", "plateau", "cosine", "none"))
    milestones: list | None = value(None, INT_LIST, "multistep; default: 50 % and 75 % of the epochs")
    gamma: float = value(0.1, Num(0, 1, lo_open=True), "multistep decay")
    factor: float = value(0.9, Num(0, 1, lo_open=True), "plateau decay")
    patience: int = value(3, Int(0), "plateau: epochs without a better validation top-1")
    amp: bool = value(True, BOOL, "bf16 autocast on a GPU")
    workers: int = value(0, Int(0))
    seed: int = value(0, Int(0))
    grad_clip: float | None = value(None, Num(0, lo_open=True, optional=True), "gradient-norm clip")
    bn_recalibrate: int = value(100, Int(0), "batches re-estimating BN after a soft pruning schedule; 0: off")


@dataclasses.dataclass(frozen=True)
class Prune(Section):
    """Filter (``fpgm``) or weight-magnitude pruning to ``ratio``: ``oneshot``, ``soft`` (SPQ: re-selected and
    zeroed at every epoch end) or ``progressive`` (PPQ: ``stages`` steps over ``epochs``, frozen at zero)."""

    method: str = value("fpgm", OneOf("magnitude", "fpgm"))
    ratio: float = value(0.3, Num(0, 1, hi_open=True))
    schedule: str = value("oneshot", OneOf("oneshot", "soft", "progressive"))
    stages: int = value(1, Int(1))
    epochs: int | None = value(None, Int(1, optional=True), "default: the run's training epochs")
    scope: str = value("layer", OneOf("layer", "global"))
    layers: list | None = value(None, Field("a list of layer names", lambda v: isinstance(v, list), optional=True))
    exclude: tuple = value(("first", "last"), NAMES, 'layers left whole: "first", "last" or layer names')
    ratios: dict | None = value(None, Field("a mapping layer -> ratio", lambda v: isinstance(v, dict), optional=True))

    def pruner_kwargs(self, epochs: int) -> dict:
        """Keyword arguments of ``cmn_ext.prune.Pruner`` (``epochs``: the run's, when the section has none)."""
        return {**self.to_dict(), "epochs": self.epochs or epochs}


@dataclasses.dataclass(frozen=True)
class FloatStage(Section):
    """The full-precision net: trained from scratch with the run's settings and ``train``'s changes, or, when
    the run starts from ``weights``, fine-tuned from them for ``train.epochs`` (0: used as loaded) so that it
    sees the same data as the 1-bit and 8-bit nets it is compared with."""

    train: dict = overrides_of(TrainConfig, epochs=Int(0))


@dataclasses.dataclass(frozen=True)
class QuantStage(Section):
    quant: dict | None = quant_spec()
    train: dict = overrides_of(TrainConfig, epochs=Int(0))


BINARY_01 = {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": "01"}, "first": "fp", "last": "fp"}
LINEAR_8 = {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "linear", "bits": 8}, "first": "fp",
            "last": "fp"}


@dataclasses.dataclass(frozen=True)
class LoStage(QuantStage):
    quant: dict | None = quant_spec(BINARY_01)  # CMN Table 2, 1-bit row; first / last layers full precision


@dataclasses.dataclass(frozen=True)
class HiStage(QuantStage):
    quant: dict | None = quant_spec(LINEAR_8)  # the 8-bit row, on the int8 kernels


@dataclasses.dataclass(frozen=True)
class CascadeSearchConfig(Section):
    """Algorithm 1's grid: recall rates tau and pruning ratios phi in percent ([start, stop, step] or a list)."""

    recall: list = value([5, 95, 5], GRID)
    prune: list = value([5, 90, 5], GRID)
    span: int = value(2, Int(0), "neighbouring grid points searched around each candidate")
    tolerance: float = value(0.0, Num(0, 1), "accuracy below the floor eta still accepted (paper: 0)")
    eta: str = value("min", OneOf("fp", "min"),
                     "the floor: fp = the full-precision net's validation top-1 (the paper); min = the lower of "
                     "that and the 8-bit net's (what a cascade can keep when the 8-bit net is below full precision)")
    methods: list = value(["magnitude"], Field('a list of "magnitude" / "fpgm"', lambda v: isinstance(v, list) and
                                               v != [] and all(m in ("magnitude", "fpgm") for m in v)))
    finetune: dict = overrides_of(TrainConfig, {"epochs": 1})


@dataclasses.dataclass(frozen=True)
class CascadeConfig(Section):
    fp: FloatStage = section(FloatStage)
    lo: LoStage = section(LoStage)
    hi: HiStage = section(HiStage)
    search: CascadeSearchConfig = section(CascadeSearchConfig)
    deploy: bool = value(True, BOOL, "convert the searched cascade to the kernels and time it")
    batch_size: int = value(256, Int(1))
    deploy_device: str = value("auto", OneOf("auto", "cpu", "cuda"))


APOT_SPQ = {"weight": {"kind": "apot", "bits": 4}, "act": {"kind": "apot", "bits": 4}, "first": "8bit", "last": "8bit"}


@dataclasses.dataclass(frozen=True)
class PPQConfig(Section):
    prune_epochs: int = value(200, Int(1))
    stages: int = value(2, Int(1))
    qat: dict = overrides_of(TrainConfig, {"epochs": 50, "lr": 0.01})


@dataclasses.dataclass(frozen=True)
class CompressConfig(Section):
    """SPQ / PPQ (section IV-A of the paper): 30 % of the filters of every conv layer, APoT 4/4 with 8-bit
    first / last layers; the training settings of the run (``recipe="compress"``: the plateau schedule)."""

    ratio: float = value(0.3, Num(0, 1, hi_open=True))
    exclude: tuple = value((), NAMES)
    quant: dict | None = quant_spec(APOT_SPQ)
    baseline: dict = overrides_of(TrainConfig, {"epochs": 0}, epochs=Int(0))
    # Gradient-norm clipping for SPQ: right after an epoch-end zeroing the zeroed channels have zero batch
    # variance and batch norm scales their gradient by 1/sqrt(eps); measured on ResNet-20, the first step's
    # weight gradients reach |g| = 836 and the loss jumps from 1.8 to 3.2 and never recovers; clipped at 1 it
    # stays at 1.3-1.8.
    spq: dict = overrides_of(TrainConfig, {"epochs": 200, "grad_clip": 1.0})
    ppq: PPQConfig = section(PPQConfig)
    results_dir: str | None = value(None, OPT_STR, "also write the result JSON there")


@dataclasses.dataclass(frozen=True)
class SpaceConfig(Section):
    """The elastic MobileNetV2 space; a key left out (null) takes ``cmn_ext.search.SearchSpace``'s default."""

    stages: list | None = value(None, Field("a list of [channels, stride] pairs", lambda v: isinstance(v, list) and
                                            v != [] and all(isinstance(s, (list, tuple)) and len(s) == 2 and
                                                            all(isinstance(i, int) and i >= 1 for i in s) for s in v),
                                            optional=True))
    depths: list | None = value(None, dataclasses.replace(POS_LIST, optional=True))
    kernels: list | None = value(None, dataclasses.replace(POS_LIST, optional=True))
    expands: list | None = value(None, dataclasses.replace(POS_LIST, optional=True))
    bits: list | None = value(None, dataclasses.replace(POS_LIST, optional=True))
    stem_channels: int | None = value(None, Int(1, optional=True))
    first_block_channels: int | None = value(None, Int(1, optional=True))
    channel_step: int | None = value(None, Int(0, optional=True),
                                     "hidden channels min..max(expands) x input in these steps (APQ: 8); "
                                     "0: the listed expand ratios only")

    def build(self):
        from .search.space import SearchSpace

        given = {k: v for k, v in self.to_dict().items() if v is not None}
        return SearchSpace(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list)
                              else v for k, v in given.items()})


@dataclasses.dataclass(frozen=True)
class ShrinkEpochs(Section):
    """Progressive shrinking: epochs of the largest network, then elastic kernel, depth, expand ratio."""

    largest: int = value(10, Int(0))
    kernel: int = value(5, Int(0))
    depth: int = value(5, Int(0))
    expand: int = value(5, Int(0))


@dataclasses.dataclass(frozen=True)
class SupernetConfig(Section):
    last_channels: int = value(1280, Int(1))
    stem_stride: int = value(1, OneOf(1, 2))
    batch_size: int = value(128, Int(1))
    lr: float = value(0.05, Num(0, lo_open=True))
    epochs: ShrinkEpochs = section(ShrinkEpochs)
    kd_weight: float = value(1.0, Num(0), "distillation from the largest network in the kernel / depth / expand "
                                          "phases (APQ / OFA: 1.0); 0: off")
    kd_temperature: float = value(1.0, Num(0, lo_open=True), "softmax temperature of the distillation (OFA: 1)")


@dataclasses.dataclass(frozen=True)
class PairsConfig(Section):
    fp: int = value(2000, Int(0), "full-precision (arch, accuracy) pairs")
    quant: int = value(300, Int(0), "quantized pairs (each fine-tuned)")
    holdout: float = value(0.2, Num(0, 1, hi_open=True))
    calib_batches: int = value(20, Int(1))
    finetune_steps: int = value(50, Int(0))
    lr: float = value(0.005, Num(0, lo_open=True))
    seed: int = value(0, Int(0))
    shard: list = value([0, 1], Field("[rank, world] with 0 <= rank < world", lambda v: isinstance(v, (list, tuple))
                                      and len(v) == 2 and all(isinstance(i, int) for i in v) and 0 <= v[0] < v[1]))


@dataclasses.dataclass(frozen=True)
class PredictorConfig(Section):
    hidden: int = value(400, Int(1))
    epochs: int = value(300, Int(1))
    lr: float = value(1e-3, Num(0, lo_open=True))
    transfer_epochs: int = value(150, Int(1))
    budgets: list = value([25, 50, 100, 200], POS_LIST, "quantized-pair budgets compared (transfer vs scratch)")


@dataclasses.dataclass(frozen=True)
class CostConfig(Section):
    objective: str = value("latency", OneOf("latency", "bops", "bitfusion"),
                           "measured latency table, BOPs, or the BitFusion bit-brick model")
    budget: float = value(0.7, Num(0, lo_open=True), "a fraction of the largest 8-bit network's cost")
    table: str = value("deployed", OneOf("deployed", "kernels"),
                       "latency table entries: each layer as the deploy engine runs it, or its bare kernel call")


@dataclasses.dataclass(frozen=True)
class EvolutionConfig(Section):
    """APQ's evolutionary search (section 3.4): population 100, 25 parents, 50 mutations (p = 0.1), 50
    crossovers, 500 generations."""

    population: int = value(100, Int(1))
    parents: int = value(25, Int(1))
    mutations: int = value(50, Int(0))
    crossovers: int = value(50, Int(0))
    mutate_prob: float = value(0.1, Num(0, 1))
    generations: int = value(500, Int(0))
    max_tries: int = value(200, Int(1), "resamples for one candidate before giving up on the budget")
    seed: int = value(0, Int(0))
    quantized: bool = value(True, BOOL)

    def _cross_checks(self) -> list[Problem]:
        if self.parents > self.population:
            return [Problem("parents", f" expected 1..population ({self.population}), got {self.parents}")]
        return []


@dataclasses.dataclass(frozen=True)
class FinalizeConfig(Section):
    finetune_epochs: int = value(2, Int(0))
    lr: float = value(0.005, Num(0, lo_open=True))
    latency_reps: int = value(30, Int(1))


@dataclasses.dataclass(frozen=True)
class SearchConfig(Section):
    space: SpaceConfig = section(SpaceConfig)
    supernet: SupernetConfig = section(SupernetConfig)
    pairs: PairsConfig = section(PairsConfig)
    predictor: PredictorConfig = section(PredictorConfig)
    device: str | None = value(None, OneOf("cpu", "cuda", optional=True), "default: cuda when available")
    cost: CostConfig = section(CostConfig)
    evolution: EvolutionConfig = section(EvolutionConfig)
    finalize: FinalizeConfig = section(FinalizeConfig)
    results_dir: str | None = value(None, OPT_STR, "also write the summary to <results_dir>/<results_name>.json")
    results_name: str | None = value(None, OPT_STR, "default: apq_<dataset>")


@dataclasses.dataclass(frozen=True)
class RunConfig(Section):
    model: ModelConfig = section(ModelConfig)
    weights: str | None = value(None, OPT_STR, "a checkpoint to start from")
    data: DataConfig = section(DataConfig)
    quant: dict | None = quant_spec()
    prune: Prune | None = section(Prune, optional=True)
    train: TrainConfig = section(TrainConfig)
    remove_pruned: bool = value(False, BOOL, "compact pruned filters away after training")
    convert: bool = value(False, BOOL, "write deploy.pt (the model on the kernels) after training")
    cascade: CascadeConfig = section(CascadeConfig)
    search: SearchConfig = section(SearchConfig)
    compress: CompressConfig = section(CompressConfig)
    run_dir: str | None = value(None, OPT_STR, "default: runs/<name or model-time>")
    name: str | None = value(None, OPT_STR)

    def needs_qat_layers(self) -> bool:
        return self.quant is not None or self.prune is not None


# ---- loading -----------------------------------------------------------------------------------------------------
# What a recipe sets before the file and the overrides: SPQ / PPQ train with the papers' plateau schedule (lr x0.9
# after 3 epochs without a better validation top-1; factor and patience are TrainConfig's defaults).
RECIPES = {"compress": {"train": {"schedule": "plateau"}}}


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


def _merge(base: dict, update: dict) -> dict:
    """``update`` laid over ``base``, mapping by mapping (the layers of a config: recipe, file, overrides)."""
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
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
            v = parse(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        set_dotted(cfg, key.strip(), v)
    return cfg


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config not found: {path}")
    try:
        with open(path) as f:
            loaded = yaml.load(f, Loader=_Loader) or {}  # a stream: YAML errors name the file and line
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded


def build(d: Mapping | None, source: str = "config") -> RunConfig:
    """A ``RunConfig`` from a mapping; a ``ConfigError`` headed by ``source`` lists what is wrong."""
    try:
        return RunConfig.from_dict(d or {})
    except ConfigError as e:
        raise ConfigError(e.problems, source) from None


def load_config(path: str | None = None, overrides: list[str] | None = None, recipe: str | None = None) -> RunConfig:
    """The recipe's settings (``RECIPES``) <- the YAML file (if any) <- ``key=value`` overrides, checked."""
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"load_config: 'recipe' expected one of {sorted(RECIPES)} or None, got {recipe!r}")
    raw = copy.deepcopy(RECIPES.get(recipe, {}))
    if path:
        loaded = read_yaml(path)
        build(loaded, path)  # the file's own mistakes, named as the file's
        raw = _merge(raw, loaded)
    raw = apply_overrides(raw, overrides or [])
    return build(raw, "config" if not overrides else f"config {'(' + path + ') ' if path else ''}with overrides")


def as_run_config(cfg: RunConfig | Mapping) -> RunConfig:
    """A ``RunConfig`` as given, or built (and checked) from a mapping."""
    return cfg if isinstance(cfg, RunConfig) else build(cfg)


def dump(cfg: Section | Mapping) -> str:
    """YAML text of a config; ``load_config`` of that text gives the same config back."""
    return yaml.safe_dump(cfg.to_dict() if isinstance(cfg, Section) else _plain(cfg), sort_keys=False)


def save(cfg: RunConfig, run_dir: str) -> str:
    """Write the resolved config as <run_dir>/config.yaml (atomically); returns the path. Every command's run
    directory gets its config from here."""
    from .files import write_text_atomic

    path = os.path.join(run_dir, "config.yaml")
    write_text_atomic(path, dump(cfg))
    return path


__all__ = ["CascadeConfig", "CompressConfig", "ConfigError", "DataConfig", "EvolutionConfig", "ModelConfig",
           "Prune", "RunConfig", "SearchConfig", "TrainConfig", "apply_overrides", "as_run_config", "build",
           "dump", "load_config", "save"]
