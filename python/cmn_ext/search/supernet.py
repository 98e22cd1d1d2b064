"""The once-for-all supernet of APQ: an elastic MobileNetV2 over a ``SearchSpace`` whose sub-networks share
weights (OFA, Cai et al.), trained with progressive shrinking, then sampled, extracted as standalone models
and BN-recalibrated.

Sharing: a block holds the largest kernel and width; a smaller kernel is the centre of the largest one
(OFA's simpler variant, without its kernel transformation matrices), a narrower width the first hidden
channels (sorted by importance before the elastic-width phase), a smaller depth the first blocks of a stage.
Each block's batch norms are sliced with its hidden channels.

Distillation (APQ section 3.1, OFA's progressive shrinking): "we first train a full sub-network with the largest
kernel sizes, channel numbers and depths ... and use it as a teacher to progressively distill the smaller
sub-networks". After the 'largest' phase a frozen copy of the supernet (its largest sub-network) is the teacher;
in the kernel, depth and expand phases each step's loss is cross-entropy on the labels plus ``kd_weight`` x the
cross-entropy between the teacher's soft outputs and the sub-network's (OFA's code: kd_ratio 1.0, kd_type "ce",
softmax at temperature 1). The copy is frozen entirely: no gradient, and eval mode (its BN running statistics, no
dropout); OFA's code runs its teacher in train mode (batch statistics, dropout), which on the digits default gave
worse sub-networks than no distillation (docs/apq.md)."""

from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F
from torch import nn

from ..models.mobilenetv2 import InvertedResidual, conv_bn
from .space import Arch, SearchSpace, hidden_channels

PHASES = ("largest", "kernel", "depth", "expand")  # progressive shrinking, in order


def _bn(x, bn: nn.BatchNorm2d, c: int):
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training, bn.momentum if bn.momentum is not None else 0.0, bn.eps)


class ElasticBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, max_expand: int, max_kernel: int):
        super().__init__()
        hidden = cin * max_expand
        self.cin, self.cout, self.stride, self.max_kernel = cin, cout, stride, max_kernel
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, max_kernel, stride, max_kernel // 2, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.use_res = stride == 1 and cin == cout
        self.kernel, self.expand_ratio = max_kernel, max_expand  # the active choice

    def kernel_weight(self, k: int) -> torch.Tensor:
        off = (self.max_kernel - k) // 2
        return self.dw.weight[:, :, off:off + k, off:off + k]

    def forward(self, x):
        h, k = hidden_channels(self.cin, self.expand_ratio), self.kernel
        y = F.relu6(_bn(F.conv2d(x, self.expand.weight[:h]), self.bn1, h))
        y = F.conv2d(y, self.kernel_weight(k)[:h], None, self.stride, k // 2, 1, h)
        y = F.relu6(_bn(y, self.bn2, h))
        y = _bn(F.conv2d(y, self.project.weight[:, :h]), self.bn3, self.cout)
        return x + y if self.use_res else y

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Order the hidden channels by importance (L1 norm of their project weights), so that the first h of
        them, which a smaller expand ratio keeps, are the most important (OFA's elastic width)."""
        order = self.project.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        self.expand.weight.copy_(self.expand.weight[order])
        self.dw.weight.copy_(self.dw.weight[order])
        self.project.weight.copy_(self.project.weight[:, order])
        for bn in (self.bn1, self.bn2):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])

    @torch.no_grad()
    def extract(self, k: int, e) -> "SubBlock":
        """A standalone block with the shared weights of kernel ``k`` and expand ratio ``e``."""
        h = hidden_channels(self.cin, e)
        out = SubBlock(self.cin, self.cout, self.stride, h, k)
        (c1, b1, _), (c2, b2, _), (c3, b3) = out.conv[0], out.conv[1], out.conv[2]
        c1.weight.copy_(self.expand.weight[:h])
        c2.weight.copy_(self.kernel_weight(k)[:h])
        c3.weight.copy_(self.project.weight[:, :h])
        for dst, src, c in ((b1, self.bn1, h), (b2, self.bn2, h), (b3, self.bn3, self.cout)):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, name).copy_(getattr(src, name)[:c])
        return out


