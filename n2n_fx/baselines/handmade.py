"""Hand-designed students trained with KD (paper §4.4.2): VGG-small and a FitNet-style thin net.

Both take a width multiplier that scales every conv and the hidden fully connected layer,
so they can be sized to a parameter budget (``width_for_params``), typically the N2N
student's. They accept 1- or 3-channel inputs of any size >= 16 (three 2x2 max-pools,
then a global average pool), use BN + ReLU and Xavier initialisation (as the paper's
FitNet-4), and are plain ``nn.Sequential`` stacks that ``n2n_fx.trace`` can trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ..data.splits import DataSplits
from ..distill import DistillConfig, DistillResult, accuracy, distill
from ..errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "HandmadeResult",
    "build_handmade",
    "count_model_params",
    "fitnet",
    "train_handmade",
    "vgg_small",
    "width_for_params",
]

MIN_INPUT = 16  # smallest input height / width the students are meant for

# VGG-small: 8 convs + 2 fully connected layers = 10 weight layers ("M": 2x2 max-pool)
VGG_SMALL_CFG = (32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256)
VGG_SMALL_HIDDEN = 256
# FitNet-4 (Romero et al. 2015, as in Mishkin & Matas 2015): 13 thin convs in three stages
FITNET_CFG = (32, 32, 32, 48, 48, "M", 80, 80, 80, 80, 80, "M", 128, 128, 128, 128, 128, "M")
FITNET_HIDDEN = 500


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _stack(cfg: Sequence, width: float, hidden: int, num_classes: int, in_channels: int):
    if not width > 0 or not math.isfinite(width):
        raise ConfigError(f"width={width} must be a positive number")
    if in_channels < 1 or num_classes < 2:
        raise ConfigError(f"in_channels={in_channels} and num_classes={num_classes} are invalid")
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        w = _scaled(int(v), width)
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    h = _scaled(hidden, width)
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, h),
        nn.ReLU(),
        nn.Linear(h, num_classes),
    ]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def vgg_small(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Sequential:
    """VGG-small: convs 32-32 M 64-64 M 128-128 M 256-256 (x width), global pool, FC 256, FC.

    Example:
        >>> import torch
        >>> vgg_small(10, 1, width=0.5)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return _stack(VGG_SMALL_CFG, width, VGG_SMALL_HIDDEN, num_classes, in_channels)


