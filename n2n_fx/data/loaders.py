"""DataLoaders with seeded shuffling; ``num_workers=0`` by default (small CPU machines).

Batches bound for a CUDA device come from pinned memory, so that ``x.to(device,
non_blocking=True)`` overlaps the copy with compute (``device=``)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError

__all__ = ["make_loader", "pins_for"]


def pins_for(device: str | torch.device | None) -> bool:
    """Whether batches bound for ``device`` should come from pinned memory (CUDA only)."""
    return device is not None and torch.device(device).type == "cuda"


def make_loader(
    dataset: Dataset,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    device: str | torch.device | None = None,
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (and the epoch count).

    Two loaders built with the same seed yield the same batches in the same order; iterating
    one never draws from torch's global random stream.
    ``device``: where the batches go; CUDA turns ``pin_memory`` on.

    Example:
        >>> from n2n_fx.data import get_dataset
        >>> loader = make_loader(get_dataset("synthetic", num_samples=100), 32, shuffle=True)
        >>> next(iter(loader))[0].shape
        torch.Size([32, 1, 28, 28])
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size} must be positive")
    if num_workers < 0:
        raise ConfigError(f"num_workers={num_workers} must be >= 0")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        # a private generator also when not shuffling: iterating a loader draws its base seed from it, so
        # reading accuracy mid-training leaves the global stream (dropout masks) where it was
        generator=torch.Generator().manual_seed(int(seed)),
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory or pins_for(device),
        persistent_workers=num_workers > 0,
    )
