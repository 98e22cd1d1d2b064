"""AlexNet for 32x32 inputs as CMN uses it (after Zhou et al.'s EL-Net): batch norm after every layer and the
first pooling layer removed. Five convs (64-192-384-256-256, kernels 5-5-3-3-3), two hidden FC layers.

The FC width (``hidden``, default 1024) is scaled down from ImageNet AlexNet's 4096 to fit 4x4x256 features.
"""

from torch import nn


class CifarAlexNet(nn.Module):
    def __init__(self, num_classes: int = 100, in_channels: int = 3, hidden: int = 1024):
        super().__init__()

        def conv(cin, cout, k):
            return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, 64, 5),          # 32x32 (first pooling removed)
            *conv(64, 192, 5), nn.MaxPool2d(2),  # 16x16
            *conv(192, 384, 3),
            *conv(384, 256, 3),
            *conv(256, 256, 3), nn.MaxPool2d(2),  # 8x8
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Linear(256 * 16, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
