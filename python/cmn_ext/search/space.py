"""The APQ search space: an elastic MobileNetV2 (per stage depth, per block kernel size and hidden channel
number) with a per-layer quantization policy (weight and activation bits of each block's expand, depthwise and
project convs).

Width (the pruning dimension) follows APQ section 3.1: a block's hidden channels take every value from
``min(expands)`` x B to ``max(expands)`` x B in steps of ``channel_step`` channels (APQ: 4B to 6B, 8 as interval,
B the block's input channels), so the choices differ per block; with ``channel_step=0`` they are exactly the
listed ratios (OFA's {3, 4, 6}). An arch stores a block's width as its expand ratio hidden / B (APQ's code does
the same), an int when whole (6, not 6.0), else the float hidden / B.

An ``Arch`` is plain data (lists of numbers), JSON-serialisable, with one slot per *possible* block; blocks past
a stage's depth are skipped and their slots ignored. ``encode`` gives the predictor's input (APQ section 3.2):
per block a one-hot of the kernel size and of the block's width choice, and per layer one-hots of the weight
and activation bits, all zero for a skipped block; the quantization part is all zero for a full-precision
architecture (the FP predictor's input), so the quantization-aware predictor can start from the FP one.

``deploy_layers`` lists every layer the converted network runs (the fixed stem, first block, head, pooling and
classifier around the searched blocks, and the engine call), which the measured latency table sums.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

LAYERS_PER_BLOCK = 3  # 1x1 expand, kxk depthwise, 1x1 project
FIXED_BITS = 8        # the stem, first block, head and classifier (pairs.quantize_subnet)


class Layer(NamedTuple):
    """One layer of a (sub-)network as it is deployed. The first nine fields are what the cost functions read
    by position (``cost.layer_key``, ``cost.kernel_for``, ``SearchSpace.bops``); ``relu`` (a ReLU6 follows),
    ``residual`` (the block's residual addition follows) and ``signed`` (the input quantizer is signed) complete
    the description the deployed-layer timing rebuilds. Kinds: searched "expand", "depthwise", "project";
    fixed "stem", "head", "pool", "classifier" (the first block is a "depthwise" and a "project"); "call" is
    the deploy engine's per-call work (input layout, graph dispatch), once per network."""

    kind: str
    cin: int
    cout: int
    k: int
    stride: int
    size: int        # input height (= width)
    macs: int
    wbits: int
    abits: int
    relu: bool = False
    residual: bool = False
    signed: bool = False


@dataclass(frozen=True)
class Frame:
    """What the supernet puts around the searched blocks besides the space's stem and first block: the input
    channels, the head's output channels (``search.supernet.last_channels``) and the classes."""

    in_channels: int = 3
    last_channels: int = 1280
    num_classes: int = 1000


def _ratio(hidden: int, cin: int):
    r = hidden / cin
    return int(r) if r == int(r) else r


@dataclass(frozen=True)
class SearchSpace:
    """Elastic stages: (output channels, first stride) each, up to ``max(depths)`` blocks. The defaults are
    APQ's space (section 3.1; its code's ProxylessNAS widths): depths 2-4, kernels 3/5/7, hidden channels 4B to
    6B in steps of 8, bits 4/6/8 per layer, stages of 24, 40, 80, 96 and 192 channels (APQ's sixth stage, one
    fixed 320-channel block, is not modelled: 20 searched blocks, not 21)."""

    stages: tuple = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))
    depths: tuple = (2, 3, 4)
    kernels: tuple = (3, 5, 7)
    expands: tuple = (4, 6)
    bits: tuple = (4, 6, 8)
    stem_channels: int = 32
    first_block_channels: int = 16   # the fixed MobileNetV2 block before the elastic stages (expand 1)
    channel_step: int = 8            # hidden channels min..max(expands) x B in these steps; 0: the ratios only

    def __post_init__(self):
        for name in ("depths", "kernels", "expands", "bits"):
            values = getattr(self, name)
            if not values or any(int(v) != v or v <= 0 for v in values):
                raise ValueError(f"SearchSpace: '{name}' expected a non-empty tuple of positive ints, got {values!r}")
        if not self.stages:
            raise ValueError("SearchSpace: 'stages' expected at least one (channels, stride) pair, got none")
        if int(self.channel_step) != self.channel_step or self.channel_step < 0:
            raise ValueError(f"SearchSpace: 'channel_step' expected an int >= 0, got {self.channel_step!r}")
        # per block slot: the width choices as expand ratios (hidden / input channels), smallest first
        object.__setattr__(self, "_widths", tuple(self._width_choices(cin) for _, _, cin, _, _ in self.block_slots()))

    def _width_choices(self, cin: int) -> tuple:
        if not self.channel_step:
            return tuple(sorted(set(self.expands)))
        lo, hi = cin * min(self.expands), cin * max(self.expands)
        return tuple(_ratio(h, cin) for h in list(range(lo, hi, self.channel_step)) + [hi])

    def expand_choices(self, i: int) -> tuple:
        """The width choices of block slot ``i``, as expand ratios (hidden / input channels)."""
        return self._widths[i]

    def hidden(self, i: int, expand) -> int:
        """Hidden channels of block slot ``i`` at expand ratio ``expand``."""
        return hidden_channels(self.slot_cin(i), expand)

    def slot_cin(self, i: int) -> int:
        s, j = divmod(i, self.max_depth)
        return (self.stages[s - 1][0] if s else self.first_block_channels) if j == 0 else self.stages[s][0]

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def num_blocks(self) -> int:
        return len(self.stages) * self.max_depth

    def block_slots(self):
        """(stage, index in stage, input channels, output channels, stride) of every possible block."""
        cin = self.first_block_channels
        for s, (cout, stride) in enumerate(self.stages):
            for j in range(self.max_depth):
                yield s, j, (cin if j == 0 else cout), cout, (stride if j == 0 else 1)
            cin = cout

    # ---- sampling and variation ----------------------------------------------------------------------------
    def sample(self, rng: random.Random, quantized: bool = True) -> "Arch":
        b = self.num_blocks
        return Arch(depths=[rng.choice(self.depths) for _ in self.stages],
                    kernels=[rng.choice(self.kernels) for _ in range(b)],
                    expands=[rng.choice(self.expand_choices(i)) for i in range(b)],
                    wbits=[[rng.choice(self.bits) for _ in range(LAYERS_PER_BLOCK)] for _ in range(b)] if quantized else None,
                    abits=[[rng.choice(self.bits) for _ in range(LAYERS_PER_BLOCK)] for _ in range(b)] if quantized else None)

    def largest(self, bits: int | None = None) -> "Arch":
        """The largest sub-network, uniformly quantized to ``bits`` (None: full precision)."""
        b = self.num_blocks
        q = None if bits is None else [[bits] * LAYERS_PER_BLOCK for _ in range(b)]
        return Arch([self.max_depth] * len(self.stages), [max(self.kernels)] * b,
                    [self.expand_choices(i)[-1] for i in range(b)], q, None if q is None else [list(r) for r in q])

    def mutate(self, arch: "Arch", rng: random.Random, prob: float = 0.1) -> "Arch":
        """Each gene is resampled with probability ``prob`` (APQ: 0.1)."""
        pick = lambda cur, choices: rng.choice(choices) if rng.random() < prob else cur  # noqa: E731
        new = Arch([pick(d, self.depths) for d in arch.depths], [pick(k, self.kernels) for k in arch.kernels],
                   [pick(e, self.expand_choices(i)) for i, e in enumerate(arch.expands)], None, None)
        if arch.quantized:
            new.wbits = [[pick(v, self.bits) for v in row] for row in arch.wbits]
            new.abits = [[pick(v, self.bits) for v in row] for row in arch.abits]
        return new

    def crossover(self, a: "Arch", b: "Arch", rng: random.Random) -> "Arch":
        """Each gene from either parent with equal probability."""
        mix = lambda x, y: [u if rng.random() < 0.5 else v for u, v in zip(x, y)]  # noqa: E731
        new = Arch(mix(a.depths, b.depths), mix(a.kernels, b.kernels), mix(a.expands, b.expands), None, None)
        if a.quantized and b.quantized:
            new.wbits = [list(r) for r in mix(a.wbits, b.wbits)]
            new.abits = [list(r) for r in mix(a.abits, b.abits)]
        return new

    # ---- encoding ------------------------------------------------------------------------------------------
    def encoding_size(self) -> int:
        per_block = len(self.kernels) + LAYERS_PER_BLOCK * 2 * len(self.bits)
        return self.num_blocks * per_block + sum(len(w) for w in self._widths)

    def encode(self, arch: "Arch") -> list[float]:
        self.check(arch)
        vec = []
        for i, (s, j, *_rest) in enumerate(self.block_slots()):
            active = j < arch.depths[s]
            vec += _one_hot(arch.kernels[i] if active else None, self.kernels)
            vec += _one_hot(arch.expands[i] if active else None, self.expand_choices(i))
            for layer in range(LAYERS_PER_BLOCK):
                on = active and arch.quantized
                vec += _one_hot(arch.wbits[i][layer] if on else None, self.bits)
                vec += _one_hot(arch.abits[i][layer] if on else None, self.bits)
        return vec

    def decode(self, vec) -> "Arch":
        """The architecture of an encoding; skipped blocks come back with the smallest choices (they are unused)."""
        vec = [float(v) for v in vec]
        if len(vec) != self.encoding_size():
            raise ValueError(f"SearchSpace.decode: 'vec' expected {self.encoding_size()} values, got {len(vec)}")
        pos, b = 0, self.num_blocks
        kernels, expands = [min(self.kernels)] * b, [self.expand_choices(i)[0] for i in range(b)]
        wbits = [[min(self.bits)] * LAYERS_PER_BLOCK for _ in range(b)]
        abits = [[min(self.bits)] * LAYERS_PER_BLOCK for _ in range(b)]
        depths = [0] * len(self.stages)
        quantized = False

        def take(choices):
            nonlocal pos
            part, pos = vec[pos:pos + len(choices)], pos + len(choices)
            return choices[part.index(1.0)] if 1.0 in part else None

        for i, (s, j, *_rest) in enumerate(self.block_slots()):
            k, e = take(self.kernels), take(self.expand_choices(i))
            if k is not None:
                kernels[i], expands[i] = k, e
                depths[s] = max(depths[s], j + 1)
            for layer in range(LAYERS_PER_BLOCK):
                w, a = take(self.bits), take(self.bits)
                if w is not None:
                    wbits[i][layer], abits[i][layer], quantized = w, a, True
        return Arch(depths, kernels, expands, wbits if quantized else None, abits if quantized else None)

    def check(self, arch: "Arch") -> None:
        b = self.num_blocks
        problems = []
        if len(arch.depths) != len(self.stages) or any(d not in self.depths for d in arch.depths):
            problems.append(f"depths {arch.depths} (expected {len(self.stages)} values from {self.depths})")
        if len(arch.kernels) != b or any(k not in self.kernels for k in arch.kernels):
            problems.append(f"kernels (expected {b} values from {self.kernels})")
        if len(arch.expands) != b or any(e not in self.expand_choices(i) for i, e in enumerate(arch.expands)):
            problems.append(f"expands (expected {b} values, block i's from expand_choices(i); "
                            f"{self.expand_choices(0)} for block 0)")
        for name in ("wbits", "abits"):
            rows = getattr(arch, name)
            if rows is not None and (len(rows) != b or any(len(r) != LAYERS_PER_BLOCK or any(v not in self.bits for v in r)
                                                           for r in rows)):
                problems.append(f"{name} (expected {b} rows of {LAYERS_PER_BLOCK} values from {self.bits})")
        if (arch.wbits is None) != (arch.abits is None):
            problems.append("wbits and abits must both be given or both be None")
        if problems:
            raise ValueError("Arch does not fit the search space: " + "; ".join(problems))

    # ---- layers and cost proxy -----------------------------------------------------------------------------
    def layer_costs(self, arch: "Arch", resolution: int = 32, stem_stride: int = 1) -> list[Layer]:
        """Per active searched layer a ``Layer`` (kind, cin, cout, kernel, stride, input size, MACs, w_bits,
        a_bits, ...); bits are 32 for a full-precision architecture. The fixed layers are in ``deploy_layers``."""
        self.check(arch)
        size = _out(resolution, stem_stride)
        out = []
        for i, (s, j, cin, cout, stride) in enumerate(self.block_slots()):
            if j >= arch.depths[s]:
                continue
            hidden, k = self.hidden(i, arch.expands[i]), arch.kernels[i]
            so = _out(size, stride)
            wb = arch.wbits[i] if arch.quantized else [32] * LAYERS_PER_BLOCK
            ab = arch.abits[i] if arch.quantized else [32] * LAYERS_PER_BLOCK
            # input quantizers as pairs.quantize_subnet sets them: the block input is signed (residual sums),
            # the depthwise and project inputs follow ReLU6
            out.append(Layer("expand", cin, hidden, 1, 1, size, size * size * cin * hidden, wb[0], ab[0],
                             relu=True, signed=True))
            out.append(Layer("depthwise", hidden, hidden, k, stride, size, so * so * hidden * k * k, wb[1], ab[1],
                             relu=True))
            out.append(Layer("project", hidden, cout, 1, 1, so, so * so * hidden * cout, wb[2], ab[2],
                             residual=stride == 1 and cin == cout))
            size = so
        return out

    def deploy_layers(self, arch: "Arch", resolution: int, stem_stride: int, frame: Frame) -> list[Layer]:
        """Every layer of the converted sub-network in the order it runs, fixed ones included: the engine call,
        the stem conv, the first block (depthwise + project, 8-bit), the searched layers (``layer_costs``), the
        head conv, the global average pool and the classifier; bits as ``pairs.quantize_subnet`` sets them."""
        fb = FIXED_BITS if arch.quantized else 32
        cin, stem, first, last = frame.in_channels, self.stem_channels, self.first_block_channels, self.stages[-1][0]
        head, classes = frame.last_channels, frame.num_classes
        s0 = _out(resolution, stem_stride)
        searched = self.layer_costs(arch, resolution, stem_stride)
        size = searched[-1].size  # the last project conv's (stride 1) input size: the head's
        return ([Layer("call", cin, cin, 0, 1, resolution, 0, 32, 32),
                 Layer("stem", cin, stem, 3, stem_stride, resolution, s0 * s0 * cin * stem * 9, fb, fb, relu=True,
                       signed=True),
                 Layer("depthwise", stem, stem, 3, 1, s0, s0 * s0 * stem * 9, fb, fb, relu=True, signed=True),
                 Layer("project", stem, first, 1, 1, s0, s0 * s0 * stem * first, fb, fb, residual=stem == first,
                       signed=True)]
                + searched
                + [Layer("head", last, head, 1, 1, size, size * size * last * head, fb, fb, relu=True, signed=True),
                   Layer("pool", head, head, size, 1, size, 0, 32, 32),
                   # the classifier is quantize_model's "last" layer: its 8-bit input quantizer is unsigned
                   Layer("classifier", head, classes, 1, 1, 1, head * classes, fb, fb)])

    def bops(self, arch: "Arch", resolution: int = 32, stem_stride: int = 1) -> float:
        """Bit operations of the searched layers: sum of MACs x w_bits x a_bits (the cost proxy)."""
        return float(sum(c[6] * c[7] * c[8] for c in self.layer_costs(arch, resolution, stem_stride)))


