"""Per-sample image transforms on tensors, and the paper's augmentation presets (appendix 10.2).

Every transform maps a ``(C, H, W)`` float tensor to another; ``ToFloat`` first turns a PIL
image or a uint8 tensor into one. Random transforms draw from torch's global generator,
so ``torch.manual_seed`` makes an epoch's augmentation reproducible (with ``num_workers=0``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "Transform",
    "Compose",
    "ToFloat",
    "Normalize",
    "RandomCrop",
    "RandomHFlip",
    "Resize",
    "CenterCrop",
    "AUGMENTATIONS",
    "build_transform",
]

Transform = Callable[..., torch.Tensor]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ToFloat:
    """PIL image, uint8 tensor ``(C, H, W)`` or float tensor -> float32 ``(C, H, W)`` in [0, 1]."""

    def __init__(self, channels: int | None = None) -> None:
        self.channels = channels  # convert grey <-> RGB to this many channels (None: keep)

    def __call__(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):  # a PIL image
            from torchvision.transforms.functional import pil_to_tensor

            if self.channels == 3 and getattr(x, "mode", "RGB") != "RGB":
                x = x.convert("RGB")
            elif self.channels == 1 and getattr(x, "mode", "L") != "L":
                x = x.convert("L")
            x = pil_to_tensor(x)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.channels == 3 and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif self.channels == 1 and x.shape[0] == 3:
            x = x.mean(0, keepdim=True)
        return x

    def __repr__(self) -> str:
        return f"ToFloat(channels={self.channels})"


class Normalize:
    """``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class RandomCrop:
    """Zero-pad by ``padding`` pixels, then crop a random ``size`` x ``size`` window."""

    def __init__(self, size: int, padding: int = 0) -> None:
        self.size, self.padding = size, padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        h, w = x.shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, ()))
        left = int(torch.randint(0, w - self.size + 1, ()))
        return x[..., top : top + self.size, left : left + self.size]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, padding={self.padding})"


class RandomHFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if float(torch.rand(())) < self.p else x

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class Resize:
    """Resize the shorter side to ``size`` (bilinear, antialiased)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) == self.size:
            return x
        scale = self.size / min(h, w)
        new = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        out = F.interpolate(x.unsqueeze(0), size=new, mode="bilinear", antialias=True)
        return out.squeeze(0)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop:
    """Crop the central ``size`` x ``size`` window."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


# augmentation preset -> what it does on training images (evaluation never augments)
AUGMENTATIONS = {
    "none": "no augmentation (paper: MNIST, SVHN)",
    "crop": "random crop with 4-pixel zero padding, no flip (digits, text: anything a mirror changes)",
    "crop_flip": "random crop with 4-pixel zero padding + horizontal flip p=0.5 (paper: CIFAR)",
    "resize_crop_flip": "resize to 1.14x, random crop + horizontal flip (paper: Caltech-256)",
}


def build_transform(
    *,
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: str = "none",
    resize: bool = False,
) -> Compose:
    """The transform for one split: to float, optional resize/augment, normalise.

    ``resize`` makes variable-size images (Caltech, image folders) ``image_size`` square:
    training crops randomly when ``augment`` is ``resize_crop_flip``, else centrally.

    Example:
        >>> t = build_transform(image_size=32, channels=3, mean=(0.5,) * 3, std=(1.0,) * 3,
        ...                     augment="crop_flip")
        >>> t(torch.zeros(3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([3, 32, 32])
    """
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {augment!r}; use one of {sorted(AUGMENTATIONS)}")
    steps: list[Transform] = [ToFloat(channels)]
    if resize:
        if augment == "resize_crop_flip":
            steps += [Resize(round(image_size * 8 / 7)), RandomCrop(image_size)]
        else:
            steps += [Resize(image_size), CenterCrop(image_size)]
    if augment in ("crop", "crop_flip"):
        steps.append(RandomCrop(image_size, padding=4))
    if augment == "crop_flip":
        steps.append(RandomHFlip(0.5))
    elif augment == "resize_crop_flip":
        if not resize:
            steps.append(RandomCrop(image_size, padding=4))
        steps.append(RandomHFlip(0.5))
    steps.append(Normalize(mean, std))
    return Compose(steps)
