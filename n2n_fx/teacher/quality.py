"""Is a teacher good enough to measure compression against? One-line warnings when it is not.

A student's accuracy drop is measured against the teacher, so a weak teacher makes any
student look good. Two signs are checked: the teacher is no better than always answering
the most common class, or its validation accuracy was still rising when training stopped.

Example:
    >>> teacher_warning({"val_accuracy": 0.11, "majority_accuracy": 0.12})
    'teacher is weak: validation accuracy 0.110 is no better than always answering the most common class (0.120); ...'
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["majority_accuracy", "still_improving", "teacher_warning"]

_TRAIN_HINT = "train it longer (--teacher-epochs, or n2n-fx train-teacher) before compressing"


def majority_accuracy(data: Dataset) -> float:
    """Accuracy of always answering the most common class of ``data`` (nan when empty)."""
    targets = getattr(data, "targets", None)
    if targets is None:
        targets = [int(data[i][1]) for i in range(len(data))]  # type: ignore[arg-type]
    t = torch.as_tensor(targets)
    if t.numel() == 0:
        return float("nan")
    return float(torch.bincount(t).max()) / t.numel()


def still_improving(metrics: dict[str, Any]) -> bool:
    """True when training ran to its epoch cap and the best validation accuracy came in the last epochs.

    With early stopping that is: stopped by the cap, best epoch within ``patience`` of the end;
    without it: the last epoch was the best and better than the one before."""
    hist = list(metrics.get("val_history") or [])
    if len(hist) < 2 or metrics.get("stopped") == "plateau":
        return False
    patience = int((metrics.get("recipe") or {}).get("patience") or 0)
    if patience:
        return metrics.get("stopped") == "cap" and int(metrics.get("best_epoch", 0)) > len(hist) - patience
    return hist[-1] >= max(hist) and hist[-1] > hist[-2]


def teacher_warning(metrics: dict[str, Any], val_accuracy: float | None = None) -> str | None:
    """One line saying why the teacher is weak, or None when nothing is wrong with it.

    ``val_accuracy`` overrides the one in ``metrics`` (e.g. measured again by the search)."""
    acc = float(val_accuracy if val_accuracy is not None else metrics.get("val_accuracy", float("nan")))
    base = float(metrics.get("majority_accuracy", float("nan")))
    if acc == acc and base == base and acc <= base + 1e-9:
        return (
            f"teacher is weak: validation accuracy {acc:.3f} is no better than always answering the most "
            f"common class ({base:.3f}); {_TRAIN_HINT}"
        )
    if still_improving(metrics):
        return (
            f"teacher may be undertrained: validation accuracy ({acc:.3f}) was still rising at the cap of "
            f"{metrics.get('max_epochs', metrics.get('epochs'))} epochs; {_TRAIN_HINT}"
        )
    return None
