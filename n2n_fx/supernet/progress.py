"""A supernet training's progress in one file, so that a killed training goes on where it stopped.

``train_supernet(checkpoint=...)`` saves everything that decides its next steps: the shared
weights, the optimiser and its schedule, the random streams (students drawn, dropout), where the
data loader is in its epoch, the students drawn so far and the loss log. The file names the
training it belongs to (config, space, removal, a hash of the starting weights), so the progress
of one training never continues another.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..rundir import safe_torch_load
from ..storage import atomic_torch_save

__all__ = ["PROGRESS_FORMAT", "Progress", "as_tuples"]

PROGRESS_FORMAT = "n2n_fx.supernet-progress/1"


class Progress:
    """Saves and restores a supernet training's progress in one file (``train_supernet(checkpoint=...)``).

    The file says which training it belongs to (config, space, removal, a hash of the starting
    weights); everything that decides the next steps is in it, so a resumed training takes the
    same steps an uninterrupted one would."""

    def __init__(self, path: Path, every: float, cfg: Any, space: str, remove: Sequence[str], start: str) -> None:
        """``cfg``: the ``SupernetConfig``; ``start``: the digest of the weights the training starts from."""
        self.path, self.every = path, every
        self.owner = {"config": dataclasses.asdict(cfg), "space": space, "remove": sorted(remove), "start": start}
        self.saved_at = time.perf_counter()

    def load(self) -> dict[str, Any] | None:
        """The saved progress of this training, or None when there is none yet."""
        if not self.path.is_file():
            return None
        saved = safe_torch_load(self.path)  # a damaged file: CheckpointError naming it
        if not isinstance(saved, dict) or saved.get("format") != PROGRESS_FORMAT:
            raise CheckpointError(f"{self.path} is not a supernet training checkpoint of this version; delete it")
        if saved["owner"] != self.owner:
            differs = ", ".join(k for k in self.owner if saved["owner"].get(k) != self.owner[k])
            raise CheckpointError(
                f"{self.path} holds the progress of another supernet training ({differs} differ); "
                "delete it or give another checkpoint path"
            )
        return saved

    def due(self, step: int, steps: int) -> bool:
        return step >= steps or time.perf_counter() - self.saved_at >= self.every

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (its tensors may live on the training's device: they are saved from the CPU)."""
        atomic_torch_save(_on_cpu({"format": PROGRESS_FORMAT, "owner": self.owner, **state}), self.path)
        self.saved_at = time.perf_counter()


def _on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested in dicts, lists, tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def as_tuples(state: Any) -> Any:
    """``random.Random.getstate()`` as saved (lists, once stored) back to the nested tuples it was."""
    return tuple(as_tuples(v) for v in state) if isinstance(state, list | tuple) else state