def hidden_channels(cin: int, expand) -> int:
    """Hidden channels of a block with ``cin`` input channels at expand ratio ``expand`` (hidden / cin)."""
    return int(round(cin * expand))


def _out(size: int, stride: int) -> int:
    """Output size of a conv with padding k // 2 (odd k) and ``stride``."""
    return (size + stride - 1) // stride


class UniformBits:
    """A view of ``space`` whose samples, mutations and crossovers all carry one bitwidth everywhere: the
    architecture-only search with uniform quantization that APQ compares its joint search with."""

    def __init__(self, space: SearchSpace, bits: int):
        if bits not in space.bits:
            raise ValueError(f"UniformBits: 'bits' expected one of {space.bits}, got {bits}")
        self.space, self.bits = space, bits

    def _fix(self, arch: "Arch") -> "Arch":
        arch.wbits = [[self.bits] * LAYERS_PER_BLOCK for _ in arch.kernels]
        arch.abits = [[self.bits] * LAYERS_PER_BLOCK for _ in arch.kernels]
        return arch

    def sample(self, rng: random.Random, quantized: bool = True) -> "Arch":
        return self._fix(self.space.sample(rng, False))

    def mutate(self, arch: "Arch", rng: random.Random, prob: float = 0.1) -> "Arch":
        return self._fix(self.space.mutate(arch, rng, prob))

    def crossover(self, a: "Arch", b: "Arch", rng: random.Random) -> "Arch":
        return self._fix(self.space.crossover(a, b, rng))


@dataclass
class Arch:
    depths: list
    kernels: list
    expands: list
    wbits: list | None = field(default=None)
    abits: list | None = field(default=None)

    @property
    def quantized(self) -> bool:
        return self.wbits is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        return cls(**{k: d.get(k) for k in ("depths", "kernels", "expands", "wbits", "abits")})

    def key(self, space: SearchSpace) -> tuple:
        """Identity up to the unused slots of skipped blocks."""
        return tuple(space.encode(self))


def _one_hot(value, choices):
    return [1.0 if value == c else 0.0 for c in choices]
