"""A procedurally drawn image-classification data set: no files, deterministic from a seed.

Each class is a shape (disk, square, triangle, plus, ...) filled with a texture (solid,
stripes, checks). Every image draws its shape at a random position, scale, rotation and
contrast on a shaded background, adds a distractor stroke with probability one half and
Gaussian pixel noise, then is anti-aliased by 2x supersampling. Colour (three channels)
is random per image and carries no class information. A small CNN learns it to well
above chance in one epoch, but not to 100% at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = ["SyntheticConfig", "make_synthetic", "MAX_SYNTHETIC_CLASSES"]

_N_SHAPES = 12
_N_TEXTURES = 3
MAX_SYNTHETIC_CLASSES = _N_SHAPES * _N_TEXTURES  # shape x texture combinations


@dataclass(frozen=True)
class SyntheticConfig:
    """How the synthetic data set is drawn."""

    num_classes: int = 10  # classes: shape (class % 12) x texture (class // 12)
    image_size: int = 28  # height == width in pixels
    channels: int = 1  # 1 (grey) or 3 (random colour per image)
    noise: float = 0.15  # std of the additive Gaussian pixel noise (image range [0, 1])
    max_rotation: float = 0.4  # shapes rotate uniformly in [-max_rotation, max_rotation] radians
    clutter: float = 0.5  # probability of a random distractor stroke per image

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= MAX_SYNTHETIC_CLASSES:
            raise ConfigError(
                f"synthetic num_classes={self.num_classes} is out of range; use 2..{MAX_SYNTHETIC_CLASSES}"
            )
        if self.image_size < 8:
            raise ConfigError(f"synthetic image_size={self.image_size} is too small; use 8 or more")
        if self.channels not in (1, 3):
            raise ConfigError(f"synthetic channels={self.channels} is not supported; use 1 or 3")
        if self.noise < 0 or not 0 <= self.clutter <= 1:
            raise ConfigError("synthetic noise must be >= 0 and clutter in [0, 1]")


def _shape_mask(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean mask of shape number ``shape`` in local coordinates ``u, v`` (unit ~ half image)."""
    au, av = u.abs(), v.abs()
    r = torch.sqrt(u * u + v * v)
    box = torch.maximum(au, av)
    if shape == 0:  # disk
        return r < 0.55
    if shape == 1:  # square
        return box < 0.45
    if shape == 2:  # triangle, apex up
        return (v < 0.45) & (au < (v + 0.55) * 0.6)
    if shape == 3:  # plus
        return ((au < 0.14) & (av < 0.6)) | ((av < 0.14) & (au < 0.6))
    if shape == 4:  # ring
        return (r > 0.32) & (r < 0.58)
    if shape == 5:  # horizontal bar
        return (av < 0.17) & (au < 0.65)
    if shape == 6:  # vertical bar
        return (au < 0.17) & (av < 0.65)
    if shape == 7:  # X
        return (((u - v).abs() < 0.2) | ((u + v).abs() < 0.2)) & (box < 0.55)
    if shape == 8:  # two dots side by side
        return ((u - 0.35) ** 2 + v * v < 0.04) | ((u + 0.35) ** 2 + v * v < 0.04)
    if shape == 9:  # L corner
        return ((u > -0.5) & (u < -0.2) & (av < 0.5)) | ((v > 0.2) & (v < 0.5) & (au < 0.5))
    if shape == 10:  # diamond
        return au + av < 0.6
    # hollow square
    return (box < 0.55) & (box > 0.35)