class SubBlock(nn.Module):
    """An extracted block: MobileNetV2's inverted residual (the layout of ``models.mobilenetv2.InvertedResidual``:
    ``conv`` = 1x1 expand, kxk depthwise, 1x1 project, each conv + BN (+ ReLU6)) with its hidden channels given
    directly, since a fine-grained width need not be a whole multiple of the input channels."""

    def __init__(self, cin: int, cout: int, stride: int, hidden: int, kernel: int):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hidden, 1, 1), conv_bn(hidden, hidden, kernel, stride, groups=hidden),
                                  conv_bn(hidden, cout, 1, 1, act=False))

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res else out


class SubNet(nn.Module):
    """A sub-network extracted from the supernet: plain convs, ready for quantize_model and convert."""

    def __init__(self, stem, first, blocks, head, classifier, dropout: float):
        super().__init__()
        self.stem, self.first, self.blocks, self.head = stem, first, nn.Sequential(*blocks), head
        self.pool, self.dropout, self.classifier = nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout), classifier

    def forward(self, x):
        x = self.head(self.blocks(self.first(self.stem(x))))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


class ElasticMobileNetV2(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int = 3, stem_stride: int = 1,
                 last_channels: int = 1280, dropout: float = 0.1):
        super().__init__()
        self.space, self.dropout_p = space, dropout
        self.stem = conv_bn(in_channels, space.stem_channels, 3, stem_stride)
        self.first = InvertedResidual(space.stem_channels, space.first_block_channels, 1, 1)
        self.blocks = nn.ModuleList(ElasticBlock(cin, cout, stride, max(space.expands), max(space.kernels))
                                    for _, _, cin, cout, stride in space.block_slots())
        self.head = conv_bn(space.stages[-1][0], last_channels, 1, 1)
        self.pool, self.dropout = nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout)
        self.classifier = nn.Linear(last_channels, num_classes)
        self.active = space.largest()
        self.set_active(self.active)

    def set_active(self, arch: Arch) -> None:
        self.space.check(arch)
        self.active = arch
        for i, block in enumerate(self.blocks):
            block.kernel, block.expand_ratio = arch.kernels[i], arch.expands[i]

    def _active_blocks(self, arch: Arch):
        return [(i, b) for i, (b, (s, j, *_)) in enumerate(zip(self.blocks, self.space.block_slots()))
                if j < arch.depths[s]]

    def forward(self, x):
        x = self.first(self.stem(x))
        for _, block in self._active_blocks(self.active):
            x = block(x)
        x = self.head(x)
        return self.classifier(self.dropout(self.pool(x).flatten(1)))

    def sort_channels(self) -> None:
        for block in self.blocks:
            block.sort_channels()

    @torch.no_grad()
    def extract(self, arch: Arch) -> SubNet:
        """The sub-network ``arch`` as a standalone model (copies of the shared weights; full precision: the
        quantization policy is applied by ``pairs.quantize_subnet``)."""
        self.space.check(arch)
        blocks = [b.extract(arch.kernels[i], arch.expands[i]) for i, b in self._active_blocks(arch)]
        net = SubNet(copy.deepcopy(self.stem), copy.deepcopy(self.first), blocks, copy.deepcopy(self.head),
                     copy.deepcopy(self.classifier), self.dropout_p)
        return net.to(next(self.parameters()).device)


def phase_sampler(space: SearchSpace, phase: str, rng: random.Random):
    """Sub-networks trained in a phase of progressive shrinking: the largest only, then elastic kernel, then
    kernel and depth, then kernel, depth and expand ratio."""
    if phase not in PHASES:
        raise ValueError(f"progressive shrinking: phase expected one of {PHASES}, got {phase!r}")
    level = PHASES.index(phase)

    def sample() -> Arch:
        arch, rand = space.largest(), space.sample(rng, quantized=False)
        if level >= 1:
            arch.kernels = rand.kernels
        if level >= 2:
            arch.depths = rand.depths
        if level >= 3:
            arch.expands = rand.expands
        return arch
    return sample


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """Cross-entropy of the student's softmax against the teacher's soft labels at ``temperature`` (x T^2, so
    that the gradient scale does not depend on T; T = 1 is OFA's ``cross_entropy_loss_with_soft_target``)."""
    t = float(temperature)
    soft = F.softmax(teacher_logits.detach() / t, dim=1)
    return (t * t) * torch.sum(-soft * F.log_softmax(student_logits / t, dim=1), dim=1).mean()


