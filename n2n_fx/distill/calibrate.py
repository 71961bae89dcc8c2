"""Batch-norm recalibration: running statistics re-estimated for a model's own activations.

A student whose weights were not trained for its architecture alone (a supernet's shared
weights) sees other activation statistics than the network its batch norms were fitted
on. Re-estimating the running mean and variance on a few training batches, with no
gradient step, fixes that (as slimmable networks and once-for-all networks do).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.loaders import make_loader
from ..errors import ConfigError
from .evaluate import model_device

__all__ = ["recalibrate_bn"]


def recalibrate_bn(model: nn.Module, data: Dataset, *, batches: int = 8, batch_size: int = 64, seed: int = 0) -> int:
    """Reset every batch norm's running statistics and re-estimate them on ``batches`` batches of ``data``.

    Only the batch norms run in train mode (cumulative averages); dropout and the rest stay in
    eval mode, and no weight changes. Returns the number of batch norms recalibrated (0: the
    model is left untouched). The model ends in eval mode.

    Example:
        >>> from n2n_fx.data import get_dataset
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        >>> recalibrate_bn(m, get_dataset("synthetic", num_samples=20, image_size=8), batches=1)
        1
    """
    if batches < 1:
        raise ConfigError(f"batches={batches} must be at least 1")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    model.eval()
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
        m.train()
    device = model_device(model)
    try:
        with torch.no_grad():
            for k, batch in enumerate(make_loader(data, batch_size, shuffle=True, seed=seed, device=device)):
                if k >= batches:
                    break
                model(batch[0].to(device, non_blocking=True))
    finally:
        for m, mom in zip(norms, saved, strict=True):
            m.momentum = mom
        model.eval()
    return len(norms)
