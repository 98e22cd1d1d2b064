"""MobileNetV2 (Sandler et al. 2018) with a width multiplier; ``stem="cifar"`` uses stride 1 in the stem and
the first stride-2 stage for 32x32 inputs. Inverted residual blocks: 1x1 expand, 3x3 depthwise, 1x1 project."""

from torch import nn

# (expansion t, channels c, repeats n, first stride s) of the paper's Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(v, d=8):
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


def conv_bn(cin, cout, k, stride, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, kernel=3):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, stem="imagenet", in_channels=3, settings=SETTINGS):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"MobileNetV2: 'stem' expected \"imagenet\" or \"cifar\", got {stem!r}")
        cin = _divisible(32 * width_mult)
        last = _divisible(1280 * max(1.0, width_mult))
        layers = [conv_bn(in_channels, cin, 3, 2 if stem == "imagenet" else 1)]
        for i, (t, c, n, s) in enumerate(settings):
            cout = _divisible(c * width_mult)
            if stem == "cifar" and i == 1:
                s = 1
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
                cin = cout
        layers.append(conv_bn(cin, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))
