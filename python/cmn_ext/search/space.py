"""The APQ search space: an elastic MobileNetV2 (per stage depth, per block kernel size and expand ratio) with a
per-layer quantization policy (weight and activation bits of each block's expand, depthwise and project convs).

An ``Arch`` is plain data (lists of ints), JSON-serialisable, with one slot per *possible* block; blocks past
a stage's depth are skipped and their slots ignored. ``encode`` gives the predictor's input (APQ section 3.2):
per block a one-hot of the kernel size and of the expand ratio, and per layer one-hots of the weight and
activation bits, all zero for a skipped block; the quantization part is all zero for a full-precision
architecture (the FP predictor's input), so the quantization-aware predictor can start from the FP one.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

LAYERS_PER_BLOCK = 3  # 1x1 expand, kxk depthwise, 1x1 project


@dataclass(frozen=True)
class SearchSpace:
    """Elastic stages of MobileNetV2: (output channels, first stride) each, up to ``max(depths)`` blocks."""

    stages: tuple = ((24, 2), (32, 2), (64, 2), (96, 1), (160, 2))
    depths: tuple = (2, 3, 4)
    kernels: tuple = (3, 5, 7)
    expands: tuple = (3, 4, 6)
    bits: tuple = (4, 6, 8)
    stem_channels: int = 32
    first_block_channels: int = 16   # the fixed MobileNetV2 block before the elastic stages (expand 1)

    def __post_init__(self):
        for name in ("depths", "kernels", "expands", "bits"):
            values = getattr(self, name)
            if not values or any(int(v) != v or v <= 0 for v in values):
                raise ValueError(f"SearchSpace: '{name}' expected a non-empty tuple of positive ints, got {values!r}")
        if not self.stages:
            raise ValueError("SearchSpace: 'stages' expected at least one (channels, stride) pair, got none")

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
                    expands=[rng.choice(self.expands) for _ in range(b)],
                    wbits=[[rng.choice(self.bits) for _ in range(LAYERS_PER_BLOCK)] for _ in range(b)] if quantized else None,
                    abits=[[rng.choice(self.bits) for _ in range(LAYERS_PER_BLOCK)] for _ in range(b)] if quantized else None)

    def largest(self, bits: int | None = None) -> "Arch":
        """The largest sub-network, uniformly quantized to ``bits`` (None: full precision)."""
        b = self.num_blocks
        q = None if bits is None else [[bits] * LAYERS_PER_BLOCK for _ in range(b)]
        return Arch([self.max_depth] * len(self.stages), [max(self.kernels)] * b, [max(self.expands)] * b, q,
                    None if q is None else [list(r) for r in q])

    def mutate(self, arch: "Arch", rng: random.Random, prob: float = 0.1) -> "Arch":
        """Each gene is resampled with probability ``prob`` (APQ: 0.1)."""
        pick = lambda cur, choices: rng.choice(choices) if rng.random() < prob else cur  # noqa: E731
        new = Arch([pick(d, self.depths) for d in arch.depths], [pick(k, self.kernels) for k in arch.kernels],
                   [pick(e, self.expands) for e in arch.expands], None, None)
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
        per_block = len(self.kernels) + len(self.expands) + LAYERS_PER_BLOCK * 2 * len(self.bits)
        return self.num_blocks * per_block

    def encode(self, arch: "Arch") -> list[float]:
        self.check(arch)
        vec = []
        for i, (s, j, *_rest) in enumerate(self.block_slots()):
            active = j < arch.depths[s]
            vec += _one_hot(arch.kernels[i] if active else None, self.kernels)
            vec += _one_hot(arch.expands[i] if active else None, self.expands)
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
        kernels, expands = [min(self.kernels)] * b, [min(self.expands)] * b
        wbits = [[min(self.bits)] * LAYERS_PER_BLOCK for _ in range(b)]
        abits = [[min(self.bits)] * LAYERS_PER_BLOCK for _ in range(b)]
        depths = [0] * len(self.stages)
        quantized = False

        def take(choices):
            nonlocal pos
            part, pos = vec[pos:pos + len(choices)], pos + len(choices)
            return choices[part.index(1.0)] if 1.0 in part else None

        for i, (s, j, *_rest) in enumerate(self.block_slots()):
            k, e = take(self.kernels), take(self.expands)
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
        if len(arch.expands) != b or any(e not in self.expands for e in arch.expands):
            problems.append(f"expands (expected {b} values from {self.expands})")
        for name in ("wbits", "abits"):
            rows = getattr(arch, name)
            if rows is not None and (len(rows) != b or any(len(r) != LAYERS_PER_BLOCK or any(v not in self.bits for v in r)
                                                           for r in rows)):
                problems.append(f"{name} (expected {b} rows of {LAYERS_PER_BLOCK} values from {self.bits})")
        if (arch.wbits is None) != (arch.abits is None):
            problems.append("wbits and abits must both be given or both be None")
        if problems:
            raise ValueError("Arch does not fit the search space: " + "; ".join(problems))

    # ---- cost proxy ----------------------------------------------------------------------------------------
    def layer_costs(self, arch: "Arch", resolution: int = 32, stem_stride: int = 1):
        """Per active layer: (kind, cin, cout, kernel, stride, input size, MACs, w_bits, a_bits); bits are 32 for
        a full-precision architecture. The fixed stem, first block and head are not part of the search."""
        self.check(arch)
        size = resolution // stem_stride
        out = []
        for i, (s, j, cin, cout, stride) in enumerate(self.block_slots()):
            if j >= arch.depths[s]:
                continue
            hidden, k = cin * arch.expands[i], arch.kernels[i]
            so = (size + stride - 1) // stride
            wb = arch.wbits[i] if arch.quantized else [32] * LAYERS_PER_BLOCK
            ab = arch.abits[i] if arch.quantized else [32] * LAYERS_PER_BLOCK
            out.append(("expand", cin, hidden, 1, 1, size, size * size * cin * hidden, wb[0], ab[0]))
            out.append(("depthwise", hidden, hidden, k, stride, size, so * so * hidden * k * k, wb[1], ab[1]))
            out.append(("project", hidden, cout, 1, 1, so, so * so * hidden * cout, wb[2], ab[2]))
            size = so
        return out

    def bops(self, arch: "Arch", resolution: int = 32, stem_stride: int = 1) -> float:
        """Bit operations of the searched layers: sum of MACs x w_bits x a_bits (the cost proxy)."""
        return float(sum(c[6] * c[7] * c[8] for c in self.layer_costs(arch, resolution, stem_stride)))


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
