"""Small teachers sized for CPU work: the paper's Conv4 and a VGG-13-style net for 28x28 or 32x32."""

from __future__ import annotations

from torch import nn

from .zoo import register_model

__all__ = ["Conv4", "VGGSmall", "vgg_cfg"]

# Conv widths per VGG variant ("M" is a 2x2 max-pool); the paper's MNIST teacher is VGG-13.
vgg_cfg = {
    "vgg13_small": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg_tiny": [16, 16, "M", 32, 32, "M", 64, 64],
}


class Conv4(nn.Module):
    """Four conv layers (with BN and ReLU), two max-pools and a two-layer classifier.

    The paper's small MNIST teacher. ``width`` scales every conv.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * w * 4, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


class VGGSmall(nn.Module):
    """VGG-style net for small images: conv-BN-ReLU stacks, max-pools, a global pool and an MLP head."""

    def __init__(self, cfg: list, num_classes: int = 10, in_channels: int = 1, hidden: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


@register_model("conv4")
def conv4(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The paper's small MNIST teacher: four conv-BN-ReLU layers, two max-pools, a two-layer classifier."""
    return Conv4(num_classes, in_channels)


@register_model("vgg13_small")
def vgg13_small(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """VGG-13 for 28x28 / 32x32 images (the paper's MNIST teacher): ten conv-BN-ReLU layers, a 512-wide head."""
    return VGGSmall(vgg_cfg["vgg13_small"], num_classes, in_channels, hidden=512)


@register_model("vgg_tiny")
def vgg_tiny(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Six conv-BN-ReLU layers, two max-pools, a 64-wide head: the default teacher of few-minute CPU runs."""
    return VGGSmall(vgg_cfg["vgg_tiny"], num_classes, in_channels, hidden=64)