def make_teacher(net: "ElasticMobileNetV2") -> "ElasticMobileNetV2":
    """A frozen copy of ``net``'s largest sub-network: no parameter takes a gradient or an optimizer step, and it
    runs in eval mode (BN running statistics, no dropout)."""
    teacher = copy.deepcopy(net)
    teacher.set_active(teacher.space.largest())
    return teacher.requires_grad_(False).eval()


def shrink_step_loss(net, x, y, teacher=None, kd_weight: float = 1.0, temperature: float = 1.0):
    """The loss of one progressive-shrinking step on the active sub-network of ``net``: cross-entropy on the
    labels, plus ``kd_weight`` x ``distill_loss`` against ``teacher`` (computed without grad) when a teacher is
    given and the weight is positive. Returns (loss, kd term or None)."""
    out = net(x)
    loss = F.cross_entropy(out, y)
    if teacher is None or kd_weight <= 0:
        return loss, None
    teacher.eval()  # frozen, BN statistics included (OFA's code uses train mode; see the module docstring)
    with torch.no_grad():
        soft = teacher(x)
    kd = distill_loss(out, soft, temperature)
    return loss + kd_weight * kd, kd


def train_supernet(net: ElasticMobileNetV2, loader, *, epochs: dict, lr: float = 0.05, weight_decay: float = 4e-5,
                   kd_weight: float = 1.0, kd_temperature: float = 1.0, device="cpu", seed: int = 0,
                   progress: bool = True, log=None) -> list[dict]:
    """Progressive shrinking: for each phase in PHASES with ``epochs[phase] > 0``, SGD (momentum 0.9, cosine
    over the phase) where every step trains one sub-network sampled for that phase. The channels are sorted
    by importance before the elastic-width phase. From the kernel phase on, the largest network as the
    'largest' phase left it (a frozen copy) is the teacher: ``shrink_step_loss`` with ``kd_weight`` (0: no
    distillation) and ``kd_temperature``. Returns one record per phase (mean loss of its last epoch, and of
    its distillation term)."""
    from tqdm import tqdm

    unknown = set(epochs) - set(PHASES)
    if unknown:
        raise ValueError(f"train_supernet: 'epochs' keys expected from {PHASES}, got {sorted(unknown)}")
    rng = random.Random(seed)
    net.to(device)
    records = []
    teacher = None
    for phase in PHASES:
        n_ep = int(epochs.get(phase, 0))
        if n_ep <= 0:
            continue
        if phase != "largest" and teacher is None and kd_weight > 0:
            teacher = make_teacher(net)
            if log:
                log(f"supernet: distilling from the largest network (kd weight {kd_weight}, T {kd_temperature})")
        if phase == "expand":
            net.sort_channels()  # the student's only: the teacher runs its full width, which sorting leaves as is
        sample = phase_sampler(net.space, phase, rng)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, n_ep * len(loader)))
        for ep in range(n_ep):
            net.train()
            total, kd_total, count = 0.0, 0.0, 0
            bar = tqdm(loader, desc=f"supernet {phase} {ep + 1}/{n_ep}", disable=not progress, leave=False)
            for x, y in bar:
                x, y = x.to(device), y.to(device)
                net.set_active(sample())
                loss, kd = shrink_step_loss(net, x, y, teacher if phase != "largest" else None, kd_weight,
                                            kd_temperature)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total, count = total + loss.item() * len(y), count + len(y)
                kd_total += 0.0 if kd is None else kd.item() * len(y)
                bar.set_postfix(loss=f"{total / count:.3f}")
            if log:
                log(f"supernet phase {phase} epoch {ep + 1}/{n_ep}: loss {total / max(count, 1):.4f}"
                    + (f" (kd {kd_total / max(count, 1):.4f})" if teacher is not None and phase != "largest" else ""))
        records.append({"phase": phase, "epochs": n_ep, "loss": total / max(count, 1),
                        "kd": kd_total / max(count, 1) if teacher is not None and phase != "largest" else None})
    net.set_active(net.space.largest())
    return records