def _texture(texture: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fill pattern in [0, 1]: solid, stripes along u, or checks."""
    if texture == 0:
        return torch.ones_like(u)
    if texture == 1:
        return (torch.sin(14.0 * u) > 0).to(u.dtype)
    return ((torch.sin(11.0 * u) > 0) ^ (torch.sin(11.0 * v) > 0)).to(u.dtype)


def _draw_chunk(labels: torch.Tensor, cfg: SyntheticConfig, g: torch.Generator) -> torch.Tensor:
    """Draw images for ``labels`` (n,) sorted by class -> (n, C, H, W) float in [0, 1]."""
    n, size = labels.shape[0], cfg.image_size

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    def grid(res: int) -> tuple[torch.Tensor, torch.Tensor]:
        axis = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
        y, x = torch.meshgrid(axis, axis, indexing="ij")  # (res, res) each
        return x, y

    # the shape, on a 2x supersampled grid so that its edges come out anti-aliased
    x, y = grid(2 * size)
    tx, ty = uniform(-0.25, 0.25, 1, 1), uniform(-0.25, 0.25, 1, 1)  # (n, 1, 1)
    theta = uniform(-cfg.max_rotation, cfg.max_rotation, 1, 1)
    scale = uniform(0.65, 1.1, 1, 1)
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    dx, dy = x - tx, y - ty  # (n, 2H, 2W)
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    fg = torch.empty(n, 2 * size, 2 * size)
    classes, counts = labels.unique_consecutive(return_counts=True)
    start = 0
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
        sl = slice(start, start + count)  # labels are sorted: one contiguous block per class
        shape, texture = cls % _N_SHAPES, cls // _N_SHAPES
        mask = _shape_mask(shape, u[sl], v[sl]).float()
        fg[sl] = mask if texture == 0 else mask * _texture(texture, u[sl], v[sl])
        start += count
    fg = torch.nn.functional.avg_pool2d(fg.unsqueeze(1), 2).squeeze(1)  # (n, H, W)

    # distractor stroke: a thin segment between two random points, present with prob `clutter`
    x, y = grid(size)
    p0, p1 = uniform(-1, 1, 2, 1, 1), uniform(-1, 1, 2, 1, 1)  # (n, 2, 1, 1)
    seg = p1 - p0
    t = ((x - p0[:, 0]) * seg[:, 0] + (y - p0[:, 1]) * seg[:, 1]) / (seg.pow(2).sum(1) + 1e-6)
    t = t.clamp(0, 1)
    dist = torch.sqrt((x - p0[:, 0] - t * seg[:, 0]) ** 2 + (y - p0[:, 1] - t * seg[:, 1]) ** 2)
    stroke = (1.0 - (dist * size / 1.5 - 0.5).clamp(0, 1)) * (
        torch.rand(n, 1, 1, generator=g) < cfg.clutter
    ).float()  # (n, H, W), about 1.5 pixels wide

    # shaded background, foreground contrast and stroke intensity
    angle = uniform(0, 2 * math.pi, 1, 1)
    shade = (x * torch.cos(angle) + y * torch.sin(angle)) * 0.5 + 0.5  # (n, H, W) in [0, 1]
    bg = uniform(0.0, 0.25, 1, 1) + uniform(0.0, 0.15, 1, 1) * shade
    fg_level = uniform(0.6, 1.0, 1, 1)
    stroke_level = uniform(0.3, 0.8, 1, 1)
    grey = bg * (1 - fg) + fg_level * fg
    grey = grey * (1 - stroke) + stroke_level * stroke  # (n, H, W)

    if cfg.channels == 3:
        colour = uniform(0.4, 1.0, 3, 1, 1)  # (n, 3, 1, 1)
        img = grey.unsqueeze(1) * colour / colour.amax(1, keepdim=True)
    else:
        img = grey.unsqueeze(1)  # (n, 1, H, W)
    img = img + cfg.noise * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


def make_synthetic(
    num_samples: int, config: SyntheticConfig | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_samples`` images and labels, the same for the same config and seed.

    Classes are balanced (counts differ by at most one). Returns images ``(N, C, H, W)``
    uint8 and labels ``(N,)`` int64.

    Example:
        >>> images, labels = make_synthetic(100, SyntheticConfig(image_size=16), seed=1)
        >>> images.shape, images.dtype, labels.bincount().tolist()
        (torch.Size([100, 1, 16, 16]), torch.uint8, [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    cfg = config or SyntheticConfig()
    if num_samples <= 0:
        raise ConfigError(f"synthetic num_samples={num_samples} must be positive")
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.arange(num_samples) % cfg.num_classes
    labels = labels[torch.randperm(num_samples, generator=g)]  # (N,)
    chunk = max(1, 400_000 // (cfg.image_size * cfg.image_size))  # bounds temporary memory
    out = torch.empty(num_samples, cfg.channels, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    for i in range(0, num_samples, chunk):
        block = labels[i : i + chunk]
        order = block.argsort(stable=True)  # draw class by class, then put back in place
        drawn = _draw_chunk(block[order], cfg, g)  # (n, C, H, W)
        out[i + order] = (drawn * 255).round().to(torch.uint8)
    return out, labels.long()