def fitnet(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Sequential:
    """FitNet-4-style thin-deep net: 13 convs (32..48, 80, 128 x width), FC 500, FC.

    Example:
        >>> import torch
        >>> fitnet(10, 3, width=0.25)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return _stack(FITNET_CFG, width, FITNET_HIDDEN, num_classes, in_channels)


# name -> builder(num_classes, in_channels, width)
ARCHITECTURES: dict[str, Callable[..., nn.Sequential]] = {"vgg_small": vgg_small, "fitnet": fitnet}


def count_model_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not, buffers excluded: as ``model_cost``)."""
    return sum(p.numel() for p in model.parameters())


_CFGS = {"vgg_small": (VGG_SMALL_CFG, VGG_SMALL_HIDDEN), "fitnet": (FITNET_CFG, FITNET_HIDDEN)}


def _builder(arch: str) -> Callable[..., nn.Sequential]:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown hand-made student {arch!r}; use one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def _params_at(arch: str, width: float, num_classes: int, in_channels: int) -> int:
    """Parameter count of ``arch`` at ``width``, computed from its layer widths (no model built)."""
    cfg, hidden = _CFGS[arch]
    total, c = 0, in_channels
    for v in cfg:
        if v != "M":
            w = _scaled(int(v), width)
            total += c * w * 9 + 2 * w  # 3x3 conv without bias, BN weight and bias
            c = w
    h = _scaled(hidden, width)
    return total + c * h + h + h * num_classes + num_classes


def width_for_params(arch: str, target: float, num_classes: int = 10, in_channels: int = 3) -> float:
    """The width multiplier whose student has the parameter count nearest to ``target``.

    Example:
        >>> w = width_for_params("vgg_small", 100_000, num_classes=10, in_channels=1)
        >>> abs(count_model_params(vgg_small(10, 1, w)) - 100_000) < 10_000
        True
    """
    lo, hi = 1e-3, 64.0
    p_lo = _params_at(arch, lo, num_classes, in_channels)
    p_hi = _params_at(arch, hi, num_classes, in_channels)
    if not p_lo <= target <= p_hi:
        raise ConfigError(f"{arch} cannot have {target:,.0f} parameters; it spans {p_lo:,} to {p_hi:,}")
    for _ in range(100):  # bisection in log space: smallest width with params >= target
        mid = math.sqrt(lo * hi)
        if _params_at(arch, mid, num_classes, in_channels) >= target:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-6:
            break
    best = min((lo, hi), key=lambda w: abs(_params_at(arch, w, num_classes, in_channels) - target))
    return float(best)


def build_handmade(
    arch: str,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float | None = None,
    target_params: float | None = None,
    input_size: Sequence[int] | None = None,
) -> nn.Sequential:
    """A hand-made student by name, at ``width`` or sized to ``target_params`` (not both).

    ``input_size`` (C, H, W), when given, is checked: C must be ``in_channels``, H, W >= 16.

    Example:
        >>> m = build_handmade("fitnet", 10, 1, target_params=50_000, input_size=(1, 28, 28))
    """
    _builder(arch)
    if width is not None and target_params is not None:
        raise ConfigError("give width or target_params, not both")
    if input_size is not None:
        c, h, w = (int(d) for d in input_size)
        if c != in_channels or min(h, w) < MIN_INPUT:
            raise ConfigError(f"input {tuple(input_size)} needs {in_channels} channels and sides >= {MIN_INPUT}")
    if target_params is not None:
        width = width_for_params(arch, target_params, num_classes, in_channels)
    return _builder(arch)(num_classes, in_channels, 1.0 if width is None else width)


@dataclass(frozen=True)
class HandmadeResult:
    """A hand-made student after KD training."""

    arch: str  # architecture name
    student: nn.Module  # the trained student (eval mode, CPU)
    params: int  # its parameters
    val_accuracy: float  # top-1 on the validation split
    test_accuracy: float  # top-1 on the test split (NaN without one)
    training: DistillResult  # what training reported (losses, divergence)


def train_handmade(
    arch: str,
    student: nn.Module,
    splits: DataSplits,
    teacher: nn.Module,
    config: DistillConfig | None = None,
) -> HandmadeResult:
    """Train ``student`` from scratch with CE + λ·KD against ``teacher`` (paper §4.4.2).

    Default config: ``DistillConfig(loss="ce+l2", lam=1.0, epochs=10)``. Students start from
    scratch, so they need more epochs than an N2N student fine-tuned from inherited weights
    (the paper trains them to convergence).

    Example:
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=200, image_size=16)
        >>> teacher = vgg_small(10, 1, width=0.25)  # a trained teacher in practice
        >>> res = train_handmade("vgg_small", build_handmade("vgg_small", 10, 1, width=0.125),
        ...                      splits, teacher, DistillConfig(loss="ce+l2", epochs=1))
        >>> res.params == count_model_params(res.student), 0.0 <= res.test_accuracy <= 1.0
        (True, True)
    """
    cfg = config or DistillConfig(loss="ce+l2", lam=1.0, epochs=10)
    res = distill(student, splits.train, cfg, teacher=teacher.eval(), val_data=splits.val)
    val = res.val_accuracy if res.val_accuracy is not None else math.nan
    test = accuracy(student, splits.test, device=cfg.device) if len(splits.test) and res.ok else math.nan
    student.cpu().eval()
    return HandmadeResult(arch, student, count_model_params(student), val, test, res)
