"""Evaluate a classifier: top-1 accuracy and logits over a data set, in eval mode without gradients.

Given a ``device``, the model runs there: a model that lives elsewhere (the search's CPU
teacher, a user's model) is moved there for the evaluation and back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.loaders import make_loader
from ..errors import DataError

__all__ = ["EVAL_BATCH", "accuracy", "predict_logits", "model_device", "placed"]

# samples per evaluation batch. On the CPU (one thread, eval mode) the small 28-px networks read fastest in
# small batches, which stay in cache; wider ones prefer large batches. ms per image at 64 / 256:
# conv4 0.56 / 0.81, vgg13_small 2.83 / 3.46, vgg_tiny (32 px) 0.35 / 0.33, resnet18 (32 px) 0.86 / 0.71,
# mobilenet_v2 (32 px) 0.67 / 0.52 (benchmarks/eval_batch.py). Reading accuracy is the whole cost of a
# shared-weight reward, and the reward-fidelity benchmark's networks are the small ones
EVAL_BATCH = 64


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def placed(model: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """Run the block with ``model`` on ``device``; it goes back to where it was afterwards.

    A model already there is not moved (and nothing is copied).

    Example:
        >>> m = nn.Linear(2, 2)
        >>> with placed(m, "cpu") as on_device:
        ...     on_device is m
        True
    """
    home = model_device(model)
    device = torch.device(device)
    if device.type == home.type and (device.index is None or device.index == home.index):
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


def _batches(data: Dataset | DataLoader, batch_size: int, device: torch.device) -> Iterator:
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size, device=device)
    return iter(loader)


def _forward_all(model: nn.Module, data: Dataset | DataLoader, batch_size: int, device, fn) -> None:
    """Run ``model`` in eval mode over ``data``; call ``fn(logits, labels)`` per batch; restore mode."""
    if not isinstance(data, DataLoader) and len(data) == 0:  # type: ignore[arg-type]
        raise DataError("cannot evaluate on an empty data set; give a non-empty validation/test split")
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), placed(model, device):
            for batch in _batches(data, batch_size, device):
                x, y = batch[0], batch[1]
                logits = model(x.to(device, non_blocking=True))  # (batch, n_classes)
                fn(logits, y.to(device, non_blocking=True))
    finally:
        model.train(was_training)


def accuracy(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``data`` (a data set or a loader of (x, y, ...)).

    The model runs in eval mode on ``device`` (default: where it is); its previous train/eval
    mode and its device are restored afterwards.

    Example:
        >>> from n2n_fx.data import get_dataset
        >>> ds = get_dataset("synthetic", num_samples=20, image_size=8)
        >>> 0.0 <= accuracy(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), ds) <= 1.0
        True
    """
    correct = torch.zeros((), dtype=torch.long)
    total = 0

    def count(logits: torch.Tensor, y: torch.Tensor) -> None:
        nonlocal correct, total
        correct = correct + (logits.argmax(dim=1) == y).sum().cpu()
        total += y.numel()

    _forward_all(model, data, batch_size, device, count)
    if total == 0:
        raise DataError("cannot evaluate on an empty data set; give a non-empty validation/test split")
    return float(correct) / total


def accuracy_and_loss(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``data`` in one pass (as ``accuracy``).

    The loss tells apart weights of equal accuracy: on a few hundred validation samples one
    sample is a step of about half a point, and epochs of a cosine schedule often tie.

    Example:
        >>> from n2n_fx.data import get_dataset
        >>> ds = get_dataset("synthetic", num_samples=20, image_size=8)
        >>> acc, loss = accuracy_and_loss(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), ds)
        >>> 0.0 <= acc <= 1.0 and loss > 0
        True
    """
    correct = torch.zeros((), dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64)
    total = 0

    def count(logits: torch.Tensor, y: torch.Tensor) -> None:
        nonlocal correct, loss_sum, total
        correct = correct + (logits.argmax(dim=1) == y).sum().cpu()
        loss_sum = loss_sum + F.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
        total += y.numel()

    _forward_all(model, data, batch_size, device, count)
    if total == 0:
        raise DataError("cannot evaluate on an empty data set; give a non-empty validation/test split")
    return float(correct) / total, float(loss_sum) / total


def predict_logits(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Logits ``(N, n_classes)`` float32 on CPU of ``model`` over ``data``, in data-set order.

    ``on_batch(n)`` is called after each batch of ``n`` samples (e.g. a progress bar's ``update``)."""
    parts: list[torch.Tensor] = []

    def keep(logits: torch.Tensor, _) -> None:
        parts.append(logits.float().cpu())  # (batch, n_classes)
        if on_batch is not None:
            on_batch(int(logits.shape[0]))

    _forward_all(model, data, batch_size, device, keep)
    return torch.cat(parts)
